"""mmq: fast multimodal classification — fastText's speed for rows with text and images.

Public API: :class:`Classifier`, :func:`load`, :func:`tokenize`, the ``mmq`` Polars
expression namespace (registered on import), and the errors in :mod:`mmq.errors`.
"""
from mmq._mmq import __version__
from mmq.classifier import Classifier, TestResult, ensemble, load, tokenize
from mmq.quant import PQ, RSPQ
from mmq._options import Fusion, GBlend, Tokenizer
from mmq.autotune import AutotuneResult, autotune
from mmq.errors import (
    DependencyError,
    InvalidInputError,
    InvalidParameterError,
    MmqError,
    MmqIOError,
    ModelFileError,
    NotFittedError,
)
from mmq.namespace import col, expr, predict, predict_proba  # also registers pl.Expr.mmq
from mmq import plot  # matplotlib only when a plot is drawn

__all__ = [
    "__version__",
    "Classifier",
    "TestResult",
    "load",
    "ensemble",
    "tokenize",
    "predict",
    "predict_proba",
    "col",
    "expr",
    "PQ",
    "RSPQ",
    "Tokenizer",
    "Fusion",
    "GBlend",
    "autotune",
    "AutotuneResult",
    "MmqError",
    "InvalidParameterError",
    "InvalidInputError",
    "ModelFileError",
    "NotFittedError",
    "MmqIOError",
    "DependencyError",
    "plot",
]
