"""Product quantization (PQ) and random-subspace PQ (RSPQ) of dense vectors.

A quantizer splits the d dimensions into m subspaces (PQ: contiguous blocks, the last one
longer when m does not divide d; RSPQ: m subsets of s dimensions each drawn at random,
seeded, independently per sub-quantizer, so they may overlap) and learns k centroids per
subspace by k-means (k-means++ init, at most ``max_points_per_centroid * k`` training
rows). A vector becomes m codes: the nearest centroid of each subspace.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import polars as pl

from mmq import _mmq
from mmq._input import TRANSFORMS, apply_transform, as_codes, as_matrix  # noqa: F401  (also mmq.quant's names)
from mmq._stream import quantizer_sample
from mmq.errors import InvalidInputError, InvalidParameterError, NotFittedError

ArrayLike = Union[np.ndarray, pl.Series]


class _Quantizer:
    _kind = ""

    def __init__(self, m: int, k: int = 256, seed: int = 0, max_iter: int = 25,
                 max_points_per_centroid: int = 256, s: Optional[int] = None,
                 subspaces: Optional[Sequence[Sequence[int]]] = None, transform: Optional[str] = None):
        if transform not in TRANSFORMS:
            raise InvalidParameterError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        self.transform = transform
        for name, v in dict(m=m, k=k, max_iter=max_iter, max_points_per_centroid=max_points_per_centroid).items():
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise InvalidParameterError(f"{name} must be an integer >= 1, got {v!r}")
        if not 2 <= k <= 65536:
            raise InvalidParameterError(f"k must be in 2..=65536, got {k}")
        if s is not None and (not isinstance(s, int) or s < 1):
            raise InvalidParameterError(f"s must be an integer >= 1, got {s!r}")
        self.m, self.k, self.seed, self.max_iter = int(m), int(k), int(seed), int(max_iter)
        self.max_points_per_centroid = int(max_points_per_centroid)
        self.s = s
        self._subspaces = None if subspaces is None else [list(map(int, sub)) for sub in subspaces]
        self._q: Optional[Any] = None

    def __repr__(self) -> str:
        state = "fitted" if self.is_fitted else "not fitted"
        extra = f", s={self.s}" if self._kind == "rspq" else ""
        if self.transform is not None:
            extra += f", transform={self.transform!r}"
        return f"{type(self).__name__}(m={self.m}, k={self.k}{extra}, seed={self.seed}) [{state}]"

    @property
    def is_fitted(self) -> bool:
        return self._q is not None and self._q.is_fitted

    def _fitted(self):
        if not self.is_fitted:
            raise NotFittedError(f"this {type(self).__name__} is not fitted: call fit() first")
        return self._q

    @property
    def d(self) -> int:
        return json.loads(self._fitted().params_json)["d"]

    @property
    def subspaces(self) -> list[list[int]]:
        """The dimensions each sub-quantizer owns (stored with the quantizer)."""
        return self._fitted().subspaces

    def centroids(self, j: int) -> np.ndarray:
        """The k × s_j centroids of sub-quantizer j."""
        return self._fitted().centroids(j)

    def fit(self, x: Union[ArrayLike, pl.LazyFrame], progress: Optional[bool] = None,
            column: Optional[str] = None) -> "_Quantizer":
        """Learn the codebooks from an n × d matrix (NumPy, or a Polars Array/List
        column). Reproducible for a seed whatever the thread count.

        ``x`` may also be a LazyFrame (e.g. ``pl.scan_parquet(...)``; ``column`` names the
        vector column unless it is the only one): it is read in batches and k-means trains
        on a seeded sample of ``max_points_per_centroid * k`` rows (all rows when fewer,
        giving the same quantizer as the in-memory fit), so the column need not fit in
        memory."""
        if isinstance(x, pl.LazyFrame):
            x = quantizer_sample(self, x, column)
        a = as_matrix(x)
        if a.shape[0] == 0:
            raise InvalidInputError("cannot fit a quantizer on empty input (0 rows)")
        self._plugin_path = None  # a refit object is re-saved for the Polars plugin
        q = _mmq.RustQuantizer.new(self._kind, a.shape[1], self.m, self.k, self.seed, self.s, self._subspaces,
                                   self.transform)
        def report(done, m):
            sys.stderr.write(f"\rk-means: {done}/{m} sub-quantizers")
            if done == m:
                sys.stderr.write("\n")

        cb = report if progress else None
        q.fit(a, self.max_iter, self.max_points_per_centroid, cb)
        self._q = q
        return self

    def encode(self, x: ArrayLike) -> np.ndarray:
        """Codes, n × m: uint8 when k <= 256, else uint16."""
        return self._fitted().encode(as_matrix(x))

    def decode(self, codes: Any) -> np.ndarray:
        """Reconstructions (float32, n × d): each dimension is the mean of the centroid
        coordinates of the sub-quantizers that cover it (the training mean if none). With
        a ``transform`` they reconstruct the transformed vectors."""
        return self._fitted().decode(as_codes(codes, self.m))

    def tokens(self, codes: Any) -> np.ndarray:
        """Token ids (uint32, n × m): sub-quantizer j, centroid c → j·k + c."""
        return self._fitted().tokens(as_codes(codes, self.m))

    def quantization_error(self, x: ArrayLike) -> float:
        """Mean over rows of ||t(x) − decode(encode(x))||², t the ``transform``."""
        return self._fitted().quantization_error(as_matrix(x))

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write one self-describing file (atomic)."""
        self._fitted().save(Path(path))

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k != "_q"}
        state["_bytes"] = self._q.to_bytes() if self.is_fitted else None
        return state

    def __setstate__(self, state: dict) -> None:
        b = state.pop("_bytes")
        self.__dict__.update(state)
        self.__dict__.setdefault("transform", None)
        self._q = None if b is None else _mmq.RustQuantizer.from_bytes(b, "<pickle>")

    @classmethod
    def _from_rust(cls, q) -> "_Quantizer":
        p = json.loads(q.params_json)
        klass = PQ if p["kind"] == "pq" else RSPQ
        obj = klass.__new__(klass)
        _Quantizer.__init__(obj, m=p["m"], k=p["k"], seed=p["seed"], max_iter=p["max_iter"],
                            max_points_per_centroid=p.get("max_points_per_centroid", 256),
                            s=p["s"] if p["kind"] == "rspq" else None,
                            transform=None if p.get("transform", "none") == "none" else p["transform"])
        obj._q = q
        return obj


class PQ(_Quantizer):
    """Product quantizer: ``m`` contiguous blocks, ``k`` centroids each (a u8 code when
    k <= 256). ``transform`` (None, "l2", "sqrt"; see ``mmq.quant.TRANSFORMS``) is applied
    to every vector before fitting and encoding, and is saved with the quantizer.

    Example:
        >>> import numpy as np, mmq
        >>> x = np.random.default_rng(0).normal(size=(2000, 64)).astype("float32")
        >>> pq = mmq.PQ(m=8, k=16).fit(x)
        >>> pq.encode(x[:2]).shape
        (2, 8)
    """

    _kind = "pq"

    def __init__(self, m: int, k: int = 256, seed: int = 0, max_iter: int = 25,
                 max_points_per_centroid: int = 256, transform: Optional[str] = None):
        super().__init__(m, k, seed, max_iter, max_points_per_centroid, transform=transform)


class RSPQ(_Quantizer):
    """Random-subspace PQ: sub-quantizer j owns ``s`` dimensions drawn at random (seeded)
    independently of the others (default ``s = d // m``); pass ``subspaces`` to fix them.
    ``transform`` as for :class:`PQ`.

    Example:
        >>> import numpy as np, mmq
        >>> x = np.random.default_rng(0).normal(size=(2000, 64)).astype("float32")
        >>> mmq.RSPQ(m=8, s=16, k=16).fit(x).encode(x[:3]).shape
        (3, 8)
    """

    _kind = "rspq"

    def __init__(self, m: int, s: Optional[int] = None, k: int = 256, seed: int = 0, max_iter: int = 25,
                 max_points_per_centroid: int = 256, subspaces: Optional[Sequence[Sequence[int]]] = None,
                 transform: Optional[str] = None):
        if subspaces is not None:
            m = len(subspaces)
        super().__init__(m, k, seed, max_iter, max_points_per_centroid, s=s, subspaces=subspaces,
                         transform=transform)
