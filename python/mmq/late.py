"""Late fusion (``Classifier(fusion="late")``): one model per modality, trained side by
side, combined log-linearly with weights fitted on a validation split (stacking).

The text head is an ordinary mmq text model (any head, any tokenizer option); each dense
column gets a linear softmax head over its standardised vector (mmq's linear head: L2-
normalised features, AdaGrad), early-stopped and calibrated on the validation split. The
combined log-probability of label y is

    log p(y) = log p_text(y) + sum_j w_j · log p_j(y) − log Z,      then divided by T,

where a row without dense column j leaves its term out (the dense head reads the
standardised vector projected on its first MAX_COMPONENTS principal components), the weights w_j ∈ [0, 2] are
picked on the validation split by the lowest mean loss (w_j = 0, text alone, is always
a candidate, so on valid the fusion is never worse than the text head by that measure),
and T is a final temperature fitted there too.
"""
from __future__ import annotations

import json
import time
from typing import Any, Optional, Sequence

import numpy as np
import polars as pl

from mmq import _mmq
from mmq._input import label_series, text_series
from mmq.errors import InvalidInputError, ModelFileError

KIND = "late_classifier"
# Probabilities are floored here before the logarithm: a label the dense head never saw
# (or gives ~0) must not veto the text head's choice outright.
FLOOR = 1e-6
GRID = np.round(np.arange(0.0, 2.0001, 0.05), 2)


# Dense vectors are standardised, then projected on their first principal components
# (at most this many): a linear head over 1280-d vectors × 100+ labels costs 5× more for
# little gain, and the projection is fitted once, in NumPy, on the training rows.
MAX_COMPONENTS = 256


def _features(z: np.ndarray):
    """CSR features (offsets, tokens, values) of projected vectors ``z`` (n × r): tokens
    0..r-1 in every row, values the row of ``z``."""
    n, r = z.shape
    offsets = np.arange(0, (n + 1) * r, r, dtype=np.uint64)
    tokens = np.tile(np.arange(r, dtype=np.uint32), n)
    return offsets, tokens, np.ascontiguousarray(z.reshape(-1), dtype=np.float32)


def _unpack(data: bytes, source: str, kind: str, noun: str) -> tuple:
    """Header and parts of a packed composite model of ``kind``; a ModelFileError for
    another kind. A format version 1 header (before strict headers) is migrated: the
    version 1 reader took a missing ``stacking`` as None."""

    header_json, parts = _mmq.unpack(data, source)
    h = json.loads(header_json)
    if h.get("kind") != kind:
        raise ModelFileError(f"{source}: expected an mmq {noun} classifier, found kind {h.get('kind')!r}")
    if kind == KIND and "stacking" not in h and _stored_version(data) == 1:
        h["stacking"] = None
    return h, dict(parts)


def _stored_version(data: bytes) -> Any:
    """The format version as stored (``unpack`` gives the header as read: migrated, so
    version 2); only called on bytes ``unpack`` read."""
    n = int.from_bytes(data[:8], "little")
    return json.loads(json.loads(data[8:8 + n])["__metadata__"]["mmq"]).get("format_version")


_FRAMING = ("format", "format_version", "mmq_crc32")


def _check_keys(stored: Any, written: Any, source: str, path: str = "") -> None:
    """Strict headers, as mmq-core's ``io::check_keys``: ``stored`` must hold exactly the
    keys of ``written`` (the header this mmq writes for what was loaded) in every object at
    every depth (the framing keys aside), else a ModelFileError naming the key."""

    at = (lambda k: f"{path}.{k}" if path else k)
    if isinstance(stored, dict) and isinstance(written, dict):
        for k in stored:
            if k not in written and not (not path and k in _FRAMING):
                raise ModelFileError(f"{source}: bad header: unknown key {at(k)} (not part of format version 2)")
        for k in written:
            if k not in stored:
                raise ModelFileError(f"{source}: bad header: missing key {at(k)} "
                                     "(every file of format version 2 has it)")
        for k, w in written.items():
            _check_keys(stored[k], w, source, at(k))
    elif isinstance(stored, list) and isinstance(written, list):
        for i, (sv, wv) in enumerate(zip(stored, written)):
            _check_keys(sv, wv, source, f"{path}[{i}]")


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _nll(logp: np.ndarray, gold: np.ndarray) -> float:
    ok = gold >= 0
    return float(-logp[np.flatnonzero(ok), gold[ok]].mean()) if ok.any() else 0.0


def _fit_temperature(logits: np.ndarray, gold: np.ndarray) -> float:
    """Golden-section search of ln T in [ln 0.05, ln 20] for the lowest mean loss."""
    f = lambda lt: _nll(_log_softmax(logits / np.exp(lt)), gold)  # noqa: E731
    a, b = np.log(0.05), np.log(20.0)
    g = (5 ** 0.5 - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(40):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    t = float(np.exp((a + b) / 2))
    return t if f(np.log(t)) < f(0.0) else 1.0


def _projection(x: np.ndarray) -> tuple:
    """Mean, std and projection (d × r, the first principal components, r <= MAX_COMPONENTS)
    of the training vectors."""
    if x.shape[0] == 0:
        raise InvalidInputError("a dense column is null in every training row")
    mean = x.mean(axis=0).astype(np.float32)
    std = np.maximum(x.std(axis=0), 1e-6).astype(np.float32)
    d = x.shape[1]
    if d > MAX_COMPONENTS:
        z = (x - mean) / std
        sample = z[np.random.default_rng(0).permutation(len(z))[:20_000]]
        _, _, vt = np.linalg.svd(sample, full_matrices=False)
        proj = np.ascontiguousarray(vt[:MAX_COMPONENTS].T, dtype=np.float32)
    else:
        proj = np.eye(d, dtype=np.float32)
    return mean, std, proj


class DenseHead:
    """A linear softmax head over one standardised dense column (``model`` is None for
    the concat model's columns, which only carry the projection)."""

    def __init__(self, name: str, mean: np.ndarray, std: np.ndarray, proj: np.ndarray, model: Any):
        self.name, self.mean, self.std, self.proj, self.model = name, mean, std, proj, model

    def project(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] and x.shape[1] != self.mean.shape[0]:
            raise InvalidInputError(
                f"dense column '{self.name}': expected vectors of dimension {self.mean.shape[0]}, got {x.shape[1]}")
        # In Rust, row by row in a fixed order: a BLAS product's rounding depends on the
        # batch's shape, and predictions must not depend on how rows are batched.
        f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
        return _mmq.project(f32(x), f32(self.mean), f32(self.std), f32(self.proj))

    @classmethod
    def fit(cls, name: str, x: np.ndarray, y: pl.Series, vx: np.ndarray, vy: pl.Series, cfg: dict,
            label: str, patience: Optional[int], max_seconds: Optional[float] = None) -> "DenseHead":
        if x.shape[0] == 0 or vx.shape[0] == 0:
            raise InvalidInputError(f"dense column '{name}' is null in every training or validation row")
        head = cls(name, *_projection(x), None)
        cfg = dict(cfg, head="linear", loss="softmax", idf=False, l2=0.0)
        head.model = _mmq.RustClassifier.fit_features(
            json.dumps(cfg), *_features(head.project(x)), y, label, (*_features(head.project(vx)), vy),
            patience, True, max_seconds)
        return head

    def proba(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] == 0:
            return np.zeros((0, len(self.model.labels)), dtype=np.float32)
        return self.model.predict_proba_features(*_features(self.project(x)))


class ProbaModel:
    """A model made in Python of mmq's Rust models: from ``proba(texts, dense)`` it
    answers the calls :class:`mmq.Classifier` makes of its Rust models (``predict``,
    ``predict_proba``, ``test``, ``save``)."""

    labels: list
    heads: list

    def proba(self, texts: pl.Series, dense: list) -> np.ndarray:
        raise NotImplementedError

    # -- what Classifier calls -------------------------------------------------------
    def predict_proba(self, texts: pl.Series, dense: list) -> np.ndarray:
        return self.proba(texts, dense)

    def predict(self, texts: pl.Series, k: int, threshold: float, dense: list):
        p = self.proba(texts, dense)
        n, nl = p.shape
        kk = min(k, nl)
        order = np.argsort(-p, axis=1, kind="stable")[:, :kk]
        top = np.take_along_axis(p, order, axis=1)
        keep = top >= threshold
        idx = np.full((n, k), -1, dtype=np.int64)
        probs = np.full((n, k), np.nan, dtype=np.float32)
        idx[:, :kk] = np.where(keep, order, -1)
        probs[:, :kk] = np.where(keep, top, np.nan)
        return idx.reshape(-1), probs.reshape(-1)

    def test(self, texts: pl.Series, labels: pl.Series, label_name: str, k: int, threshold: float,
             dense: list) -> dict:
        idx, _ = self.predict(texts, k, threshold, dense)
        idx = idx.reshape(-1, k)
        pos = {lab: i for i, lab in enumerate(self.labels)}
        gold = [[v] if isinstance(v, str) else list(v) for v in labels.to_list()]
        nl = len(self.labels)
        tp, pred, gl = np.zeros(nl, np.int64), np.zeros(nl, np.int64), np.zeros(nl, np.int64)
        correct = predicted = ngold = 0
        for row, g in zip(idx, gold):
            gi = {pos.get(x, -1) for x in g}
            ngold += len(g)
            for x in gi:
                if x >= 0:
                    gl[x] += 1
            for x in row:
                if x < 0:
                    continue
                predicted += 1
                pred[x] += 1
                if x in gi:
                    correct += 1
                    tp[x] += 1
        return {"rows": len(gold), "predicted": predicted, "gold": ngold, "correct": correct,
                "per_label": list(zip(tp.tolist(), pred.tolist(), gl.tolist()))}

    @property
    def dense_dim(self) -> int:
        return int(self.heads[0].mean.shape[0]) if self.heads else 0

    def save(self, path) -> None:
        _mmq.write_file(path, self.to_bytes())


class LateModel(ProbaModel):
    """The fitted late-fusion model; answers the calls :class:`mmq.Classifier` makes of
    its Rust models (``predict``, ``predict_proba``, ``test``, ``save``, ...)."""

    def __init__(self, text: Any, heads: Sequence[DenseHead], weights: Sequence[float], temperature: float,
                 history: Optional[list] = None):
        self.text, self.heads = text, list(heads)
        self.weights, self.temperature = [float(w) for w in weights], float(temperature)
        self.stacking = history or []
        self.labels = list(text.labels)
        # column of each dense head's labels in the text head's order (-1: unknown there)
        self._maps = []
        for h in self.heads:
            pos = {lab: i for i, lab in enumerate(h.model.labels)}
            self._maps.append(np.array([pos.get(lab, -1) for lab in self.labels], dtype=np.int64))

    @property
    def quantized_json(self) -> Optional[str]:
        """The quantize options of the text model, None when it is not quantized."""
        return self.text.quantized_json

    # -- the combination -----------------------------------------------------------
    def _head_logp(self, texts: pl.Series, dense: list) -> list:
        """Log-probabilities (n × labels, text order) of the text head and of each dense
        head (NaN rows where the column is missing)."""
        pt = self.text.predict_proba(texts, [])
        out = [np.log(np.maximum(pt, FLOOR))]
        by_name = {d[0]: d for d in dense}
        n = pt.shape[0]
        for h, cols in zip(self.heads, self._maps):
            if h.name not in by_name:
                raise InvalidInputError(f"this late-fusion model reads dense column '{h.name}'")
            _, vecs, _codes, present = by_name[h.name]
            lp = np.full((n, len(self.labels)), np.nan, dtype=np.float64)
            p = h.proba(np.asarray(vecs, dtype=np.float32))
            q = np.where(cols >= 0, p[:, np.maximum(cols, 0)], 0.0)
            lp[np.asarray(present, dtype=bool)] = np.log(np.maximum(q, FLOOR))
            out.append(lp)
        return out

    @staticmethod
    def _combine(parts: list, weights: Sequence[float], t: float) -> np.ndarray:
        z = parts[0].copy()
        for w, lp in zip(weights, parts[1:]):
            if w:
                z += w * np.nan_to_num(lp, nan=0.0)
        return _log_softmax(z / t)

    def fit_weights(self, texts: pl.Series, dense: list, gold: np.ndarray) -> None:
        """Pick each dense head's weight on the validation rows (coordinate search over
        GRID, lowest mean loss; two rounds), then the final temperature."""
        parts = self._head_logp(texts, dense)
        w = [0.0] * len(self.heads)
        hist = []
        for _round in range(2 if len(w) > 1 else 1):
            for j in range(len(w)):
                best = None
                for g in GRID:
                    trial = w[:j] + [float(g)] + w[j + 1:]
                    lp = self._combine(parts, trial, 1.0)
                    loss = _nll(lp, gold)
                    acc = float((lp.argmax(axis=1) == gold).mean())
                    hist.append({"head": self.heads[j].name, "weight": float(g), "valid_loss": loss,
                                 "valid_accuracy": acc})
                    if best is None or loss < best[0] - 1e-12:
                        best = (loss, float(g))
                w[j] = best[1]
        self.weights = w
        z = parts[0].copy()
        for wj, lp in zip(w, parts[1:]):
            z += wj * np.nan_to_num(lp, nan=0.0)
        self.temperature = _fit_temperature(z, gold)
        self.stacking = hist

    def proba(self, texts: pl.Series, dense: list) -> np.ndarray:
        return np.exp(self._combine(self._head_logp(texts, dense), self.weights, self.temperature)).astype(np.float32)

    @property
    def config_json(self) -> str:
        cfg = json.loads(self.text.config_json)
        cfg.update(kind="late", dense=[h.name for h in self.heads], weights=self.weights,
                   late_temperature=self.temperature)
        return json.dumps(cfg)

    # -- persistence -----------------------------------------------------------------
    def _header(self, meta: list) -> dict:
        return {"kind": KIND, "labels": self.labels, "weights": self.weights, "temperature": self.temperature,
                "dense": meta, "stacking": self.stacking}

    def to_bytes(self) -> bytes:
        meta, parts = _heads_to_parts(self.heads)
        return _mmq.pack(json.dumps(self._header(meta)), [("text", self.text.to_bytes())] + parts)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> "LateModel":
        h, parts = _unpack(data, source, KIND, "late-fusion")
        try:
            text = _mmq.RustClassifier.from_bytes(parts["text"], f"{source} (text head)")
            heads = _heads_from_parts(h["dense"], parts, source, with_model=True)
            weights = [float(w) for w in h["weights"]]
            t = float(h["temperature"])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFileError(f"{source}: not a well-formed late-fusion model ({type(e).__name__}: {e})") from None
        if len(weights) != len(heads) or not all(np.isfinite(weights)) or not (np.isfinite(t) and t > 0):
            raise ModelFileError(f"{source}: bad fusion weights or temperature")
        m = cls(text, heads, weights, t, h.get("stacking"))
        _check_keys(h, json.loads(json.dumps(m._header(_heads_meta(m.heads)))), source)
        return m


def _gold(labels: pl.Series, names: Sequence[str]) -> np.ndarray:
    """Index of each row's (first) label in ``names``; -1 for a label never seen."""
    pos = {lab: i for i, lab in enumerate(names)}
    first = labels.list.first() if labels.dtype == pl.List(pl.String) else labels
    return np.array([pos.get(v, -1) for v in first.to_list()], dtype=np.int64)


def fit(clf: Any, df: pl.DataFrame, valid: pl.DataFrame, text: str, label: str, patience: Optional[int],
        progress: Any, text_model: Any = None, max_seconds: Optional[float] = None) -> LateModel:
    """Train the text head (unless ``text_model``, a fitted Rust text model, is given) and
    one linear head per dense column, then fit the weights. ``max_seconds``: the time
    budget of all the heads together (each stops after the epoch that passes it)."""
    end = None if max_seconds is None else time.perf_counter() + max_seconds

    def left() -> Optional[float]:
        return None if end is None else max(end - time.perf_counter(), 1e-3)

    t, y = text_series(df, text), label_series(df, label)
    vt, vy = text_series(valid, text), label_series(valid, label)
    cfg = clf._config()
    if text_model is None:
        text_model = _mmq.RustClassifier.fit(json.dumps(cfg), t, y, text, label, progress, [], [],
                                             (vt, vy, []), patience, True, left())
    dense, vdense = clf._dense_args(df, fit=True), clf._dense_args(valid)
    dcfg = dict(cfg, lr=clf._o.dense_lr, epoch=clf._o.dense_epoch)
    heads = []
    for (name, x, _c, present), (_n, vx, _vc, vpresent) in zip(dense, vdense):
        heads.append(DenseHead.fit(name, x, y.filter(pl.Series(present)), vx, vy.filter(pl.Series(vpresent)),
                                   dcfg, label, patience, left()))
    model = LateModel(text_model, heads, [0.0] * len(heads), 1.0)
    model.fit_weights(vt, vdense, _gold(vy, model.labels))
    return model


# -- concat fusion -------------------------------------------------------------------
CONCAT_KIND = "concat_classifier"


def _heads_meta(heads: Sequence[DenseHead]) -> list:
    return [{"name": h.name, "d": int(h.mean.shape[0]), "r": int(h.proj.shape[1])} for h in heads]


def _heads_to_parts(heads: Sequence[DenseHead]) -> tuple:
    meta, parts = _heads_meta(heads), []
    for i, h in enumerate(heads):
        parts += [(f"dense.{i}.mean", h.mean.tobytes()), (f"dense.{i}.std", h.std.tobytes()),
                  (f"dense.{i}.proj", h.proj.tobytes())]
        if h.model is not None:
            parts.append((f"dense.{i}.model", h.model.to_bytes()))
    return meta, parts


def _heads_from_parts(meta: list, parts: dict, source: str, with_model: bool) -> list:
    heads = []
    for i, dh in enumerate(meta):
        d, r = int(dh["d"]), int(dh["r"])
        mean = np.frombuffer(parts[f"dense.{i}.mean"], dtype=np.float32).copy()
        std = np.frombuffer(parts[f"dense.{i}.std"], dtype=np.float32).copy()
        proj = np.frombuffer(parts[f"dense.{i}.proj"], dtype=np.float32).copy()
        if mean.shape != (d,) or std.shape != (d,) or not (np.isfinite(mean).all() and (std > 0).all()) \
                or not (1 <= r <= d) or proj.size != d * r or not np.isfinite(proj).all():
            raise ModelFileError(f"{source}: dense column {i} has a bad mean, std or projection")
        model = (_mmq.RustClassifier.from_bytes(parts[f"dense.{i}.model"], f"{source} (dense head {i})")
                 if with_model else None)
        heads.append(DenseHead(str(dh["name"]), mean, std, proj.reshape(d, r), model))
    return heads


class ConcatModel(ProbaModel):
    """``fusion="concat"``: one linear head over [text features ; alpha · dense features].

    The text part is the linear head's (merged, sublinear, optionally IDF-weighted,
    L2-normalised hashed tokens); each dense column, standardised and projected on its
    first principal components as in late fusion, joins the same row as tokens
    ``bucket + offset + j`` with the projected values; the engine L2-normalises the dense
    part on its own and scales it by ``alpha`` (see ``linear_row`` in the core), which is
    scikit-learn's one LogisticRegression over [TF-IDF ; c · standardised image].
    """

    def __init__(self, model: Any, heads: Sequence[DenseHead]):
        self.model, self.heads = model, list(heads)
        self.labels = list(model.labels)
        cfg = json.loads(model.config_json)
        self._tok = json.dumps(cfg["tokenizer"])
        self._bucket = int(cfg["tokenizer"]["bucket"])

    @property
    def quantized_json(self) -> Optional[str]:
        """The quantize options of the linear model, None when it is not quantized."""
        return self.model.quantized_json

    @staticmethod
    def rows(texts: pl.Series, dense: list, heads: Sequence[DenseHead], tok_json: str, bucket: int):
        """CSR features (offsets, tokens, values) of the rows."""
        toks = _mmq.tokenize(texts.fill_null(""), tok_json)
        lens = toks.list.len().to_numpy().astype(np.int64)
        parts_len = [lens]
        by_name = {d[0]: d for d in dense}
        blocks = []
        start = bucket
        for h in heads:
            _, vecs, _c, present = by_name[h.name]
            present = np.asarray(present, dtype=bool)
            z = h.project(np.asarray(vecs, dtype=np.float32))
            r = h.proj.shape[1]
            blocks.append((present, z, start, r))
            parts_len.append(np.where(present, r, 0))
            start += r
        if start >= 2 ** 32:
            raise InvalidInputError(f"bucket {bucket} leaves no token ids for the dense columns (need bucket + "
                                    f"{start - bucket} < 2**32)")
        per_row = np.sum(parts_len, axis=0)
        offsets = np.zeros(len(per_row) + 1, dtype=np.uint64)
        np.cumsum(per_row, out=offsets[1:])
        n_tok = int(offsets[-1])
        tokens = np.empty(n_tok, dtype=np.uint32)
        values = np.empty(n_tok, dtype=np.float32)
        nonempty = toks.filter(pl.Series(lens > 0))
        try:  # Polars >= 1.x with the keyword (its default changes in 2.0)
            flat = nonempty.explode(empty_as_null=False)
        except TypeError:
            flat = nonempty.explode()
        flat = flat.to_numpy().astype(np.uint32)
        # positions: each row's text tokens first, then each dense block
        row_start = offsets[:-1].astype(np.int64)
        text_pos = np.repeat(row_start, lens) + (np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens))
        tokens[text_pos] = flat
        values[text_pos] = 1.0
        cursor = row_start + lens
        for present, z, first, r in blocks:
            rows = np.flatnonzero(present)
            pos = (cursor[rows][:, None] + np.arange(r)[None, :]).reshape(-1)
            tokens[pos] = np.tile(np.arange(first, first + r, dtype=np.uint32), len(rows))
            values[pos] = z.reshape(-1)
            cursor = cursor + np.where(present, r, 0)
        return offsets, tokens, values

    def proba(self, texts: pl.Series, dense: list) -> np.ndarray:
        for h in self.heads:
            if h.name not in {d[0] for d in dense}:
                raise InvalidInputError(f"this concat-fusion model reads dense column '{h.name}'")
        return self.model.predict_proba_features(*self.rows(texts, dense, self.heads, self._tok, self._bucket))

    @property
    def history_json(self) -> str:
        return self.model.history_json

    @property
    def config_json(self) -> str:
        cfg = json.loads(self.model.config_json)
        cfg.update(kind="concat", dense=[h.name for h in self.heads])
        return json.dumps(cfg)

    def to_bytes(self) -> bytes:
        meta, parts = _heads_to_parts(self.heads)
        return _mmq.pack(json.dumps(self._header(meta)), [("model", self.model.to_bytes())] + parts)

    def _header(self, meta: list) -> dict:
        return {"kind": CONCAT_KIND, "labels": self.labels, "dense": meta}

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> "ConcatModel":
        h, parts = _unpack(data, source, CONCAT_KIND, "concat-fusion")
        try:
            model = _mmq.RustClassifier.from_bytes(parts["model"], f"{source} (model)")
            heads = _heads_from_parts(h["dense"], parts, source, with_model=False)
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFileError(f"{source}: not a well-formed concat-fusion model ({type(e).__name__}: {e})") from None
        m = cls(model, heads)
        _check_keys(h, json.loads(json.dumps(m._header(_heads_meta(m.heads)))), source)
        return m


def fit_concat(clf: Any, df: pl.DataFrame, valid: Optional[pl.DataFrame], text: str, label: str,
               patience: Optional[int], calibrate: bool, max_seconds: Optional[float] = None) -> ConcatModel:
    """Train ``fusion="concat"``: the projections on the training rows, then one linear head."""

    cfg = clf._config()
    dense = clf._dense_args(df, fit=True)
    heads = [DenseHead(name, *_projection(np.asarray(x, dtype=np.float32)), None) for name, x, _c, _p in dense]
    tok, bucket = json.dumps(cfg["tokenizer"]), int(cfg["tokenizer"]["bucket"])
    t, y = text_series(df, text), label_series(df, label)
    feats = ConcatModel.rows(t, dense, heads, tok, bucket)
    vargs = None
    if valid is not None:
        vt, vy = text_series(valid, text), label_series(valid, label)
        vargs = (*ConcatModel.rows(vt, clf._dense_args(valid), heads, tok, bucket), vy)
    model = _mmq.RustClassifier.fit_features(json.dumps(cfg), *feats, y, label, vargs, patience, calibrate,
                                             max_seconds)
    return ConcatModel(model, heads)
