"""mmq on Ray Data: encode, tokenize and predict across a cluster (``pip install 'mmq[ray]'``).

The parts of a pipeline that parallelise perfectly run where the rows are, as
``Dataset.map_batches`` callables over Arrow batches:

- :class:`Encode` — a dense column to PQ/RSPQ codes (``Array[UInt8, m]``);
- :class:`Tokenize` — a text column to fastText's hashed token ids (``List[UInt32]``);
- :class:`Predict` — top-k labels and their probabilities, or every label's probability.

Each loads its model once per worker (an actor of an actor pool), from a path, an
object, or an object-store reference, and uses as many threads as the worker was
allotted CPUs. Their outputs equal the single-process API's exactly. :func:`encode`,
:func:`tokenize` and :func:`predict` set the ``map_batches`` call up (actor pool,
CPUs per worker, bounded retries); :func:`errors` turns a failure on a worker back into
the :class:`~mmq.errors.MmqError` that caused it. :func:`fit_quantizer` fits PQ/RSPQ on
a seeded sample drawn across the dataset (:func:`sample`; :func:`sample_local` draws the
same sample from an in-memory matrix), and :func:`fit_ray` encodes on the cluster to a
Parquet of codes + text, then fits a classifier streaming from it.

Supported: Ray (``ray[data]``) ``RAY_MIN`` ≤ version < ``RAY_MAX``. See docs/ray.md.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import socket
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import polars as pl

from mmq import _mmq
from mmq import errors as errs
from mmq._input import as_matrix, check_k, check_threshold
from mmq.classifier import Classifier, load, load_classifier
from mmq.classifier import tokenize as tokenize_texts
from mmq.quant import _Quantizer
from mmq.errors import (
    DependencyError,
    InvalidInputError,
    InvalidParameterError,
    MmqError,
    ModelFileError,
    NotFittedError,
)

RAY_MIN = (2, 40)
RAY_MAX = (3, 0)  # exclusive
# Retries of a worker that died (killed, out of memory, lost node): bounded, so an input
# that crashes its worker every time fails the job instead of restarting it forever.
RETRIES = 3
BATCH_ROWS = 4096


def _version(v: str) -> tuple:
    m = re.match(r"(\d+)\.(\d+)", v)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _ray():
    """The ``ray`` module, checked: installed and of a supported version."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise DependencyError("mmq.ray needs Ray Data, which is not installed: pip install 'mmq[ray]' "
                              f"(ray[data] >= {RAY_MIN[0]}.{RAY_MIN[1]}, < {RAY_MAX[0]}.{RAY_MAX[1]})") from e
    v = _version(getattr(ray, "__version__", "0.0"))
    if not (RAY_MIN <= v < RAY_MAX):
        raise DependencyError(f"mmq.ray supports Ray {RAY_MIN[0]}.{RAY_MIN[1]} <= version < "
                              f"{RAY_MAX[0]}.{RAY_MAX[1]}; found ray {ray.__version__}")
    return ray


# -- where a batch runs, and its errors ------------------------------------------------

def _where() -> str:
    """This worker, for error messages: host, pid and (inside Ray) node and actor ids."""
    at = f"pid {os.getpid()} on {socket.gethostname()}"
    try:
        import ray

        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            actor = ctx.get_actor_id()
            at += f", Ray node {ctx.get_node_id()[:12]}" + (f", actor {actor[:12]}" if actor else "")
    except Exception:  # not in Ray, or an older runtime context: the pid and host suffice
        pass
    return at


def _blame(e: MmqError, batch: str) -> MmqError:
    """``e`` with the worker and the batch named in its message (same class)."""
    try:
        out = type(e)(f"{e} [in {batch}; worker {_where()}]")
    except Exception:
        out = MmqError(f"{e} [in {batch}; worker {_where()}]")
    return out


def _find_mmq_error(e: BaseException) -> Optional[BaseException]:
    """The MmqError inside a Ray exception (its cause chain), if any."""
    seen: set = set()
    stack: list = [e]
    while stack:
        x = stack.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, MmqError):
            return x
        stack += [getattr(x, "cause", None), x.__cause__, x.__context__]
        try:
            stack.append(x.as_instanceof_cause())  # RayTaskError
        except Exception:
            pass
    return None


_TRACEBACK_ERROR = re.compile(r"mmq\.errors\.(\w+): (.*)")


@contextlib.contextmanager
def errors() -> Iterator[None]:
    """Within this block, a Ray job that failed because of an mmq error on a worker
    raises that error (its class, its message naming the worker and the batch) instead
    of Ray's wrapper; other errors pass unchanged. Ray Data runs lazily, so wrap the call
    that executes the pipeline (``write_parquet``, ``materialize``, ``take_all``...)::

        with mmq.ray.errors():
            mmq.ray.predict(ds, "model.mmq").write_parquet("out/")
    """
    try:
        yield
    except MmqError:
        raise
    except Exception as e:
        found = _find_mmq_error(e)
        if found is None:  # Ray kept only the traceback text: read the class and message there

            hit = _TRACEBACK_ERROR.findall(str(e))
            if hit and isinstance(getattr(errs, hit[-1][0], None), type):
                cls = getattr(errs, hit[-1][0])
                if issubclass(cls, MmqError):
                    found = cls(hit[-1][1])
        if found is None:
            raise
        raise found from e


# -- batches ---------------------------------------------------------------------------

def _table(batch: Any):
    """A batch of any of Ray's formats as a pyarrow Table."""
    import pyarrow as pa

    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, pl.DataFrame):
        return batch.to_arrow()
    if isinstance(batch, dict):  # batch_format="numpy"
        return pl.DataFrame({k: _numpy_column(k, v) for k, v in batch.items()}).to_arrow()
    if type(batch).__module__.startswith("pandas"):
        return pa.Table.from_pandas(batch, preserve_index=False)
    raise InvalidInputError(f"expected a batch as a pyarrow Table, pandas DataFrame or dict of NumPy arrays "
                            f"(map_batches' batch_format), got {type(batch).__name__}")


def _numpy_column(name: str, v: np.ndarray) -> pl.Series:
    v = np.asarray(v)
    return pl.Series(name, v)  # a 2-D array becomes Array[dtype, d]


def _series(table, name: str, batch: str) -> pl.Series:
    """Column ``name`` of an Arrow table as a Polars Series; a Ray tensor column
    (``ArrowTensorType``, what ``from_numpy`` makes) becomes ``Array[dtype, d]``."""
    import pyarrow as pa

    if name not in table.column_names:
        raise InvalidInputError(f"column '{name}' not found in {batch}; its columns are {table.column_names}")
    col = table.column(name)
    if isinstance(col.type, pa.ExtensionType):
        chunks = [c.to_numpy() for c in col.chunks] if col.num_chunks else []
        v = np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
        if v.dtype == object or v.ndim != 2:
            raise InvalidInputError(f"column '{name}' in {batch}: expected one vector of fixed length per row, "
                                    f"got a tensor column of shape {getattr(v, 'shape', '?')} ({col.type})")
        return _numpy_column(name, v)
    return pl.from_arrow(pa.table({name: _compact(col)})).get_column(name)


def _has_fixed_list(t) -> bool:
    import pyarrow as pa

    if pa.types.is_fixed_size_list(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _has_fixed_list(t.value_type)
    if pa.types.is_struct(t):
        return any(_has_fixed_list(t.field(i).type) for i in range(t.num_fields))
    return False


def _compact(col):
    """A chunked column whose sliced fixed-size-list chunks are copied to offset 0:
    Polars (2.1) misreads the validity of a sliced ``fixed_size_list`` with nulls
    ("validity mask length must be equal to the number of values divided by size"), and
    Ray hands out slices of its blocks."""
    import pyarrow as pa

    if not _has_fixed_list(col.type) or all(c.offset == 0 for c in col.chunks):
        return col
    return pa.chunked_array([c.take(pa.array(np.arange(len(c)))) if c.offset else c for c in col.chunks],
                            type=col.type)


def to_polars(data: Any) -> pl.DataFrame:
    """A Ray dataset (executed, inside :func:`errors`) or an Arrow table as a Polars
    DataFrame. ``pl.from_arrow`` fails on Ray's output when a vector column with nulls
    is chunked unlike the others (Polars then slices it, and misreads sliced
    ``fixed_size_list`` arrays with nulls); this converts column by column."""
    import pyarrow as pa

    if not isinstance(data, pa.Table):
        ray = _ray()
        if not isinstance(data, ray.data.Dataset):
            raise InvalidParameterError(f"expected a ray.data.Dataset or a pyarrow Table, got {type(data).__name__}")
        with errors():
            tables = ray.get(data.to_arrow_refs())
        data = pa.concat_tables(tables) if tables else pa.table({})
    # Column by column: converting a table whose columns are chunked differently makes
    # Polars slice the chunks into record batches, which is where the bug bites.
    return pl.DataFrame([pl.from_arrow(pa.table({n: _compact(c)})).get_column(n)
                         for n, c in zip(data.column_names, data.columns)])


def _frame(table, names: Sequence[str], batch: str) -> pl.DataFrame:
    return pl.DataFrame([_series(table, n, batch) for n in names])


def _output(table, keep: Optional[Sequence[str]], new: Sequence[pl.Series], batch: str,
            replace: Sequence[str] = ()):
    """The batch's columns (all, or ``keep``) with ``new`` appended (or replacing the
    columns named in ``replace``); a new column may not overwrite an input column."""
    import pyarrow as pa

    names = list(table.column_names if keep is None else keep)
    for n in names:
        if n not in table.column_names:
            raise InvalidInputError(f"keep: column '{n}' not found in {batch}; its columns are {table.column_names}")
    out = table.select(names)
    for s in new:
        arr = s.to_arrow()
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if s.name in out.column_names:
            if s.name not in replace:
                raise InvalidInputError(f"output column '{s.name}' is already a column of {batch}; "
                                        f"name the output otherwise (or drop the column with keep=[...])")
            out = out.set_column(out.column_names.index(s.name), s.name, arr)
        else:
            out = out.append_column(s.name, arr)
    return out


def _describe(table) -> str:
    return f"a batch of {table.num_rows} rows"


# -- threads and models ----------------------------------------------------------------

_APPLIED: dict = {}


def _apply_threads(threads: Optional[int]) -> None:
    """Size this process's mmq thread pool once: ``threads``, else the CPUs Ray allotted
    this worker (nothing outside Ray)."""
    pid = os.getpid()
    if pid in _APPLIED and _APPLIED[pid] == threads:
        return
    _APPLIED[pid] = threads
    n = threads
    if n is None:
        try:
            import ray

            if ray.is_initialized():
                cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
                if cpus:
                    n = max(1, int(math.floor(cpus)))
        except Exception:
            n = None
    if n is not None:
        _mmq.set_threads(int(n))


def _check_threads(threads: Optional[int]) -> Optional[int]:
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise InvalidParameterError(f"threads must be None (the worker's CPUs) or an integer >= 1, got {threads!r}")
    return threads


def _resolve(obj: Any) -> Any:
    """An object-store reference's value; anything else unchanged."""
    try:
        import ray

        if isinstance(obj, ray.ObjectRef):
            return ray.get(obj)
    except ImportError:
        pass
    return obj


def _classifier(model: Any):
    model = _resolve(model)
    if isinstance(model, (str, os.PathLike)):
        return load_classifier(model)
    if isinstance(model, Classifier):
        model._fitted()
        return model
    raise InvalidParameterError(f"model must be a Classifier, the path of its file or an object-store reference "
                                f"to either, got {type(model).__name__}")


def _quantizer(quantizer: Any):
    quantizer = _resolve(quantizer)
    if isinstance(quantizer, (str, os.PathLike)):
        q = load(quantizer)
        if not isinstance(q, _Quantizer):
            raise ModelFileError(f"{quantizer} holds a {type(q).__name__}, not a PQ/RSPQ quantizer")
        return q
    if isinstance(quantizer, _Quantizer):
        if not quantizer.is_fitted:
            raise NotFittedError("the quantizer is not fitted: fit it first (mmq.ray.fit_quantizer fits it "
                                 "on a sample of a Ray dataset)")
        return quantizer
    raise InvalidParameterError(f"quantizer must be a fitted mmq.PQ/RSPQ, the path of its file or an "
                                f"object-store reference to either, got {type(quantizer).__name__}")


class _Batches:
    """What the three callables share: deferred construction errors, the thread pool,
    the batch conversion and the error context."""

    def _start(self, build, threads: Optional[int]) -> None:
        self._threads = _check_threads(threads)
        try:
            build()
            self._error: Optional[MmqError] = None
        except MmqError as e:
            # In an actor, an error raised by __init__ kills it and Ray reports only its
            # traceback text; raised by the first batch it reaches the driver intact.
            if not _in_ray_worker():
                raise
            self._error = _blame(e, "the worker's setup")

    def __call__(self, batch: Any):
        if self._error is not None:
            raise self._error
        _apply_threads(self._threads)
        table = _table(batch)
        where = _describe(table)
        try:
            return self._run(table, where)
        except MmqError as e:
            raise _blame(e, where) from None


def _in_ray_worker() -> bool:
    try:
        import ray

        return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE
    except Exception:
        return False


class Encode(_Batches):
    """``Dataset.map_batches`` callable: PQ/RSPQ codes of the vector column ``column``
    (Array/List of floats, or a Ray tensor column; null rows give null codes), as
    ``Array[UInt8, m]`` (``UInt16`` when k > 256) in column ``output`` (default
    ``<column>_codes``; ``replace=True``: in place of the vectors). Equal to
    ``pl.col(column).mmq.encode(quantizer)`` and ``quantizer.encode``."""

    def __init__(self, quantizer: Any, column: str = "image", output: Optional[str] = None,
                 replace: bool = False, keep: Optional[Sequence[str]] = None, threads: Optional[int] = None):
        self.column, self.keep, self.replace = column, keep, bool(replace)
        self.output = column if replace else (output or f"{column}_codes")

        def build():
            self.quantizer = _quantizer(quantizer)
        self._start(build, threads)

    def _run(self, table, where: str):
        q = self.quantizer
        s = _series(table, self.column, where)
        present = ~s.is_null().to_numpy()
        kept = s.filter(pl.Series(present)) if not present.all() else s
        if len(kept):
            x = as_matrix(kept, what=self.column)
            if x.shape[1] != q.d:
                raise InvalidInputError(f"column '{self.column}': expected vectors of dimension {q.d}, "
                                        f"got {x.shape[1]}")
            codes = q.encode(x)
        else:
            codes = np.zeros((0, q.m), dtype=np.uint8 if q.k <= 256 else np.uint16)
        dt = pl.Array(pl.UInt8 if codes.dtype == np.uint8 else pl.UInt16, q.m)
        if present.all():
            out = pl.Series(self.output, codes, dtype=dt)
        else:
            full = np.zeros((len(s), q.m), dtype=codes.dtype)
            full[present] = codes
            out = pl.select(pl.when(pl.Series(present)).then(pl.Series(full, dtype=dt))).to_series().alias(self.output)
        return _output(table, self.keep, [out], where, replace=[self.output] if self.replace else [])


class Tokenize(_Batches):
    """``Dataset.map_batches`` callable: fastText-compatible hashed token ids
    (``List[UInt32]``) of the String column ``column`` in ``output`` (default
    ``<column>_tokens``). With ``model`` (a Classifier, its file or a reference), the
    model's own tokenizer (``model.tokenize``); else :func:`mmq.tokenize` with the given
    options. Equal to those functions."""

    def __init__(self, column: str = "text", output: Optional[str] = None, model: Any = None,
                 keep: Optional[Sequence[str]] = None, threads: Optional[int] = None, **options: Any):
        self.column, self.keep = column, keep
        self.output = output or f"{column}_tokens"
        self.options = dict(options)
        if model is not None and options:
            raise InvalidParameterError(f"Tokenize: give either model= (its tokenizer) or tokenizer options, "
                                        f"not both (got {sorted(options)})")

        def build():
            self.model = _classifier(model) if model is not None else None
            if self.model is None:  # check the options once, here, not per batch

                tokenize_texts([""], **self.options)
        self._start(build, threads)

    def _run(self, table, where: str):
        df = _frame(table, [self.column], where)
        if self.model is not None:
            ids = self.model.tokenize(df, text=self.column)
        else:
            ids = tokenize_texts(df, text=self.column, **self.options)
        return _output(table, self.keep, [ids.alias(self.output)], where)


class Predict(_Batches):
    """``Dataset.map_batches`` callable: the predictions of ``model`` (a Classifier, its
    file, or an object-store reference) for each row, appended to the batch.

    - ``proba=False``: ``label`` and ``prob`` columns (String / Float32 with ``k=1``,
      null under ``threshold``; List[String] / List[Float32], most probable first, with
      ``k > 1``), as ``model.predict(df, k, threshold)`` gives them;
    - ``proba=True``: one ``Array[Float32, n_labels]`` column, every label's probability
      in ``model.labels`` order, as :func:`mmq.predict_proba` gives it.

    ``text`` names the text column (as in ``model.predict``); dense and categorical
    columns are read by their training names. Column names: ``label_column``,
    ``prob_column``, ``proba_column``."""

    def __init__(self, model: Any, k: int = 1, threshold: float = 0.0, proba: bool = False, text: str = "text",
                 keep: Optional[Sequence[str]] = None, label_column: str = "pred_label",
                 prob_column: str = "pred_prob", proba_column: str = "proba", threads: Optional[int] = None):

        self.k, self.threshold = check_k(k), check_threshold(threshold)
        self.proba, self.text, self.keep = bool(proba), text, keep
        self.label_column, self.prob_column, self.proba_column = label_column, prob_column, proba_column

        def build():
            self.model = _classifier(model)
            self.columns = _model_columns(self.model, text)
        self._start(build, threads)

    def _run(self, table, where: str):
        clf = self.model
        df = _frame(table, self.columns, where)
        if self.proba:
            p = np.ascontiguousarray(clf._proba(df, self.text), dtype=np.float32)
            out = [pl.Series(self.proba_column, p, dtype=pl.Array(pl.Float32, p.shape[1]))]
        else:
            pred = clf.predict(df, k=self.k, threshold=self.threshold, text=self.text)
            out = [pred.get_column("label").alias(self.label_column), pred.get_column("prob").alias(self.prob_column)]
        return _output(table, self.keep, out, where)


def _model_columns(clf: Any, text: str) -> list:
    """The input columns a classifier reads, in its own naming."""
    mods = getattr(clf, "_mods", None)
    if mods is not None:
        return [m["name"] for m in mods]
    cols = [text]
    for name in getattr(clf, "_dense", {}) or {}:
        if name not in cols:
            cols.append(name)
    return cols


# -- the map_batches calls -------------------------------------------------------------

def _map(ds: Any, cls: type, kwargs: dict, workers: Optional[int], cpus_per_worker: float,
         batch_size: Optional[int]):
    ray = _ray()
    if not isinstance(cpus_per_worker, (int, float)) or isinstance(cpus_per_worker, bool) or cpus_per_worker <= 0:
        raise InvalidParameterError(f"cpus_per_worker must be a number > 0, got {cpus_per_worker!r}")
    if workers is None:
        cpus = ray.cluster_resources().get("CPU", 1.0) if ray.is_initialized() else float(os.cpu_count() or 1)
        workers = max(1, int(cpus // cpus_per_worker))
    elif not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise InvalidParameterError(f"workers must be None (the cluster's CPUs / cpus_per_worker) or an integer "
                                    f">= 1, got {workers!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise InvalidParameterError(f"batch_size must be None (whole blocks) or an integer >= 1, got {batch_size!r}")
    if not isinstance(ds, ray.data.Dataset):
        raise InvalidParameterError(f"expected a ray.data.Dataset, got {type(ds).__name__}")
    # An autoscaling pool (1 to `workers` actors): a fixed pool of the cluster's size
    # holds every CPU from the start, and the tasks upstream of it (reads, column
    # selections) then never run — the job hangs.
    pool = ray.data.ActorPoolStrategy(min_size=1, max_size=workers)
    return _map_batches(ds, cls, kwargs, compute=pool,
                        num_cpus=cpus_per_worker, batch_size=batch_size)


def _map_batches(ds: Any, cls: type, kwargs: dict, **options: Any):
    """``ds.map_batches(cls)`` over Arrow batches, with the retries of a dead worker
    bounded (Ray Data's default for actor pools is to restart and retry forever, which
    turns an input that kills its worker every time into a hung job)."""
    import warnings

    with warnings.catch_warnings():
        # Ray >= 2.60 names these "ray_remote_args" and plans to rename them.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        return ds.map_batches(cls, fn_constructor_kwargs=kwargs, batch_format="pyarrow",
                              max_restarts=RETRIES, max_task_retries=RETRIES, **options)


def _shippable(obj: Any, check) -> Any:
    """What goes to the workers: a path stays a path (each worker reads it; checked
    here first), an object is checked and goes by value, a reference as it is."""
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        if not os.path.isfile(path):
            raise ModelFileError(f"model file '{path}' does not exist or is not a file (on the driver)")
        check(path)
        return os.path.abspath(path)
    try:
        import ray

        if isinstance(obj, ray.ObjectRef):
            return obj
    except ImportError:
        pass
    check(obj)
    return obj


def encode(ds: Any, quantizer: Any, column: str = "image", output: Optional[str] = None, replace: bool = False,
           keep: Optional[Sequence[str]] = None, workers: Optional[int] = None, cpus_per_worker: float = 1,
           batch_size: Optional[int] = BATCH_ROWS) -> Any:
    """``ds`` with the codes of ``column`` (see :class:`Encode`), computed by an actor
    pool of ``workers`` workers (default: the cluster's CPUs / ``cpus_per_worker``),
    each loading the quantizer once. Lazy, like every Ray Data transform."""
    q = _shippable(quantizer, _quantizer)
    return _map(ds, Encode, dict(quantizer=q, column=column, output=output, replace=replace, keep=keep),
                workers, cpus_per_worker, batch_size)


def tokenize(ds: Any, column: str = "text", output: Optional[str] = None, model: Any = None,
             keep: Optional[Sequence[str]] = None, workers: Optional[int] = None, cpus_per_worker: float = 1,
             batch_size: Optional[int] = BATCH_ROWS, **options: Any) -> Any:
    """``ds`` with the token ids of ``column`` (see :class:`Tokenize`). Lazy."""
    if model is not None:
        model = _shippable(model, _classifier)
    Tokenize(column=column, output=output, model=None, **options)  # the options, checked on the driver
    return _map(ds, Tokenize, dict(column=column, output=output, model=model, keep=keep, **options),
                workers, cpus_per_worker, batch_size)


def predict(ds: Any, model: Any, k: int = 1, threshold: float = 0.0, proba: bool = False, text: str = "text",
            keep: Optional[Sequence[str]] = None, label_column: str = "pred_label", prob_column: str = "pred_prob",
            proba_column: str = "proba", workers: Optional[int] = None, cpus_per_worker: float = 1,
            batch_size: Optional[int] = BATCH_ROWS) -> Any:
    """``ds`` with ``model``'s predictions (see :class:`Predict`), computed by an actor
    pool, each worker loading the model once. Lazy; run it inside :func:`errors` to get
    mmq's errors from the workers::

        with mmq.ray.errors():
            mmq.ray.predict(ray.data.read_parquet("rows/"), "model.mmq", k=3).write_parquet("out/")
    """

    check_k(k)
    check_threshold(threshold)
    m = _shippable(model, _check_classifier_file)
    return _map(ds, Predict, dict(model=m, k=k, threshold=threshold, proba=proba, text=text, keep=keep,
                                  label_column=label_column, prob_column=prob_column, proba_column=proba_column),
                workers, cpus_per_worker, batch_size)


def _check_classifier_file(obj: Any) -> None:
    """A classifier (object), or a file that holds one: the header only, not the weights."""
    if isinstance(obj, str):
        if _mmq.file_kind(obj) == "quantizer":
            raise ModelFileError(f"{obj} holds a quantizer, not a classifier")
        return
    _classifier(obj)


# -- sampling and fitting a quantizer across a dataset ----------------------------------

_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_PRIME = np.uint64(0x100000001B3)


def _mix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (a bijection that spreads every input bit)."""
    h = h ^ (h >> np.uint64(33))
    h = h * _M1
    h = h ^ (h >> np.uint64(33))
    h = h * _M2
    return h ^ (h >> np.uint64(33))


def row_keys(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """A seeded 64-bit key per row of a float32 matrix, computed from the row's bytes
    only: the same row gets the same key wherever and in whatever order it is read."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise InvalidInputError(f"expected an n × d matrix, got shape {a.shape}")
    n, d = a.shape
    words = a.view(np.uint64) if d % 2 == 0 and d else a.view(np.uint32).astype(np.uint64)
    with np.errstate(over="ignore"):
        h = _mix(np.full(n, np.uint64(seed % 2**64) ^ np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(d), dtype=np.uint64))
        for j in range(words.shape[1]):
            h = (h ^ words[:, j]) * _PRIME
        return _mix(h)


def _check_n(n: Any) -> int:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise InvalidParameterError(f"n (the sample size) must be an integer >= 1, got {n!r}")
    return int(n)


def sample_local(x: Any, n: int, seed: int = 0) -> np.ndarray:
    """The sample :func:`sample` draws, from an in-memory matrix (NumPy or a Polars
    vector column; null rows skipped): the ``n`` rows of smallest :func:`row_keys`, in
    key order. It does not depend on the rows' order or partitioning."""

    n = _check_n(n)
    if isinstance(x, pl.Series) and x.null_count():
        x = x.drop_nulls()
    a = as_matrix(x)
    if not np.isfinite(a).all():
        row = int(np.flatnonzero(~np.isfinite(a).all(axis=1))[0])
        raise InvalidInputError(f"row {row} has NaN or inf")
    keys = row_keys(a, seed)
    order = np.argsort(keys, kind="stable")[:n]
    return a[order]


class _Pick:
    """Rows whose key is below ``bound`` (key, vector), per batch."""

    def __init__(self, column: str, seed: int, bound: int):
        self.column, self.seed, self.bound = column, seed, np.uint64(bound)

    def __call__(self, batch: Any):
        import pyarrow as pa

        table = _table(batch)
        where = _describe(table)
        try:
            s = _series(table, self.column, where)
            if s.null_count():
                s = s.drop_nulls()
            x = as_matrix(s, what=self.column) if len(s) else np.zeros((0, 0), dtype=np.float32)
            if len(x) and not np.isfinite(x).all():
                raise InvalidInputError(f"column '{self.column}' has NaN or inf")
            keys = row_keys(x, self.seed) if len(x) else np.zeros(0, dtype=np.uint64)
            sel = keys <= self.bound
            x, keys = x[sel], keys[sel]
            vec = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1]) if len(x) else \
                pa.array([], type=pa.list_(pa.float32()))
            return pa.table({"key": pa.array(keys, type=pa.uint64()), "vec": vec})
        except MmqError as e:
            raise _blame(e, where) from None


def sample(ds: Any, column: str, n: int, seed: int = 0) -> np.ndarray:
    """A seeded sample of ``n`` rows (all present rows when there are fewer) of the
    vector column ``column`` of a Ray dataset, drawn on the workers in one pass, as an
    ``n × d`` float32 matrix in key order: the rows of smallest :func:`row_keys`, so the
    same rows :func:`sample_local` draws from the whole column in memory, however the
    dataset is partitioned or ordered. The driver receives about ``n + 6√n`` rows."""
    import pyarrow as pa

    ray = _ray()
    n = _check_n(n)
    if not isinstance(ds, ray.data.Dataset):
        raise InvalidParameterError(f"expected a ray.data.Dataset, got {type(ds).__name__}")
    with errors():
        total = ds.count()
        frac = 1.0 if total <= n else min(1.0, (n + 6 * math.sqrt(n) + 16) / total)
        while True:
            bound = 2**64 - 1 if frac >= 1.0 else int(frac * 2**64)
            got = _map_batches(ds, _Pick, dict(column=column, seed=seed, bound=bound), batch_size=BATCH_ROWS,
                               compute=ray.data.ActorPoolStrategy(min_size=1)).to_arrow_refs()
            tables = [t for t in ray.get(got) if t.num_rows]
            if tables:
                t = pa.concat_tables([tb.cast(tables[0].schema) for tb in tables])
                keys = t.column("key").to_numpy()
                vec = t.column("vec").combine_chunks()
                d = vec.type.list_size
                x = vec.flatten().to_numpy(zero_copy_only=False).reshape(-1, d).astype(np.float32, copy=False)
            else:
                keys, x = np.zeros(0, dtype=np.uint64), np.zeros((0, 0), dtype=np.float32)
            if len(keys) >= n or frac >= 1.0:
                break
            frac = min(1.0, frac * 4)  # fewer than n below the bound (a rare draw): widen it
    if len(keys) == 0:
        raise InvalidInputError(f"column '{column}' has no present row to sample")
    order = np.argsort(keys, kind="stable")[:n]
    return np.ascontiguousarray(x[order])


def fit_quantizer(ds: Any, quantizer: Any, column: str = "image", n: Optional[int] = None,
                  seed: Optional[int] = None) -> Any:
    """Fit ``quantizer`` (an unfitted :class:`mmq.PQ`/:class:`mmq.RSPQ`) on
    :func:`sample` of ``ds[column]``; returns it. ``n`` defaults to what k-means uses
    anyway (``max_points_per_centroid · k`` rows), ``seed`` to the quantizer's. The
    result equals ``quantizer.fit(sample_local(x, n, seed))`` on one machine."""

    if not isinstance(quantizer, _Quantizer):
        raise InvalidParameterError(f"quantizer must be an mmq.PQ or mmq.RSPQ, got {type(quantizer).__name__}")
    n = quantizer.max_points_per_centroid * quantizer.k if n is None else n
    x = sample(ds, column, n, quantizer.seed if seed is None else seed)
    return quantizer.fit(x)


def fit_ray(classifier: Any, ds: Any, path: Union[str, os.PathLike], text: str = "text", label: str = "label",
            valid: Any = None, patience: Optional[int] = None, workers: Optional[int] = None,
            sample_rows: Optional[int] = None) -> Any:
    """Train ``classifier`` on a Ray dataset too big to hold as floats: fit each dense
    column's quantizer on a sample drawn across the cluster (:func:`fit_quantizer`),
    encode the column to codes on the workers, write text + labels + codes to Parquet
    under ``path`` (m bytes per row and dense column instead of 4·d), then fit the
    classifier streaming from ``pl.scan_parquet`` on this machine. Text-only and
    ``fusion="discrete"`` models (the ones that train on codes). Returns the classifier."""
    ray = _ray()

    if not isinstance(classifier, Classifier):
        raise InvalidParameterError(f"classifier must be an mmq.Classifier, got {type(classifier).__name__}")
    dense = dict(classifier._dense)
    if dense and classifier.fusion != "discrete":
        raise InvalidParameterError(f"fit_ray trains on codes: it needs fusion='discrete' (or a text-only model), "
                                    f"got fusion={classifier.fusion!r}")
    if not isinstance(ds, ray.data.Dataset):
        raise InvalidParameterError(f"expected a ray.data.Dataset, got {type(ds).__name__}")
    missing = [c for c in [text, label, *dense] if c not in ds.schema().names]
    if missing:
        raise InvalidInputError(f"the dataset has no column(s) {missing}; its columns are {ds.schema().names}")
    out = os.fspath(path)
    if os.path.exists(out) and os.listdir(out):
        raise InvalidParameterError(f"path '{out}' exists and is not empty: give a new folder for the Parquet files")
    encoded = ds
    for i, (name, q) in enumerate(dense.items()):
        if not q.is_fitted:
            fit_quantizer(ds, q, name, n=sample_rows)
        encoded = encode(encoded, q, column=name, replace=True, workers=workers,
                         keep=[text, label, *dense] if i == 0 else None)
    if not dense:
        encoded = ds.select_columns([text, label])
    with errors():
        encoded.write_parquet(out)
    lf = pl.scan_parquet(os.path.join(out, "*.parquet"))
    return classifier.fit(lf, text=text, label=label, valid=valid, patience=patience)


__all__ = ["Encode", "Tokenize", "Predict", "encode", "tokenize", "predict", "errors", "to_polars", "sample", "sample_local",
           "row_keys", "fit_quantizer", "fit_ray", "RAY_MIN", "RAY_MAX"]
