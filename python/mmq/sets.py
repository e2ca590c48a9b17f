"""Models over many modalities (``fusion='deepset'`` / ``'attention'``, several text
columns, categorical columns, ``blend='gblend'``): the glue between
:class:`mmq.Classifier` and the Rust ``RustSetClassifier``.

Every modality is a set of tokens: a text column's hashed word/n-gram tokens, a
categorical column's value (one token), a dense column's m PQ/RSPQ code tokens. A null
value is the empty set. See ``rust/mmq-core/src/model/sets.rs`` for the formulas.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import numpy as np
import polars as pl

from mmq import _mmq
from mmq._options import BLENDS, POOLS  # noqa: F401  (also read as mmq.sets.POOLS / BLENDS)
from mmq._input import as_frame, collect, column, label_series, text_series, valid_frame
from mmq.errors import InvalidInputError, InvalidParameterError

if TYPE_CHECKING:  # pragma: no cover
    from mmq.classifier import Classifier

_FUSION_NAME = {"discrete": "bag", "deepset": "deepset", "attention": "attention"}


def _is_int_or_bool(dtype: pl.DataType) -> bool:
    return dtype.is_integer() or dtype == pl.Boolean


def categorical_series(df: pl.DataFrame, name: str) -> pl.Series:
    """A categorical column as String (its values are the tokens; null stays null)."""
    s = column(df, name, "categorical")
    if s.dtype == pl.String:
        return s
    if s.dtype == pl.Categorical or isinstance(s.dtype, pl.Enum) or _is_int_or_bool(s.dtype):
        return s.cast(pl.String)
    raise InvalidInputError(
        f"categorical column '{name}' must be String, Categorical, Enum, integer or Boolean, found {s.dtype}"
    )


def modalities(clf: "Classifier", text: Union[str, Sequence[str]], label: str,
               categorical: Optional[Sequence[str]]) -> list[dict]:
    """The model's modalities in order (text columns, categorical columns, dense columns),
    after checking that no two share a name."""
    texts = [text] if isinstance(text, str) else list(text)
    cats = [] if categorical is None else ([categorical] if isinstance(categorical, str) else list(categorical))
    out: list[dict] = []
    seen: dict[str, str] = {}
    for kind, names in (("text", texts), ("categorical", cats), ("dense", list(clf._dense))):
        for n in names:
            if not isinstance(n, str) or not n:
                raise InvalidParameterError(f"{kind} column names must be non-empty str, got {n!r}")
            if n in seen:
                raise InvalidParameterError(
                    f"modality names collide: '{n}' is given as a {seen[n]} column and as a {kind} column")
            if n == label:
                raise InvalidParameterError(f"modality names collide: '{n}' is the label column")
            seen[n] = kind
            out.append({"name": n, "kind": kind})
    if not out:
        raise InvalidParameterError("no modality: give text, categorical or dense columns")
    return out


def config(clf: "Classifier", mods: list[dict]) -> dict:
    base = clf._config()
    return {
        "fusion": _FUSION_NAME[clf._o.fusion],
        "pool": clf._o.pool,
        "outer_pool": clf._o.outer_pool,
        "blend": clf._o.blend or "none",
        "dim": base["dim"],
        "epoch": base["epoch"],
        "lr": base["lr"],
        "threads": base["threads"],
        "seed": base["seed"],
        "alpha": base["alpha"],
        "holdout": clf._o.holdout,
        "blend_window": clf._o.blend_window,
        "tokenizer": base["tokenizer"],
        "modalities": mods,
        "loss": clf.loss,
        "neg": clf.neg,
    }


def inputs(clf: "Classifier", data: Any, mods: list[dict], fit: bool = False) -> list:
    """(name, String series | None, codes | None, present | None) per modality."""
    if not isinstance(data, (pl.DataFrame, pl.LazyFrame)):
        raise InvalidInputError(
            f"this model reads the columns {[m['name'] for m in mods]}: pass a DataFrame that has them, "
            f"not a {type(data).__name__}")
    df = as_frame(data)
    dense = {name: rest for name, *rest in clf._dense_args(df, fit=fit)}
    out = []
    for m in mods:
        name, kind = m["name"], m["kind"]
        if kind == "text":
            out.append((name, text_series(df, name), None, None))
        elif kind == "categorical":
            out.append((name, categorical_series(df, name), None, None))
        else:
            vecs, codes, present = dense[name]
            if codes is None:
                codes = clf._dense[name].encode(vecs) if len(vecs) else np.zeros((0, clf._dense[name].m))
            out.append((name, None, np.ascontiguousarray(codes, dtype=np.uint16), np.ascontiguousarray(present)))
    return out


def fit(clf: "Classifier", data: Any, text: Union[str, Sequence[str]], label: str,
        categorical: Optional[Sequence[str]], progress, vopts: tuple = (None, None, False, None)) -> Any:
    """Train a set model; ``vopts`` = (valid frame or None, patience, calibrate, max_seconds)."""
    mods = modalities(clf, text, label, categorical)
    names = [m["name"] for m in mods] + [label]

    def frame(d: Any) -> pl.DataFrame:
        if isinstance(d, pl.LazyFrame):
            have = d.collect_schema().names()
            missing = [n for n in names if n not in have]
            if missing:
                raise InvalidInputError(f"column(s) {missing} not found; the frame has {have}")
            return collect(d.select(names))
        return as_frame(d)

    df = frame(data)
    y = label_series(df, label)
    args = inputs(clf, df, mods, fit=True)
    quantizers = [clf._dense[m["name"]]._q if m["kind"] == "dense" else None for m in mods]
    valid, patience, calibrate, max_seconds = vopts
    vargs = None
    if valid is not None:
        vdf, vy = valid_frame(frame(valid), y, label)
        vargs = (inputs(clf, vdf, mods), vy)
    return _mmq.RustSetClassifier.fit(json.dumps(config(clf, mods)), args, y, label, progress, quantizers,
                                      vargs, patience, bool(calibrate), max_seconds)


def history(model: Any, mods: list[dict]) -> pl.DataFrame:
    """G-Blend's record: one row per (super-epoch, head) with the head's loss weight over
    that super-epoch, the held-out gain and added overfitting of its trial (the head
    trained alone over the same epochs, from the same weights) that set the weight, and
    the blended model's losses on the held-out slice and the training subset after it."""
    rows = json.loads(model.history_json)
    heads = ["fused"] + [m["name"] for m in mods]
    nan = float("nan")
    recs = [
        {"epoch": r["epoch"], "epochs": r.get("epochs", 1), "head": h, "weight": r["weights"][i],
         "gain": (r.get("gain") or [nan] * len(heads))[i],
         "overfit": (r.get("overfit") or [nan] * len(heads))[i],
         "holdout_loss": r["holdout_loss"][i], "train_loss": r["train_loss"][i]}
        for r in rows for i, h in enumerate(heads)
    ]
    schema = {"epoch": pl.Int64, "epochs": pl.Int64, "head": pl.String, "weight": pl.Float32,
              "gain": pl.Float32, "overfit": pl.Float32, "holdout_loss": pl.Float32, "train_loss": pl.Float32}
    return pl.DataFrame(recs, schema=schema)
