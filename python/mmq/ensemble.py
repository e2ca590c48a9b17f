"""Ensembles (``mmq.ensemble([...])``, ``mmq.autotune(..., ensemble=k)``): the mean of
several fitted models' probabilities.

Why: on a small validation split the best of many autotune trials is partly chosen by
noise, and the trials near the top make different errors. Averaging the calibrated
probabilities of the top few is the oldest cure for both (measured on fashion_products,
3 seeds: the best trial 0.9633, the mean of the top 3 0.9653, of the top 5 0.9665;
docs/better_answers.md). The cost is prediction time and memory: k models.

A member is a text model of one text column (either head, any loss, any tokenizer
options), a late-fusion or a concat-fusion model; each predicts from its own columns, and
the ensemble's probability of a label is the mean over the members of theirs (a label a
member never saw counts 0 there). The labels are the first member's, then any other
member's new ones. The file holds each member's own bytes.
"""
from __future__ import annotations

import json
from typing import Any, Optional, Sequence

import numpy as np
import polars as pl

from mmq import _mmq
from mmq.errors import ModelFileError
from mmq.late import ConcatModel, LateModel, ProbaModel, _check_keys, _unpack

KIND = "ensemble_classifier"
# A member's model kind in the file → how to read it back.
_READERS = {"classifier": _mmq.RustClassifier.from_bytes, "late_classifier": LateModel.from_bytes,
            "concat_classifier": ConcatModel.from_bytes}


def _kind_of(model: Any) -> str:
    if isinstance(model, LateModel):
        return "late_classifier"
    if isinstance(model, ConcatModel):
        return "concat_classifier"
    return "classifier"


class EnsembleModel(ProbaModel):
    """The fitted ensemble; answers the calls :class:`mmq.Classifier` makes of its Rust
    models (``predict``, ``predict_proba``, ``test``, ``save``)."""

    def __init__(self, members: Sequence[Any]):
        self.members = list(members)
        labels: list = []
        seen: set = set()
        for m in self.members:
            for lab in m.labels:
                if lab not in seen:
                    seen.add(lab)
                    labels.append(lab)
        self.labels = labels
        pos = {lab: i for i, lab in enumerate(labels)}
        self._cols = [np.array([pos[lab] for lab in m.labels], dtype=np.int64) for m in self.members]
        # every dense column a member reads (late and concat members' heads), in order
        self.heads = [h for m in self.members for h in getattr(m, "heads", [])]
        self.dense_names = list(dict.fromkeys(h.name for h in self.heads))

    @property
    def quantized_json(self) -> Optional[str]:
        return None

    @property
    def temperature(self) -> float:
        return 1.0  # each member keeps its own (calibrated on valid); the mean has none

    @property
    def history_json(self) -> str:
        """The first member's per-epoch history (the best trial's, for autotune)."""
        m = self.members[0]
        m = m.text if isinstance(m, LateModel) else m
        return getattr(m, "valid_history_json", None) or getattr(m, "history_json", "[]")

    def proba(self, texts: pl.Series, dense: list) -> np.ndarray:
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        for m, cols in zip(self.members, self._cols):
            p = m.predict_proba(texts, dense if isinstance(m, (LateModel, ConcatModel)) else [])
            out[:, cols] += p
        return (out / len(self.members)).astype(np.float32)

    @property
    def config_json(self) -> str:
        cfg = json.loads(self.members[0].config_json)
        cfg.update(kind="ensemble", members=len(self.members), dense=self.dense_names)
        return json.dumps(cfg)

    # -- persistence -----------------------------------------------------------------
    def _header(self) -> dict:
        return {"kind": KIND, "labels": self.labels, "members": [_kind_of(m) for m in self.members]}

    def to_bytes(self) -> bytes:
        parts = [(f"member{i}", m.to_bytes()) for i, m in enumerate(self.members)]
        return _mmq.pack(json.dumps(self._header()), parts)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> "EnsembleModel":
        h, parts = _unpack(data, source, KIND, "ensemble")
        kinds = h.get("members")
        if not isinstance(kinds, list) or not kinds or not all(k in _READERS for k in kinds):
            raise ModelFileError(f"{source}: bad ensemble members {kinds!r}: expected a list of "
                                 f"{sorted(_READERS)}")
        members = []
        for i, k in enumerate(kinds):
            if f"member{i}" not in parts:
                raise ModelFileError(f"{source}: ensemble member {i} is missing")
            members.append(_READERS[k](parts[f"member{i}"], f"{source} (member {i})"))
        m = cls(members)
        if h.get("labels") != m.labels:
            raise ModelFileError(f"{source}: the ensemble's labels do not match its members'")
        _check_keys(h, m._header(), source)
        return m
