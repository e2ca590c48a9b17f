"""The exceptions mmq raises. Every one is a subclass of :class:`MmqError`."""


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


__all__ = [
    "MmqError",
    "InvalidParameterError",
    "InvalidInputError",
    "ModelFileError",
    "NotFittedError",
    "MmqIOError",
    "DependencyError",
]
