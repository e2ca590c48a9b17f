"""The ``mmq`` Polars expressions: ``pl.col("text").mmq.tokenize(...)``,
``pl.col("image").mmq.encode(quantizer)``, ``mmq.predict(model, ...)`` and
``mmq.predict_proba(model, ...)``. They run in eager, lazy and streaming queries.

A quantizer or model is passed as an object or as a path to its file. The plugin loads
the file once and caches it, reloading it when the file changes. An object that was
not saved yet is written once to a temporary file (removed at exit).
"""
from __future__ import annotations

import atexit
import os
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

import polars as pl
from polars.plugins import register_plugin_function

from mmq._input import check_threshold
from mmq.classifier import Classifier, load, load_classifier
from mmq.errors import InvalidInputError, InvalidParameterError, ModelFileError
from mmq.quant import _Quantizer

_LIB = Path(__file__).parent
_TEMP: list[str] = []


@atexit.register
def _cleanup() -> None:
    for p in _TEMP:
        try:
            os.remove(p)
        except OSError:
            pass


def _path_of(obj: Any) -> str:
    if isinstance(obj, (str, os.PathLike)):
        p = Path(obj)
        if not p.exists():
            raise InvalidInputError(f"model file '{p}' does not exist")
        return str(p.resolve())
    p = getattr(obj, "_plugin_path", None)
    if p and os.path.exists(p):
        return p
    d = Path(tempfile.gettempdir()) / "mmq-plugin"
    d.mkdir(exist_ok=True)
    path = str(d / f"{uuid.uuid4().hex}.mmq")
    obj.save(path)
    obj._plugin_path = path
    _TEMP.append(path)
    return path


def _as_expr(e: Union[str, pl.Expr]) -> pl.Expr:
    return pl.col(e) if isinstance(e, str) else e


def _plugin(function: str, args: list, **kwargs: Any) -> pl.Expr:
    """An elementwise call of the plugin's ``mmq_<function>`` (every mmq expression is
    one: a row's output depends on that row alone)."""
    return register_plugin_function(plugin_path=_LIB, function_name=f"mmq_{function}", args=args,
                                    kwargs=kwargs, is_elementwise=True)


@pl.api.register_expr_namespace("mmq")
class MmqExpr:
    """Expressions backed by mmq's Rust plugin. Nulls pass through as nulls."""

    def __init__(self, expr: pl.Expr):
        self._expr = expr

    def tokenize(self, word_ngrams: int = 1, minn: int = 0, maxn: int = 0,
                 bucket: int = 2_000_000, split_cjk: bool = True, lowercase: bool = False,
                 split_punct: bool = False, drop_punct: bool = False) -> pl.Expr:
        """fastText-compatible hashed token ids (List[UInt32]) of a String column; the
        same ids as :func:`mmq.tokenize`. When Polars already runs the expression in
        parallel (e.g. under ``group_by``), it stays on Polars' thread.

        Example:
            >>> import polars as pl, mmq
            >>> pl.DataFrame({"t": ["a b"]}).select(pl.col("t").mmq.tokenize()).item().len()
            3
        """
        return _plugin("tokenize", [self._expr], word_ngrams=word_ngrams, minn=minn, maxn=maxn, bucket=bucket,
                       split_cjk=split_cjk, lowercase=lowercase, split_punct=split_punct, drop_punct=drop_punct)

    def encode(self, quantizer: Any) -> pl.Expr:
        """PQ/RSPQ codes of an Array[Float32, d] column: Array[UInt8, m] (UInt16 when
        k > 256). ``quantizer``: a fitted :class:`mmq.PQ`/:class:`mmq.RSPQ` or its file.

        Example:
            >>> import numpy as np, polars as pl, mmq
            >>> x = np.random.default_rng(0).normal(size=(500, 16)).astype("float32")
            >>> q = mmq.PQ(m=4, k=8).fit(x)
            >>> df = pl.DataFrame({"v": pl.Series(x, dtype=pl.Array(pl.Float32, 16))})
            >>> df.select(pl.col("v").mmq.encode(q)).dtypes
            [Array(UInt8, shape=(4,))]
        """

        if not isinstance(quantizer, (str, os.PathLike, _Quantizer)):
            raise InvalidParameterError(f"expected a PQ/RSPQ quantizer or the path of its file, "
                                        f"got {type(quantizer).__name__}")
        path = _path_of(quantizer)
        if isinstance(quantizer, (str, os.PathLike)):
            quantizer = load(path)
            if not isinstance(quantizer, _Quantizer):
                raise ModelFileError(f"{path} holds a classifier, not a quantizer")
        return _plugin("encode", [self._expr], path=path, m=quantizer.m, k=quantizer.k)


if TYPE_CHECKING:
    class Expr(pl.Expr):
        """A Polars expression whose ``mmq`` namespace type checkers see."""

        @property
        def mmq(self) -> MmqExpr: ...
else:
    Expr = pl.Expr


def col(*names: str) -> "Expr":
    """``pl.col(...)`` as type checkers should see it with mmq imported: mypy and pyright
    know nothing of namespaces registered at run time, so ``pl.col("t").mmq`` is an
    error for them ("Expr" has no attribute "mmq") while ``mmq.col("t").mmq`` is typed.
    At run time it is ``pl.col``."""
    return pl.col(*names)  # type: ignore[return-value]


def expr(e: pl.Expr) -> "Expr":
    """Any expression, typed with its ``mmq`` namespace: ``mmq.expr(pl.col("t").str.
    to_lowercase()).mmq.tokenize()``. At run time it returns ``e`` unchanged."""
    return e  # type: ignore[return-value]


def _model_args(model: Any, text: Union[str, pl.Expr], dense: Optional[Mapping[str, Union[str, pl.Expr]]]):
    if not isinstance(model, (str, os.PathLike, Classifier)):
        raise InvalidParameterError(f"expected a Classifier or the path of its file, got {type(model).__name__}")
    def served(m: Any) -> None:
        if getattr(m, "fusion", None) in ("late", "concat", "ensemble"):
            raise InvalidParameterError(f"fusion={m.fusion!r} models are not served by the Polars expressions "
                                        "yet; use clf.predict(df) / clf.predict_proba(df)")

    served(model)  # before an object is saved to a file for the plugin
    path = _path_of(model)
    if isinstance(model, (str, os.PathLike)):
        model = load_classifier(path)
        served(model)
    mods = getattr(model, "_mods", None)
    if mods is not None:
        # A many-modality model reads its columns by their training names; `dense` and,
        # for a model with one text column, `text` may point elsewhere.
        over = dict(dense or {})
        texts = [m["name"] for m in mods if m["kind"] == "text"]
        if len(texts) == 1 and not (isinstance(text, str) and text == "text"):
            over.setdefault(texts[0], text)
        args = []
        for m in mods:
            e = _as_expr(over.get(m["name"], m["name"]))
            args.append(e.cast(pl.String) if m["kind"] == "categorical" else e)
        return path, model, args
    names = list(model._dense)
    dense = dict(dense or {})
    missing = [n for n in names if n not in dense]
    if not dense and names:
        dense = {n: n for n in names}  # default: columns named as in training
    elif missing:
        raise InvalidInputError(f"the model reads dense column(s) {names}; missing {missing}")
    args = [_as_expr(text)] + [_as_expr(dense[n]) for n in names]
    return path, model, args


def _panic_for_test(expr: pl.Expr, message: str) -> pl.Expr:
    """A test hook: an expression that panics in the plugin (see plugin.rs)."""
    return _plugin("panic_for_test", [expr], message=message)


def predict(model: Any, text: Union[str, pl.Expr] = "text",
            dense: Optional[Mapping[str, Union[str, pl.Expr]]] = None, threshold: float = 0.0,
            k: Optional[int] = None) -> pl.Expr:
    """Predictions as an expression, named ``prediction`` (``.alias()`` renames it).

    - ``k=None`` (default): the most probable label (String; null under ``threshold``).
    - ``k`` >= 1, or -1 for every label: a Struct with fields ``label``
      (List[String]) and ``prob`` (List[Float32]), the top ``k`` labels most probable
      first, those under ``threshold`` left out; ``.struct.field("label")`` or
      ``.struct.unnest()`` takes them apart.

    ``dense`` maps the model's dense column names to columns or expressions (default:
    the same names); a dense column may be Array[float, d] or List[float] (each row d
    values).

    Example:
        >>> import polars as pl, mmq
        >>> df = pl.DataFrame({"text": ["good", "bad"] * 20, "label": ["p", "n"] * 20})
        >>> clf = mmq.Classifier(dim=4, epoch=20, lr=0.5, threads=1, progress=False).fit(df)
        >>> df.head(2).select(mmq.predict(clf)).to_series().to_list()
        ['p', 'n']
        >>> df.head(1).select(mmq.predict(clf, k=2)).unnest("prediction")["label"].to_list()
        [['p', 'n']]
    """

    threshold = check_threshold(threshold)
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or (k < 1 and k != -1)):
        raise InvalidParameterError(f"k must be an integer >= 1, -1 (every label) or None (the top label), got {k!r}")
    path, _, args = _model_args(model, text, dense)
    if k is None:
        return _plugin("predict", args, path=path, threshold=threshold).alias("prediction")
    return _plugin("predict_top", args, path=path, threshold=threshold, k=max(k, 0)).alias("prediction")


def predict_proba(model: Any, text: Union[str, pl.Expr] = "text",
                  dense: Optional[Mapping[str, Union[str, pl.Expr]]] = None, named: bool = False) -> pl.Expr:
    """Probability of every label, named ``proba``: Array[Float32, n_labels] in
    ``model.labels`` order; with ``named=True`` a Struct with one Float32 field per
    label, named by it (in the same order)."""
    if not isinstance(named, bool):
        raise InvalidParameterError(f"named must be True or False, got {named!r}")
    path, m, args = _model_args(model, text, dense)
    e = _plugin("predict_proba", args, path=path, n_labels=len(m.labels))
    if named:
        e = e.arr.to_struct(fields=list(m.labels))
    return e.alias("proba")
