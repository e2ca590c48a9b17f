"""The exceptions mmq raises. Every one is a subclass of :class:`MmqError`."""
import contextlib
import re
from typing import Iterator


class MmqError(Exception):
    """Base class of every error raised by mmq."""


class InvalidParameterError(MmqError, ValueError):
    """A hyperparameter or argument is out of its allowed range (e.g. ``dim=0``, ``k=0``)."""


class InvalidInputError(MmqError, ValueError):
    """Input data has the wrong columns, types or content (missing column, null labels...)."""


class ModelFileError(MmqError, ValueError):
    """A model file is unreadable, corrupt, or not an mmq file."""


class NotFittedError(MmqError, RuntimeError):
    """The model must be fitted (or loaded) first."""


class MmqIOError(MmqError, OSError):
    """Reading or writing a file failed."""


class DependencyError(MmqError, ImportError):
    """An optional dependency (e.g. Ray for :mod:`mmq.ray`) is missing or of an unsupported version."""


# Errors of mmq's Polars expressions (``pl.col(..).mmq.tokenize``, ``mmq.predict``...)
# cross Polars as a ``polars.exceptions.ComputeError`` (Polars builds the exception from
# the plugin's message; a plugin cannot choose its class). The plugin puts the name of
# the mmq class first in every message it fails with, as ``[mmq:InvalidInputError]``;
# :func:`from_polars` and :func:`polars_errors` turn such an exception back into that
# class, with the mmq message alone (no Polars prefix, no path of the compiled library).
_CODE = re.compile(r"\[mmq:([A-Za-z]+)\] ?")


def from_polars(exc: BaseException) -> BaseException:
    """The mmq error that a Polars exception raised by an mmq expression carries, or
    ``exc`` itself when it does not come from an mmq expression.

    ``df.select(mmq.predict(clf))`` is evaluated by Polars, not by mmq, so it raises
    ``polars.exceptions.ComputeError``; catch it and re-raise the mmq class with::

        try:
            out = df.select(mmq.predict(clf))
        except pl.exceptions.PolarsError as e:
            raise mmq.errors.from_polars(e) from None

    or wrap the query in :func:`polars_errors`.
    """
    m = _CODE.search(str(exc))
    if m is None:
        return exc
    cls = _CLASSES.get(m.group(1), MmqError)
    msg = str(exc)[m.end():]
    # Polars may append its own context (the query plan) after a blank line.
    msg = msg.split("\n\n", 1)[0].strip()
    new = cls(msg)
    new.polars_error = exc  # the original, for debugging
    return new


@contextlib.contextmanager
def polars_errors() -> Iterator[None]:
    """Raise the mmq class of an error of an mmq expression evaluated inside the block
    (see :func:`from_polars`); other exceptions pass unchanged::

        with mmq.errors.polars_errors():
            out = df.select(mmq.predict(clf), pl.col("text").mmq.tokenize())
    """
    import polars as pl

    try:
        yield
    except pl.exceptions.PolarsError as e:
        new = from_polars(e)
        if new is e:
            raise
        raise new from None


_CLASSES = {
    c.__name__: c
    for c in (MmqError, InvalidParameterError, InvalidInputError, ModelFileError,
              NotFittedError, MmqIOError, DependencyError)
}

__all__ = [
    "MmqError",
    "InvalidParameterError",
    "InvalidInputError",
    "ModelFileError",
    "NotFittedError",
    "MmqIOError",
    "DependencyError",
    "from_polars",
    "polars_errors",
]
