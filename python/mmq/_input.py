"""Turning user input (DataFrame, LazyFrame, Series, list of str) into Polars Series,
with errors that name the column and what was expected."""
from __future__ import annotations

from typing import Any, Sequence

import polars as pl

from mmq.errors import InvalidInputError, InvalidParameterError


def as_frame(data: Any, what: str = "data") -> pl.DataFrame:
    if isinstance(data, pl.LazyFrame):
        return data.collect()
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


def check_k(k: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InvalidParameterError(f"k must be an integer >= 1, got {k!r}")
    return k


def check_threshold(threshold) -> float:
    t = float(threshold)
    if t != t:
        raise InvalidParameterError("threshold must be a number, got nan")
    return t
