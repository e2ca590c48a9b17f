"""Fitting from a ``pl.LazyFrame`` in batches, so a dense float column larger than RAM
never has to be in memory at once.

- :func:`iter_batches` yields a frame's rows in order, ``BATCH_ROWS`` at a time.
- :func:`sample_matrix` draws a seeded uniform sample of at most ``cap`` present rows of
  a vector column in one pass (bottom-k: every row gets a seeded random key, the ``cap``
  smallest keys win), returned in row order. When the column has at most ``cap`` present
  rows the sample is all of them, so a quantizer fitted on it equals the eager fit.
- :func:`fit_classifier` is ``Classifier.fit`` on a LazyFrame. The continuous fusion
  modes collect the columns they need (they train on the float vectors themselves, so
  those must fit in memory). Text-only and discrete fusion fit each unfitted quantizer
  on a sample, then stream the frame once: each batch's vectors are encoded to codes and
  its text and codes tokenized in Rust (``RustTokenRows``), then the batch is dropped
  (kept: token ids and labels; dropped: text and floats), and training runs on the ids.
"""
from __future__ import annotations

import json
from typing import Any, Iterator, Optional

import numpy as np
import polars as pl

from mmq import _mmq
from mmq._input import as_codes, as_matrix, collect, label_series, text_series
from mmq._options import CONTINUOUS
from mmq._progress import progress_for
from mmq.errors import InvalidInputError, InvalidParameterError, polars_errors

BATCH_ROWS = 65_536
# "batches": LazyFrame.collect_batches (Polars' streaming engine; its buffer is bounded
# from Polars 2 on). "slices": lf.slice(offset, n).collect() per batch (Polars pushes
# the slice into Parquet/IPC scans and in-memory frames; other plans re-run per batch).
# None: "batches" on Polars >= 2, else "slices" (Polars 1.x's collect_batches and
# sink_batches read ahead without bound: a 2 GB Parquet scan held 3 GB).
MODE: Optional[str] = None


def _mode() -> str:
    if MODE is not None:
        return MODE
    return "batches" if int(pl.__version__.split(".")[0]) >= 2 else "slices"


def iter_batches(lf: pl.LazyFrame, batch_rows: Optional[int] = None) -> Iterator[pl.DataFrame]:
    """The rows of ``lf`` in order, in frames of at most ``batch_rows`` rows (an error of
    an mmq expression in ``lf`` is raised as its mmq class)."""

    n = batch_rows or BATCH_ROWS
    with polars_errors():
        if _mode() == "batches":
            for b in lf.collect_batches(chunk_size=n, maintain_order=True):
                if b.height:
                    yield b
            return
        off = 0
        while True:
            b = lf.slice(off, n).collect()
            if b.height:
                yield b
            if b.height < n:
                return
            off += n


# -- input checks from the schema (before reading any row) -------------------------------
def _require(schema: pl.Schema, name: str, role: str) -> pl.DataType:
    if name not in schema:
        raise InvalidInputError(f"{role} column '{name}' not found; the frame has columns {schema.names()}")
    return schema[name]


def _check_vectors(dt: pl.DataType, name: str, role: str, codes_ok: bool = False) -> bool:
    """True when the column holds integer codes, False for float vectors; else an error."""
    inner = getattr(dt, "inner", None)
    if isinstance(dt, (pl.Array, pl.List)) and inner is not None:
        if inner.is_float():
            return False
        if inner.is_integer():
            # Integer codes for a classifier; integer vectors (converted to float32) for a
            # quantizer, as in the eager fits.
            return codes_ok
    what = "Array[Float32, d] or List[Float32] (or integer codes)" if codes_ok else "Array[Float32, d] or List[Float32]"
    raise InvalidInputError(f"{role} '{name}' must be {what}, found {dt}")


def _check_text_label(schema: pl.Schema, text: str, label: str) -> None:
    dt = _require(schema, text, "text")
    if dt != pl.String:
        raise InvalidInputError(f"text column '{text}' must be of type String, found {dt}")
    dt = _require(schema, label, "label")
    if not (dt == pl.String or dt == pl.List(pl.String) or dt == pl.Categorical or isinstance(dt, pl.Enum)):
        raise InvalidInputError(f"label column '{label}' must be String or List[String], found {dt}")


# -- sampling ------------------------------------------------------------------------------
def _present(s: pl.Series) -> np.ndarray:
    if s.null_count():
        return ~s.is_null().to_numpy()
    return np.ones(len(s), dtype=bool)


def _vectors(s: pl.Series, present: np.ndarray, name: str, first_row: int,
             role: str = "dense column") -> np.ndarray:
    """The present rows of a batch as a float32 matrix; NaN/inf refused (global row)."""

    kept = s.filter(pl.Series(present)) if not present.all() else s
    if len(kept) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    x = as_matrix(kept, what=name)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        row = first_row + int(np.flatnonzero(present)[np.flatnonzero(~finite)[0]])
        raise InvalidInputError(f"{role} '{name}': row {row} has NaN or inf")
    return x


def sample_matrix(lf: pl.LazyFrame, name: str, cap: int, seed: int, skip_nulls: bool = True,
                  return_rows: bool = False) -> Any:
    """A seeded uniform sample of at most ``cap`` present rows of the vector column
    ``name`` (float32, in row order), read in one pass with ``cap × d`` floats of memory.
    With ``skip_nulls=False`` a null row is an error (as in an eager quantizer fit).
    ``return_rows=True`` also returns the sampled row numbers."""
    role = "dense column" if skip_nulls else "column"
    x, rows, _n = _sample(lf, name, cap, seed, skip_nulls, role)
    return (x, rows) if return_rows else x


def _sample(lf: pl.LazyFrame, name: str, cap: int, seed: int, skip_nulls: bool, role: str = "dense column"):
    """(sample, its row numbers, rows read)."""
    rng = np.random.default_rng(seed)
    keys = np.full(0, np.inf)
    rows = np.full(0, -1, dtype=np.int64)
    buf: Any = None
    d: Optional[int] = None
    pos = 0
    for b in iter_batches(lf.select(pl.col(name))):
        s = b.get_column(name)
        k = rng.random(len(s))  # a key for every row (nulls too): keys follow row positions
        present = _present(s)
        if not skip_nulls and not present.all():
            row = pos + int(np.flatnonzero(~present)[0])
            raise InvalidInputError(f"column '{name}': row {row} is null; expected a vector")
        x = _vectors(s, present, name, pos, role)
        idx = np.flatnonzero(present)
        if len(idx):
            if d is None:
                d = x.shape[1]
                buf = np.empty((cap, d), dtype=np.float32)
                keys = np.full(cap, np.inf)
                rows = np.full(cap, -1, dtype=np.int64)
            elif x.shape[1] != d:
                raise InvalidInputError(
                    f"column '{name}': rows must have equal length; row {pos + int(idx[0])} has {x.shape[1]}, "
                    f"earlier rows have {d}")
            ck = k[idx]
            cand = np.flatnonzero(ck < keys.max())
            if len(cand) > cap:
                cand = cand[np.argpartition(ck[cand], cap - 1)[:cap]]
            if len(cand):
                allk = np.concatenate([keys, ck[cand]])
                keep = np.zeros(len(allk), dtype=bool)
                keep[np.argpartition(allk, cap - 1)[:cap]] = True
                slots = np.flatnonzero(~keep[:cap])  # evicted (or empty) slots
                enter = cand[np.flatnonzero(keep[cap:])]
                buf[slots] = x[enter]
                keys[slots] = ck[enter]
                rows[slots] = pos + idx[enter]
        pos += len(s)
    if buf is None:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64), pos
    valid = np.flatnonzero(rows >= 0)
    order = valid[np.argsort(rows[valid], kind="stable")]
    return buf[order], rows[order], pos


def quantizer_sample(q: Any, lf: pl.LazyFrame, column: Optional[str]) -> np.ndarray:
    """The training rows of ``q.fit(lf)``: a sample of ``q.max_points_per_centroid * q.k``
    rows of the vector column (all rows when there are fewer)."""
    schema = lf.collect_schema()
    if column is None:
        if len(schema) != 1:
            raise InvalidParameterError(
                f"the LazyFrame has columns {schema.names()}: pass column= to say which holds the vectors")
        column = schema.names()[0]
    _check_vectors(_require(schema, column, "vector"), column, "column")
    return sample_matrix(lf, column, q.max_points_per_centroid * q.k, q.seed, skip_nulls=False)


# -- the classifier --------------------------------------------------------------------------
def fit_classifier(clf: Any, lf: pl.LazyFrame, text: str, label: str) -> Any:
    """``clf.fit(lf)`` for a LazyFrame (see the module docstring)."""

    schema = lf.collect_schema()
    _check_text_label(schema, text, label)
    for name in clf._dense:
        _require(schema, name, "dense")
    cols = list(dict.fromkeys([text, label, *clf._dense]))
    if clf._o.fusion in CONTINUOUS:
        return clf.fit(collect(lf.select(cols)), text=text, label=label)


    is_codes = {}
    for name, q in clf._dense.items():
        is_codes[name] = _check_vectors(schema[name], name, "dense column", codes_ok=True)
        if is_codes[name] and not q.is_fitted:
            raise InvalidInputError(
                f"dense column '{name}' holds codes ({schema[name]}): its quantizer must be fitted already")
    for name, q in clf._dense.items():
        if not q.is_fitted:
            x, _rows, n = _sample(lf, name, q.max_points_per_centroid * q.k, q.seed, True)
            if n == 0:
                raise InvalidInputError("cannot fit on an empty frame (0 rows)")
            if x.shape[0] == 0:
                raise InvalidInputError(f"dense column '{name}' is null in every row: nothing to fit its quantizer on")
            q.fit(x)
            del x

    # Each batch is tokenized as it arrives (its text tokens, then its code tokens) and
    # dropped: the text column is never held whole. min_count needs every row's words
    # counted first, so it keeps the batches' text and tokenizes once at the end.
    quantizers = [(name, q._q) for name, q in clf._dense.items()]
    rows = _mmq.RustTokenRows(json.dumps(clf._config()), quantizers) if clf._o.min_count == 1 else None
    texts: list[pl.Series] = []
    labels: list[pl.Series] = []
    codes: dict[str, list[np.ndarray]] = {name: [] for name in clf._dense}
    present: dict[str, list[np.ndarray]] = {name: [] for name in clf._dense}
    pos = 0
    for b in iter_batches(lf.select(cols)):
        labels.append(label_series(b, label))
        t = text_series(b, text)
        args = []
        for name, q in clf._dense.items():
            s = b.get_column(name)
            p = _present(s)
            if is_codes[name]:
                kept = s.filter(pl.Series(p)) if not p.all() else s
                c = as_codes(kept.to_numpy() if len(kept) else np.zeros((0, q.m)), q.m)
            else:
                x = _vectors(s, p, name, pos)
                if x.shape[0] and x.shape[1] != q.d:
                    raise InvalidInputError(
                        f"dense column '{name}': expected vectors of dimension {q.d}, got {x.shape[1]}")
                c = np.asarray(q._fitted().encode(x), dtype=np.uint16) if x.shape[0] \
                    else np.zeros((0, q.m), dtype=np.uint16)
                del x
            if rows is None:
                codes[name].append(c)
                present[name].append(p)
            else:
                args.append((name, None, np.ascontiguousarray(c, dtype=np.uint16), p))
        if rows is None:
            texts.append(t)
        else:
            rows.add(t, text, args)
        pos += b.height
        del b, t, args
    if not labels:
        raise InvalidInputError("cannot fit on an empty frame (0 rows)")
    y = pl.concat(labels, rechunk=True)
    del labels
    if rows is None:
        t = pl.concat(texts, rechunk=True)
        del texts
        args = []
        for name in clf._dense:
            c = np.concatenate(codes[name]) if len(codes[name]) > 1 else codes[name][0]
            codes[name].clear()
            args.append((name, None, np.ascontiguousarray(c, dtype=np.uint16), np.concatenate(present[name])))
    else:
        t, args = pl.Series(text, [], dtype=pl.String), []
    del codes, present

    clf._plugin_path = None  # a refit object is re-saved for the Polars plugin
    with progress_for(clf.progress) as cb:
        clf._model = _mmq.RustClassifier.fit(json.dumps(clf._config()), t, y, text, label, cb, quantizers, args,
                                             class_weight=clf._class_weights(y), pretrained=clf._pretrained_rows(),
                                             rows=rows)
    return clf
