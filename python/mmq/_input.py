"""Turning user input (DataFrame, LazyFrame, Series, list of str) into Polars Series,
with errors that name the column and what was expected."""
from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

import numpy as np
import polars as pl

from mmq.errors import InvalidInputError, InvalidParameterError, polars_errors


def collect(lf: pl.LazyFrame) -> pl.DataFrame:
    """``lf.collect()``, an error of an mmq expression in it raised as its mmq class."""
    with polars_errors():
        return lf.collect()


def as_frame(data: Any, what: str = "data") -> pl.DataFrame:
    if isinstance(data, pl.LazyFrame):
        return collect(data)
    if isinstance(data, pl.DataFrame):
        return data
    raise InvalidInputError(
        f"{what} must be a polars DataFrame or LazyFrame, got {type(data).__name__}"
    )


def column(df: pl.DataFrame, name: str, role: str) -> pl.Series:
    if name not in df.columns:
        raise InvalidInputError(
            f"{role} column '{name}' not found; the frame has columns {df.columns}"
        )
    return df.get_column(name)


def text_series(data: Any, text: str = "text") -> pl.Series:
    """A String Series from a DataFrame/LazyFrame column, a Series, or a list of str."""
    if isinstance(data, (pl.DataFrame, pl.LazyFrame)):
        df = as_frame(data)
        s = column(df, text, "text")
    elif isinstance(data, pl.Series):
        s = data
    elif isinstance(data, str):
        s = pl.Series(text, [data], dtype=pl.String)
    elif isinstance(data, Sequence):
        for i, v in enumerate(data):
            if v is not None and not isinstance(v, str):
                raise InvalidInputError(
                    f"texts must be str (or None), item {i} is {type(v).__name__}: {v!r}"
                )
        s = pl.Series(text, list(data), dtype=pl.String)
    else:
        raise InvalidInputError(
            "expected a polars DataFrame, LazyFrame, Series, a str or a list of str, "
            f"got {type(data).__name__}"
        )
    if s.dtype != pl.String:
        raise InvalidInputError(
            f"text column '{s.name}' must be of type String, found {s.dtype}"
        )
    return s


def label_series(df: pl.DataFrame, label: str) -> pl.Series:
    s = column(df, label, "label")
    if s.dtype == pl.String or s.dtype == pl.List(pl.String):
        return s
    if s.dtype == pl.Categorical or isinstance(s.dtype, pl.Enum):
        return s.cast(pl.String)
    raise InvalidInputError(
        f"label column '{label}' must be String or List[String], found {s.dtype}"
    )


def valid_frame(valid: Any, train_labels: pl.Series, label: str) -> "tuple[pl.DataFrame, pl.Series]":
    """A validation frame (collected) and its label column. Labels training never saw are
    counted in a warning: they score as errors."""
    vdf = as_frame(valid, what="valid")
    if vdf.height == 0:
        raise InvalidInputError("the validation frame is empty (0 rows)")
    vy = label_series(vdf, label)

    def flat(s: pl.Series) -> pl.Series:
        return s.explode() if s.dtype == pl.List(pl.String) else s

    unseen = flat(vy).filter(~flat(vy).is_in(flat(train_labels).unique().to_list()))
    if len(unseen):
        warnings.warn(f"the validation frame has {len(unseen)} label(s) never seen in training "
                      f"({unseen.unique().head(5).to_list()}...); they score as errors", stacklevel=3)
    return vdf, vy


def check_k(k: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InvalidParameterError(f"k must be an integer >= 1, got {k!r}")
    return k


def check_threshold(threshold) -> float:
    t = float(threshold)
    if t != t:
        raise InvalidParameterError("threshold must be a number, got nan")
    return t


# -- scikit-learn-style input: X a 1-D array-like of texts, y an array-like of labels ----

def is_frame(data: Any) -> bool:
    """A Polars DataFrame/LazyFrame, or a pandas DataFrame (recognised without importing pandas)."""
    return isinstance(data, (pl.DataFrame, pl.LazyFrame)) or _is_pandas(data, "DataFrame")


def _is_nan(v: Any) -> bool:
    """A float NaN: pandas' missing value in object columns."""
    return isinstance(v, float) and v != v


def _is_pandas(obj: Any, name: str) -> bool:
    return type(obj).__name__ == name and type(obj).__module__.split(".")[0] == "pandas"


def frame_of(data: Any) -> pl.DataFrame:
    """A Polars DataFrame from a Polars or pandas frame."""
    if _is_pandas(data, "DataFrame"):
        try:
            return pl.from_pandas(data)
        except ImportError:  # Polars needs pyarrow for pandas' string columns: go through Python lists
            return pl.DataFrame([pl.Series(str(name), [None if _is_nan(v) else v
                                                       for v in data[name].tolist()], strict=False)
                                 for name in data.columns])
    return as_frame(data, what="X")


def frame_text_column(df: pl.DataFrame, preferred: str = "text") -> str:
    """The text column of a frame X given without a column name: ``preferred`` (by
    default ``text``) when the frame has it, else its only String column."""
    if preferred in df.columns:
        return preferred
    strings = [c for c, t in df.schema.items() if t == pl.String]
    if len(strings) == 1:
        return strings[0]
    raise InvalidInputError(
        f"X is a frame without a '{preferred}' column and with {len(strings)} String columns "
        f"({strings}); pass the text column itself (X['body']), or name it: fit(X, y, text='body')")


def texts_of(data: Any, what: str = "X") -> pl.Series:
    """A String Series from a 1-D array-like of texts: a list or tuple of str, a 1-D
    NumPy array of str or object (or one column, shape (n, 1)), a Polars or pandas
    Series. None (and NaN in a pandas/object array) is a missing text, read as empty."""
    if isinstance(data, str):
        raise InvalidInputError(f"{what} must be a sequence of texts, got one str; wrap it in a list: [{data[:40]!r}]")
    if isinstance(data, pl.Series):
        s = data.cast(pl.String) if data.dtype == pl.Categorical or isinstance(data.dtype, pl.Enum) else data
        if s.dtype != pl.String:
            raise InvalidInputError(f"{what} must hold texts (String), found a Series of {s.dtype}")
        return s
    if _is_pandas(data, "Series"):
        data = data.to_numpy(dtype=object)
    if isinstance(data, np.ndarray):
        if data.ndim == 2 and data.shape[1] == 1:
            data = data[:, 0]
        if data.ndim != 1:
            raise InvalidInputError(
                f"{what} must be 1-D (one text per row) or a single column, got an array of shape {data.shape}")
        if data.dtype.kind not in "UO":
            raise InvalidInputError(
                f"{what} must hold texts (str), found an array of {data.dtype}: mmq.Classifier classifies text, "
                "not numeric features")
        data = data.tolist()
    if not isinstance(data, (list, tuple)):
        raise InvalidInputError(
            f"{what} must be texts: a list of str, a 1-D NumPy array, a Polars or pandas Series, or a frame "
            f"with a text column; got {type(data).__name__}")
    out = []
    for i, v in enumerate(data):
        if _is_nan(v):
            v = None
        if v is not None and not isinstance(v, str):
            raise InvalidInputError(f"{what} must hold texts (str or None), item {i} is {type(v).__name__}: {v!r}")
        out.append(v)
    return pl.Series("text", out, dtype=pl.String)


def labels_of(y: Any, n: int) -> "tuple[np.ndarray, list[str], list[str]]":
    """``(classes, names, rows)`` of scikit-learn-style labels: ``classes`` is
    ``np.unique(y)`` (y's own values, sorted), ``names`` their str forms (the label names
    mmq trains on), ``rows`` each row's name."""
    if y is None:
        raise InvalidInputError("y is required: fit(X, y) takes the labels as y (one per text)")
    if isinstance(y, str):
        raise InvalidInputError(f"y must be an array-like of labels, got one str {y!r}")
    if isinstance(y, pl.Series) or _is_pandas(y, "Series"):
        y = y.to_numpy()
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InvalidInputError(
            f"y must be 1-D (one label per row), got shape {arr.shape}; multilabel rows go through "
            "fit(df, label='labels') with a List[String] column")
    if len(arr) != n:
        raise InvalidInputError(f"X has {n} rows but y has {len(arr)} labels")
    if arr.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(arr))
    elif arr.dtype.kind == "O":
        bad = np.flatnonzero([v is None or _is_nan(v) for v in arr.tolist()])
    else:
        bad = np.zeros(0, dtype=np.int64)
    if len(bad):
        raise InvalidInputError(f"y has a missing label (None or NaN) at row {int(bad[0])}")
    try:
        classes, inverse = np.unique(arr, return_inverse=True)
    except TypeError as e:
        raise InvalidInputError(f"y mixes label types that cannot be sorted together ({e})") from None
    if len(classes) < 2:
        raise InvalidInputError(f"y has {len(classes)} class ({classes.tolist()}); a classifier needs at least 2")
    names = [str(c) for c in classes.tolist()]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"y's classes {classes.tolist()} do not have distinct names as str")
    return classes, names, [names[i] for i in np.asarray(inverse).ravel()]


def as_matrix(x: Any, what: str = "x") -> np.ndarray:
    """A C-contiguous float32 n × d matrix from a NumPy array or a Polars Array/List
    Series (zero-copy when already float32 and contiguous). Nulls are refused, naming the
    first null row."""
    if isinstance(x, pl.Series):
        dt = x.dtype
        name = x.name or what
        if isinstance(dt, pl.List):
            if x.null_count():
                raise InvalidInputError(f"column '{name}': row {int(x.is_null().arg_true()[0])} is null; expected a vector")
            lens = x.list.len()
            if lens.n_unique() > 1:
                first = int(lens[0])
                bad = int((lens != first).arg_true()[0])
                raise InvalidInputError(
                    f"column '{name}': rows must have equal length; row 0 has {first}, row {bad} has {lens[bad]}")
            x = x.list.to_array(int(lens[0]) if len(x) else 0)
            dt = x.dtype
        if isinstance(dt, pl.Array):
            if x.null_count():
                raise InvalidInputError(f"column '{name}': row {int(x.is_null().arg_true()[0])} is null; expected a vector")
            if not dt.inner.is_numeric():
                raise InvalidInputError(f"column '{name}' must hold numbers, found {dt}")
            arr = x.to_numpy()
        else:
            raise InvalidInputError(f"column '{name}' must be Array[Float32, d] or List[Float32], found {dt}")
    elif isinstance(x, np.ndarray):
        arr = x
    elif isinstance(x, (list, tuple)):
        arr = np.asarray(x)
    else:
        raise InvalidInputError(f"{what} must be a 2-D NumPy array or a Polars Array/List Series, got {type(x).__name__}")
    if arr.ndim != 2:
        raise InvalidInputError(f"{what} must be 2-D (n × d), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidInputError(f"{what} must hold numbers, found dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def as_codes(codes: Any, m: int) -> np.ndarray:
    if isinstance(codes, pl.Series):
        codes = codes.to_numpy()
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != m:
        raise InvalidInputError(f"codes must be n × {m}, got shape {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise InvalidInputError(f"codes must be integers, found dtype {codes.dtype}")
    if codes.size and (codes.min() < 0 or codes.max() > 65535):
        raise InvalidInputError(f"codes out of range: found values in [{codes.min()}, {codes.max()}]")
    return np.ascontiguousarray(codes, dtype=np.uint16)


#: Per-vector transforms a quantizer applies before fitting and encoding: None (the
#: vectors as given), "l2" (x / ||x||, a zero vector stays zero: compares directions, as
#: cosine similarity does; suits CLIP-style embeddings) and "sqrt" (signed square root
#: sign(x)·sqrt(|x|), the power normalization of Perronnin et al. 2010, which damps the
#: few large activations of CNN features). The codebooks live in the transformed space.
TRANSFORMS = (None, "l2", "sqrt")


def apply_transform(x: np.ndarray, transform: Optional[str]) -> np.ndarray:
    """The rows of ``x`` as a quantizer with this ``transform`` sees them."""
    if transform is None:
        return x
    if transform == "sqrt":
        return (np.sign(x) * np.sqrt(np.abs(x))).astype(np.float32)
    norm = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    return (x / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def read_vectors(src: Any, dim: int) -> "tuple[list[str], np.ndarray]":
    """Words and their vectors (float32, one row per word) from a word-vector text file
    (fastText's and word2vec's ``.vec``: a first line ``n d``, then ``word v1 ... vd`` per
    line) or a dict word -> vector. Every vector must have ``dim`` finite values; errors
    name the file and line (or the word)."""
    import os
    from collections.abc import Mapping

    if isinstance(src, Mapping):
        words, rows = [], []
        for w, v in src.items():
            if not isinstance(w, str):
                raise InvalidInputError(f"pretrained_vectors: key {w!r} is a {type(w).__name__}, expected a word (str)")
            a = np.asarray(v, dtype=np.float32)
            if a.shape != (dim,):
                raise InvalidInputError(f"pretrained_vectors: the vector of {w!r} has shape {a.shape}; the model's "
                                        f"dim is {dim}")
            words.append(w)
            rows.append(a)
        if not words:
            raise InvalidInputError("pretrained_vectors: the dict is empty")
        mat = np.stack(rows)
    else:
        path = os.fspath(src)
        words, rows = [], []
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.readline().split()
            if len(head) != 2 or not all(h.isdigit() for h in head):
                raise InvalidInputError(f"{path}: line 1 must be '<words> <dimension>' (a .vec file), got {head[:3]}")
            n, d = int(head[0]), int(head[1])
            if d != dim:
                raise InvalidInputError(f"{path}: vectors of dimension {d}; the model's dim is {dim} (set dim={d})")
            for lineno, line in enumerate(f, 2):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != d + 1:
                    raise InvalidInputError(f"{path}, line {lineno}: expected a word and {d} numbers, got "
                                            f"{len(parts)} fields")
                try:
                    rows.append(np.array(parts[1:], dtype=np.float32))
                except ValueError:
                    raise InvalidInputError(f"{path}, line {lineno}: the vector of {parts[0]!r} is not numbers") \
                        from None
                words.append(parts[0])
        if len(words) != n:
            raise InvalidInputError(f"{path}: line 1 says {n} words, the file has {len(words)}")
        if not words:
            raise InvalidInputError(f"{path}: no vectors")
        mat = np.stack(rows)
    bad = ~np.isfinite(mat).all(axis=1)
    if bad.any():
        raise InvalidInputError(f"pretrained_vectors: the vector of {words[int(np.argmax(bad))]!r} is not finite")
    return words, mat
