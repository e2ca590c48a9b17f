"""fastText's Python API over mmq models, for scripts written against ``import fasttext``.

    import mmq.fasttext as fasttext

    model = fasttext.train_supervised(input="train.txt", lr=0.5, epoch=25, wordNgrams=2)
    model.predict("Which baking dish is best to bake a banana bread ?", k=3)
    model.test("valid.txt")                   # (N, precision@1, recall@1)
    model.save_model("model.mmq")
    model = fasttext.load_model("model.mmq")

The names, camelCase arguments, return types and ``__label__`` prefixes are fastText's:
``predict`` gives ``(labels, probs)`` (a tuple of labels and a NumPy array for one line;
lists of them for a list of lines), ``k=-1`` means every label, ``test`` gives
``(N, p, r)``, ``test_label`` a dict label -> precision / recall / f1score. Differences,
each deliberate:

* probabilities of a model trained by mmq are its own (fastText adds 1e-5 to each
  before returning it);
* the model file is mmq's (``save_model`` writes it, ``load_model`` and ``mmq.load`` read
  it); ``load_model`` also imports a fastText ``.bin`` / ``.ftz`` supervised model, which
  then predicts fastText's labels and probabilities (its ``1e-5``, sigmoid table and hs
  pruning included) and keeps fastText's words (``get_words``);
* ``get_input_matrix`` has one row per token seen in training (mmq keeps no rows for
  unseen hash buckets), in the order of :attr:`FastText.token_ids`;
* options fastText uses only for word vectors (``ws``, ``t``) or that only pace its
  learning-rate updates (``lrUpdateRate``) are accepted and have no effect; options mmq
  does not have (``minCountLabel > 0``, ``autotuneModelSize``) are an
  :class:`~mmq.errors.InvalidParameterError`; ``minCount`` and ``pretrainedVectors`` are
  mmq's ``min_count`` and ``pretrained_vectors`` (not with autotune);
* ``thread`` defaults to all cores, as fastText's does; ``verbose >= 2`` shows mmq's
  progress bar.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

import numpy as np
import polars as pl

from mmq.autotune import autotune
from mmq.classifier import Classifier, load_classifier
from mmq.cli import LABEL_PREFIX, read_input
from mmq.errors import InvalidInputError, InvalidParameterError, MmqError

__all__ = ["train_supervised", "load_model", "FastText"]

_METRICS = {"f1": "f1", "accuracy": "accuracy"}


def _frame(path: Union[str, os.PathLike], label: str) -> pl.DataFrame:
    return read_input(os.fspath(path), "text", "label", label)


class FastText:
    """A trained mmq classifier behind fastText's model API."""

    def __init__(self, clf: Classifier, label: Optional[str] = None, words: Optional[pl.DataFrame] = None):
        self.classifier = clf
        # the prefix the model was trained with (stored in its file), unless told otherwise
        self.label = label if label is not None else clf._o.label_prefix
        self._words = words

    # -- prediction --------------------------------------------------------------
    def predict(self, text: Union[str, Sequence[str]], k: int = 1, threshold: float = 0.0,
                on_unicode_error: str = "strict"):
        """Labels and probabilities of one line (``(labels, probs)``) or of each line of a
        list (``([labels, ...], [probs, ...])``), most probable first; ``k=-1``: all."""
        one = isinstance(text, str)
        lines = [text] if one else list(text)
        for line in lines:
            if not isinstance(line, str):
                raise InvalidInputError(f"predict takes a string or a list of strings, got {type(line).__name__}")
            if "\n" in line:
                raise ValueError("predict processes one line at a time (remove '\\n')")
        n_labels = len(self.classifier.labels)
        k = n_labels if k == -1 else k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidParameterError(f"k must be an integer >= 1 or -1 (all labels), got {k!r}")
        k = min(k, n_labels)
        out = self.classifier.predict(lines, k=k, threshold=threshold)
        if k == 1:
            labs = [[] if v is None else [v] for v in out["label"].to_list()]
            probs = [[] if p is None else [p] for p in out["prob"].to_list()]
        else:
            labs = [v or [] for v in out["label"].to_list()]
            probs = [p or [] for p in out["prob"].to_list()]
        labs = [[self.label + v for v in row] for row in labs]
        arrays = [np.asarray(p, dtype=np.float32) for p in probs]
        if one:
            return tuple(labs[0]), arrays[0]
        return labs, arrays

    def test(self, path: Union[str, os.PathLike], k: int = 1, threshold: float = 0.0) -> tuple:
        """``(N, precision@k, recall@k)`` over the labelled lines of a fastText file."""
        r = self.classifier.test(_frame(path, self.label), k=k, threshold=threshold)
        return r.rows, r.precision, r.recall

    def test_label(self, path: Union[str, os.PathLike], k: int = 1, threshold: float = 0.0) -> dict:
        """Per label: ``{'__label__x': {'precision': ..., 'recall': ..., 'f1score': ...}}``."""
        r = self.classifier.test(_frame(path, self.label), k=k, threshold=threshold)
        return {self.label + row["label"]: {"precision": row["precision"], "recall": row["recall"],
                                            "f1score": row["f1"]}
                for row in r.per_label.iter_rows(named=True)}

    # -- inspection ---------------------------------------------------------------
    @property
    def labels(self) -> list:
        return self.get_labels()

    def get_labels(self, include_freq: bool = False, on_unicode_error: str = "strict"):
        """Labels, most frequent in training first (with ``include_freq``: and their counts)."""
        labs = [self.label + v for v in self.classifier.labels]
        if not include_freq:
            return labs
        return labs, np.asarray(self.classifier._model.label_counts, dtype=np.int64)

    @property
    def words(self) -> list:
        return self.get_words()

    def get_words(self, include_freq: bool = False, on_unicode_error: str = "strict"):
        """The training file's words, most frequent first (with their counts); fastText's
        end-of-sentence token ``</s>`` counts one per line. Known only for a model trained
        in this process or imported from a fastText file (an mmq model file keeps hashed
        tokens, not words)."""
        m = self.classifier._model
        vocab = m.vocab() if hasattr(m, "vocab") else None
        if vocab is not None:
            return (vocab[0], np.asarray(vocab[1], dtype=np.int64)) if include_freq else vocab[0]
        if self._words is None:
            raise MmqError("this model was loaded from a file, which keeps hashed tokens, not words: "
                           "get_words needs the model returned by train_supervised")
        words = self._words["word"].to_list()
        return (words, self._words["count"].to_numpy()) if include_freq else words

    def get_dimension(self) -> int:
        return int(self.classifier.dim)

    def is_quantized(self) -> bool:
        return self.classifier.quantized is not None

    def quantize(self, input: Union[str, os.PathLike, None] = None, qout: bool = False, cutoff: int = 0,
                 retrain: bool = False, epoch: Optional[int] = None, lr: Optional[float] = None,
                 thread: Optional[int] = None, verbose: Optional[int] = None, dsub: int = 2,
                 qnorm: bool = False) -> None:
        """Compress the model in place (:meth:`mmq.Classifier.quantize`): ``cutoff`` rows
        of largest norm kept, ``dsub`` dims per byte, ``qnorm``, ``qout``; with ``retrain``
        (and ``cutoff``) the kept rows are trained again on ``input``, as fastText does."""
        if retrain and input is None:
            raise InvalidParameterError("quantize(retrain=True) needs input=<path of the training file>")
        clf = self.classifier
        if thread is not None:
            clf.threads = thread
        if verbose is not None:
            clf.progress = verbose >= 2
        data = _frame(input, self.label) if retrain and cutoff else None
        clf.quantize(data, cutoff=cutoff, dsub=dsub, qnorm=qnorm, qout=qout, retrain=bool(retrain and cutoff),
                     epoch=epoch, lr=lr)

    def _bottleneck(self, what: str) -> Any:
        m = self.classifier._fitted()
        if self.classifier.head != "bottleneck" or not hasattr(m, "embeddings"):
            raise MmqError(f"{what} needs a text model with fastText's embedding bottleneck "
                           f"(head='bottleneck'), got head={self.classifier.head!r}, fusion={self.classifier.fusion!r}")
        return m

    def _mean_rows(self, ids: list) -> np.ndarray:
        m = self._bottleneck("a vector")
        if not ids:
            return np.zeros(self.get_dimension(), dtype=np.float32)
        rows = m.embeddings([int(i) for i in ids])
        known = rows[~np.isnan(rows).any(axis=1)]
        if len(known) == 0:
            return np.zeros(rows.shape[1], dtype=np.float32)
        return known.mean(axis=0).astype(np.float32)

    def get_sentence_vector(self, text: str) -> np.ndarray:
        """The model's hidden vector of one line: the mean of the rows of its tokens known
        to the model (words, char and word n-grams, end of sentence)."""
        if "\n" in text:
            raise ValueError("predict processes one line at a time (remove '\\n')")
        return self._mean_rows(self.classifier.tokenize([text]).to_list()[0] or [])

    def get_nearest_neighbors(self, word: str, k: int = 10, on_unicode_error: str = "strict") -> list:
        """``[(similarity, word), ...]``: the ``k`` words of the training file (or of an
        imported fastText model's dictionary) nearest to ``word`` by cosine
        (:meth:`mmq.Classifier.nearest`)."""
        words = None if self._words is None else self._words["word"].to_list()
        return self.classifier.nearest(word, k, words=words)

    def get_word_vector(self, word: str) -> np.ndarray:
        """The mean of the rows of a word and its char n-grams (zeros when none is known)."""
        return self._mean_rows(self._bottleneck("a vector").word_ids(word))

    @property
    def token_ids(self) -> np.ndarray:
        """The raw (hashed) token id of each row of :meth:`get_input_matrix`."""
        return np.asarray(self._bottleneck("token_ids").token_ids(), dtype=np.uint32)

    def get_input_matrix(self) -> np.ndarray:
        """One row per token seen in training (see :attr:`token_ids`), ``dim`` wide."""
        m = self._bottleneck("get_input_matrix")
        return m.embeddings([int(i) for i in m.token_ids()])

    def get_output_matrix(self) -> np.ndarray:
        return self._bottleneck("get_output_matrix").output_matrix()

    # -- persistence ---------------------------------------------------------------
    def save_model(self, path: Union[str, os.PathLike]) -> None:
        """Write the model (mmq's file format)."""
        self.classifier.save(path)


def train_supervised(input: Union[str, os.PathLike, None] = None, lr: float = 0.1, dim: int = 100, ws: int = 5,
                     epoch: int = 5, minCount: int = 1, minCountLabel: int = 0, minn: int = 0, maxn: int = 0,
                     neg: int = 5, wordNgrams: int = 1, loss: str = "softmax", bucket: int = 2_000_000,
                     thread: Optional[int] = None, lrUpdateRate: int = 100, t: float = 1e-4,
                     label: str = LABEL_PREFIX, verbose: int = 2, pretrainedVectors: str = "", seed: int = 0,
                     autotuneValidationFile: str = "", autotuneMetric: str = "f1", autotunePredictions: int = 1,
                     autotuneDuration: int = 300, autotuneModelSize: str = "") -> FastText:
    """Train a supervised classifier on a fastText-format file (``__label__x text`` lines),
    with fastText's argument names and defaults. With ``autotuneValidationFile``:
    :func:`mmq.autotune` on it for ``autotuneDuration`` seconds (``autotuneMetric``
    ``'f1'`` or ``'accuracy'``)."""
    if input is None:
        raise InvalidParameterError("train_supervised needs input=<path of a fastText-format training file>")
    for name, value, ok in (("minCountLabel", minCountLabel, minCountLabel == 0),
                            ("autotuneModelSize", autotuneModelSize, not autotuneModelSize)):
        if not ok:
            raise InvalidParameterError(f"{name}={value!r} is not supported by mmq (it keeps every label; no "
                                        "size-constrained autotune)")
    if autotuneValidationFile and (minCount != 1 or pretrainedVectors):
        raise InvalidParameterError("minCount and pretrainedVectors are not used by mmq's autotune; leave them out "
                                    "with autotuneValidationFile")
    if autotunePredictions != 1:
        raise InvalidParameterError(f"autotunePredictions must be 1 (mmq's autotune scores the top label), "
                                    f"got {autotunePredictions!r}")
    df = _frame(input, label)
    words = (df.select(pl.col("text").str.split(" ").list.concat(pl.lit(["</s>"])).alias("word"))
             .explode("word").filter(pl.col("word") != "")
             .group_by("word").len("count").filter(pl.col("count") >= minCount)
             .sort(["count", "word"], descending=[True, False]))
    progress = verbose >= 2
    if autotuneValidationFile:
        if autotuneMetric not in _METRICS:
            raise InvalidParameterError(f"autotuneMetric must be one of {sorted(_METRICS)}, got {autotuneMetric!r}")
        r = autotune(df, _frame(autotuneValidationFile, label), budget_s=float(autotuneDuration),
                     metric=_METRICS[autotuneMetric], seed=seed, threads=thread, progress=progress,
                     label_prefix=label)
        return FastText(r.classifier, label, words)
    clf = Classifier(lr=lr, dim=dim, epoch=epoch, minn=minn, maxn=maxn, neg=neg, word_ngrams=wordNgrams, loss=loss,
                     bucket=bucket, threads=thread, seed=seed, progress=progress, label_prefix=label,
                     min_count=minCount, pretrained_vectors=pretrainedVectors or None)
    clf.fit(df)
    return FastText(clf, label, words)


def load_model(path: Union[str, os.PathLike]) -> FastText:
    """A model written by :meth:`FastText.save_model` (or any mmq classifier file), or a
    fastText supervised model (``.bin`` / ``.ftz``), imported: same labels, same
    probabilities."""
    return FastText(load_classifier(path))
