"""The ``mmq`` Polars expression namespace: ``pl.col("text").mmq.tokenize(...)``."""
from __future__ import annotations

from pathlib import Path

import polars as pl
from polars.plugins import register_plugin_function

_LIB = Path(__file__).parent


@pl.api.register_expr_namespace("mmq")
class MmqExpr:
    """Expressions backed by mmq's Rust plugin; they run in eager, lazy and streaming
    queries and stay on Polars' threads when Polars already runs them in parallel."""

    def __init__(self, expr: pl.Expr):
        self._expr = expr

    def tokenize(self, word_ngrams: int = 1, minn: int = 0, maxn: int = 0,
                 bucket: int = 2_000_000, split_cjk: bool = True) -> pl.Expr:
        """fastText-compatible hashed token ids (List[UInt32]) of a String column; the
        same ids as :func:`mmq.tokenize`. Nulls stay null.

        Example:
            >>> import polars as pl, mmq
            >>> pl.DataFrame({"t": ["a b"]}).select(pl.col("t").mmq.tokenize()).item().len()
            3
        """
        return register_plugin_function(
            plugin_path=_LIB,
            function_name="mmq_tokenize",
            args=[self._expr],
            kwargs={"word_ngrams": word_ngrams, "minn": minn, "maxn": maxn,
                    "bucket": bucket, "split_cjk": split_cjk},
            is_elementwise=True,
        )
