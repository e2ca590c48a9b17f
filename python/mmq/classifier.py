"""The text classifier: fastText's architecture, trained by mmq's Rust core."""
from __future__ import annotations

import inspect
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import polars as pl

from mmq import _mmq, late, sets
from mmq._input import (apply_transform, as_codes, as_frame, as_matrix, check_k, check_threshold, collect, frame_of,
                        read_vectors,
                        frame_text_column, is_frame, label_series, labels_of, text_series, texts_of, valid_frame)
from mmq._options import (BLENDS, CONTINUOUS, FUSIONS, HEAD_DEFAULTS, HEADS, L2_MODES, LOSSES, POOLS, TOKEN_FUSIONS,
                          TOKENIZER_FLAGS, LABEL_PREFIX, Fusion, GBlend, Tokenizer)
from mmq._progress import progress_for
from mmq._stream import fit_classifier
from mmq.errors import InvalidInputError, InvalidParameterError, MmqError, ModelFileError, NotFittedError
from mmq.ensemble import EnsembleModel
from mmq.late import ConcatModel, LateModel
from mmq.quant import _Quantizer

TextInput = Union[pl.DataFrame, pl.LazyFrame, pl.Series, Sequence[str], str]


def _dense_spec(dense: Any, fusion: str) -> dict:
    """The ``dense`` parameter as a dict, column name → quantizer (discrete fusion) or
    None (the fusions that read the vectors themselves); ``dense`` may be a dict, a list
    of names or None."""
    if isinstance(dense, dict):
        spec = dict(dense)
    elif isinstance(dense, (list, tuple)):
        spec = dict.fromkeys(dense)
    else:
        spec = {}
    if fusion in CONTINUOUS or fusion in ("late", "concat", "ensemble"):
        spec = dict.fromkeys(spec)
    return spec


@dataclass
class TestResult:
    """What :meth:`Classifier.test` returns: fastText's N, P@k, R@k, plus per-label scores."""

    rows: int
    k: int
    precision: float
    recall: float
    per_label: pl.DataFrame

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)

    def __str__(self) -> str:
        return f"N\t{self.rows}\nP@{self.k}\t{self.precision:.3f}\nR@{self.k}\t{self.recall:.3f}"


class Classifier:
    """A fastText-style classifier over hashed word, word n-gram and char n-gram tokens.

    Parameters follow fastText's names and defaults (``lr=0.1, dim=100, epoch=5,
    word_ngrams=1, minn=maxn=0, neg=5, loss='softmax', bucket=2_000_000``).
    ``head='linear'`` maps the hashed features straight to the labels (no ``dim``
    bottleneck; AdaGrad); its defaults are ``lr=0.2, word_ngrams=2, l2=1e-4``.
    ``l2_mode`` says how ``l2`` reaches its weights: ``'lazy'`` (default, VW's and
    fastText's way: each update shrinks the weights it touches, so frequent tokens most)
    or ``'full'`` (the whole objective's penalty, as scikit-learn's LogisticRegression with
    ``C = 1 / (n_rows · l2)``: a token's ``l2`` scaled by n_rows / its row count, so rare
    n-grams are shrunk as much as frequent ones; better with many epochs, use a smaller
    ``l2``, e.g. 1e-5).
    ``threads`` defaults to all cores; ``threads=1`` with a ``seed`` is deterministic.
    ``split_cjk`` cuts text written without spaces (Chinese, Japanese, Thai...) into one
    word per character, so such text never becomes one token per sentence.
    ``lowercase=True`` lower-cases the text (Unicode) before hashing, for every text
    column, at training and at prediction alike (fastText hashes text as given).
    ``split_punct=True`` cuts every punctuation or symbol character (Unicode category P*
    or S*: ``.,!?#@``, currency, emoji) out of the words as a word of its own
    (``"great!"`` → ``great``, ``!``), the punctuation splitting fastText's tutorials do
    with ``sed``; off by default (fastText's whitespace words). ``drop_punct=True``
    drops those characters instead, cutting words there (``"#love!"`` → ``love``,
    ``"don't"`` → ``don``, ``t``), as most word tokenizers do; it excludes ``split_punct``.
    ``label_prefix`` is the label prefix of fastText-format text (fastText's ``-label``):
    it changes no token, is saved with the model, and the command line and
    :mod:`mmq.fasttext` read and write such text with it. ``min_count`` is fastText's
    ``-minCount``: a word seen fewer times in training gets no row of its own (its
    n-grams still do). ``pretrained_vectors`` (fastText's ``-pretrainedVectors``: the
    path of a ``.vec`` text file, or a dict word → vector of length ``dim``) gives the
    training words' rows their starting values (bottleneck head; text and discrete
    fusion).

    The options can be grouped by the part they configure, and the flat keywords keep
    working beside them: ``tokenizer=mmq.Tokenizer(word_ngrams=2, minn=2, maxn=5,
    lowercase=True)`` (the tokenizer's and dictionary's options), ``fusion=mmq.Fusion(
    "deepset", pool="max", alpha=0.5)`` (the fusion mode and its options) and
    ``blend=mmq.GBlend(holdout=0.2, window=2)`` (Gradient-Blending). A group's field
    left out takes the flat keyword's value; a field given and a flat keyword set to
    another value than its default is an :class:`InvalidParameterError` naming both.

    It is a scikit-learn estimator too (``get_params``, ``set_params``, ``clone``,
    ``GridSearchCV``, ``Pipeline``): ``fit(texts, y)`` makes :meth:`predict` return a
    NumPy array of :attr:`classes_` values and :meth:`predict_proba` a NumPy array whose
    columns follow :attr:`classes_` (sorted); ``fit(df)`` keeps mmq's frames. Parameters
    are stored as given (``lr=None`` stays None until fit picks the head's default).
    See docs/sklearn.md.

    Example:
        >>> import polars as pl, mmq
        >>> df = pl.DataFrame({"text": ["good movie", "bad film", "great", "awful"] * 20,
        ...                    "label": ["pos", "neg", "pos", "neg"] * 20})
        >>> clf = mmq.Classifier(dim=10, epoch=20, lr=0.5, threads=1, progress=False).fit(df)
        >>> clf.predict(["good film"])["label"].to_list()
        ['pos']
    """

    def __init__(
        self,
        dim: int = 100,
        epoch: int = 5,
        lr: Optional[float] = None,
        word_ngrams: Optional[int] = None,
        minn: int = 0,
        maxn: int = 0,
        bucket: int = 2_000_000,
        loss: str = "softmax",
        neg: int = 5,
        threads: Optional[int] = None,
        seed: int = 0,
        split_cjk: bool = True,
        progress: Optional[bool] = None,
        dense: Union[dict, Sequence[str], None] = (),
        fusion: Union[str, Fusion] = "discrete",
        alpha: float = 1.0,
        rank: Optional[int] = None,
        pool: str = "mean",
        outer_pool: str = "mean",
        blend: Union[str, GBlend, None] = None,
        holdout: float = 0.1,
        blend_window: int = 1,
        lowercase: bool = False,
        split_punct: bool = False,
        drop_punct: bool = False,
        head: str = "bottleneck",
        l2: Optional[float] = None,
        l2_mode: str = "lazy",
        idf: bool = False,
        dense_lr: float = 0.1,
        dense_epoch: int = 20,
        modality_dropout: float = 0.0,
        class_weight: Union[str, Mapping[str, float], None] = None,
        label_prefix: str = "__label__",
        min_count: int = 1,
        pretrained_vectors: Union[str, os.PathLike, Mapping[str, Any], None] = None,
        tokenizer: Optional[Tokenizer] = None,
    ):
        # Every parameter is stored as given, as scikit-learn requires (clone() and
        # get_params() must see the very objects passed in). What they resolve to (the
        # head's defaults for lr, word_ngrams and l2; threads=None → all cores; the dense
        # spec as a dict) is computed by _check_params: here, so that a wrong value fails
        # at once, and again by fit, after any set_params().
        self.dim, self.epoch, self.lr, self.word_ngrams = dim, epoch, lr, word_ngrams
        self.minn, self.maxn, self.bucket, self.loss, self.neg = minn, maxn, bucket, loss, neg
        self.threads, self.seed, self.split_cjk, self.progress = threads, seed, split_cjk, progress
        self.dense, self.fusion, self.alpha, self.rank, self.pool = dense, fusion, alpha, rank, pool
        self.outer_pool, self.blend, self.holdout, self.blend_window = outer_pool, blend, holdout, blend_window
        self.lowercase, self.split_punct, self.drop_punct = lowercase, split_punct, drop_punct
        self.head, self.l2, self.idf, self.dense_lr, self.dense_epoch = head, l2, idf, dense_lr, dense_epoch
        self.modality_dropout, self.l2_mode, self.class_weight = modality_dropout, l2_mode, class_weight
        self.label_prefix, self.min_count, self.pretrained_vectors = label_prefix, min_count, pretrained_vectors
        self.tokenizer = tokenizer
        self._model: Optional[Any] = None
        # Modalities of a fitted set model (deepset, attention, G-Blend, many columns).
        self._mods: Optional[list] = None
        # Set by a scikit-learn-style fit(X, y): the text column of a frame X, and
        # classes_ (y's own values, sorted). None after fit(df) and mmq.load().
        self._sk: Optional[dict] = None
        self._classes: Optional[np.ndarray] = None
        self._check_params()

    @property
    def _o(self) -> SimpleNamespace:
        """The options as they apply: the flat keywords with the groups
        (``tokenizer=Tokenizer(...)``, ``fusion=Fusion(...)``, ``blend=GBlend(...)``)
        resolved into them; ``fusion`` is the mode's name and ``blend`` None or
        ``"gblend"`` / ``"gblend_offline"``. Every reader of an option goes through this."""
        o = {k: getattr(self, k) for k in PARAMS if k != "tokenizer"}

        def merge(group: Any, pairs: Sequence[tuple], shown: str) -> None:
            for field, flat in pairs:
                v = getattr(group, field)
                if v is None:
                    continue
                if o[flat] is not None and o[flat] != DEFAULTS[flat] and o[flat] != v:
                    raise InvalidParameterError(
                        f"{flat}={o[flat]!r} and {shown}({field}={v!r}) both set it; give one of them")
                o[flat] = v

        tok, fusion, blend = self.tokenizer, self.fusion, self.blend
        if tok is not None:
            if not isinstance(tok, Tokenizer):
                raise InvalidParameterError(f"tokenizer must be an mmq.Tokenizer or None, got {type(tok).__name__}")
            merge(tok, [(f, f) for f in Tokenizer.FIELDS], "tokenizer=Tokenizer")
        if isinstance(fusion, Fusion):
            o["fusion"] = "discrete"
            merge(fusion, [(f, "fusion" if f == "mode" else f) for f in Fusion.FIELDS], "fusion=Fusion")
        elif not isinstance(fusion, str):
            raise InvalidParameterError(f"fusion must be one of {FUSIONS} or an mmq.Fusion, got "
                                        f"{type(fusion).__name__}")
        if isinstance(blend, GBlend):
            if blend.offline is not None and not isinstance(blend.offline, bool):
                raise InvalidParameterError(f"GBlend(offline=...) must be True or False, got {blend.offline!r}")
            o["blend"] = "gblend_offline" if blend.offline else "gblend"
            merge(blend, [("holdout", "holdout"), ("window", "blend_window")], "blend=GBlend")
        return SimpleNamespace(**o)

    def _check_params(self) -> dict:
        """Check the parameters as they are now; return what they resolve to: ``lr``,
        ``word_ngrams``, ``l2``, ``threads`` and ``dense`` (a dict name → quantizer or None)."""
        o = self._o
        dim, epoch, lr, word_ngrams, minn, maxn = o.dim, o.epoch, o.lr, o.word_ngrams, o.minn, o.maxn
        bucket, loss, neg, threads, seed, dense = o.bucket, o.loss, o.neg, o.threads, o.seed, o.dense
        fusion, alpha, rank, pool, outer_pool = o.fusion, o.alpha, o.rank, o.pool, o.outer_pool
        blend, holdout, blend_window, head, l2 = o.blend, o.holdout, o.blend_window, o.head, o.l2
        idf, dense_lr, dense_epoch, modality_dropout = o.idf, o.dense_lr, o.dense_epoch, o.modality_dropout
        if fusion == "ensemble":
            raise InvalidParameterError("an ensemble is made of fitted models by mmq.ensemble([...]) or "
                                        "mmq.autotune(..., ensemble=k), not trained by fit")
        if loss not in LOSSES:
            raise InvalidParameterError(f"loss must be one of {LOSSES}, got {loss!r}")
        if head not in HEADS:
            raise InvalidParameterError(f"head must be one of {HEADS}, got {head!r}")
        # None: the head's default (fastText's for the bottleneck; the linear head's were
        # measured on the text sets of ../shared/data, see docs/better_answers.md)
        lr = HEAD_DEFAULTS[head]["lr"] if lr is None else lr
        word_ngrams = HEAD_DEFAULTS[head]["word_ngrams"] if word_ngrams is None else word_ngrams
        l2 = HEAD_DEFAULTS[head]["l2"] if l2 is None else l2
        if head == "linear" and loss == "hs":
            raise InvalidParameterError("head='linear' trains with loss 'softmax', 'ns' or 'ova', got loss='hs'")
        if head == "linear" and fusion not in ("discrete", "late", "concat"):
            raise InvalidParameterError(
                f"head='linear' works with text and discrete fusion (code tokens), got fusion={fusion!r}")
        if head == "linear" and blend is not None:
            raise InvalidParameterError(f"head='linear' has no G-Blend, got blend={blend!r}")
        if not (isinstance(l2, (int, float)) and not isinstance(l2, bool) and np.isfinite(l2) and l2 >= 0):
            raise InvalidParameterError(f"l2 must be a finite number >= 0, got {l2!r}")
        if not isinstance(idf, bool):
            raise InvalidParameterError(f"idf must be True or False, got {idf!r}")
        if self.l2_mode not in L2_MODES:
            raise InvalidParameterError(f"l2_mode must be one of {L2_MODES}, got {self.l2_mode!r}")
        if self.l2_mode != "lazy" and head != "linear":
            raise InvalidParameterError(f"l2_mode={self.l2_mode!r} is for head='linear', got head={head!r}")
        if not (isinstance(dense_lr, (int, float)) and not isinstance(dense_lr, bool) and np.isfinite(dense_lr)
                and dense_lr > 0):
            raise InvalidParameterError(f"dense_lr must be a finite number > 0, got {dense_lr!r}")
        if isinstance(dense_epoch, bool) or not isinstance(dense_epoch, int) or dense_epoch < 1:
            raise InvalidParameterError(f"dense_epoch must be an integer >= 1, got {dense_epoch!r}")
        if isinstance(modality_dropout, bool) or not isinstance(modality_dropout, (int, float)) \
                or not (0 <= modality_dropout < 1):
            raise InvalidParameterError(f"modality_dropout must be a probability in [0, 1), got {modality_dropout!r}")
        if modality_dropout and (fusion not in ("discrete", "concat") or blend is not None):
            raise InvalidParameterError(
                f"modality_dropout works with fusion='discrete' or 'concat' (one text column and dense columns), "
                f"got fusion={fusion!r}")
        if fusion == "concat" and head != "linear":
            raise InvalidParameterError("fusion='concat' joins the dense vectors to the linear head's features: "
                                        f"set head='linear' (got head={head!r})")
        if fusion in ("late", "concat") and not dense:
            raise InvalidParameterError(f"fusion={fusion!r} needs dense column(s): dense=['image']")
        if fusion == "late":
            if loss not in ("softmax", "hs"):
                raise InvalidParameterError(f"fusion='late' combines probabilities: loss must be 'softmax' or 'hs', "
                                            f"got {loss!r}")
            if blend is not None:
                raise InvalidParameterError(f"fusion='late' has no G-Blend, got blend={blend!r}")
        ints = dict(dim=dim, epoch=epoch, word_ngrams=word_ngrams, bucket=bucket, neg=neg)
        for name, v in ints.items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InvalidParameterError(f"{name} must be an integer >= 1, got {v!r}")
        for name, v in dict(minn=minn, maxn=maxn, seed=seed).items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise InvalidParameterError(f"{name} must be an integer >= 0, got {v!r}")
        if bucket >= 2**32:
            raise InvalidParameterError(f"bucket must be < 2**32, got {bucket}")
        if maxn > 0 and not (1 <= minn <= maxn):
            raise InvalidParameterError(f"char n-grams need 1 <= minn <= maxn, got minn={minn} maxn={maxn}")
        if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0 and np.isfinite(lr)):
            raise InvalidParameterError(f"lr must be a finite number > 0, got {lr!r}")
        if threads is None:
            threads = os.cpu_count() or 1
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise InvalidParameterError(f"threads must be an integer >= 1, got {threads!r}")
        for name, v in dict(lowercase=self._o.lowercase, split_punct=self._o.split_punct,
                            drop_punct=self._o.drop_punct).items():
            if not isinstance(v, bool):
                raise InvalidParameterError(f"{name} must be True or False, got {v!r}")
        lp = self._o.label_prefix
        if not (isinstance(lp, str) and lp and not any(c.isspace() for c in lp) and len(lp.encode()) <= 256):
            raise InvalidParameterError(f"label_prefix must be a string of 1 to 256 bytes without whitespace, "
                                        f"got {lp!r}")
        if self._o.split_punct and self._o.drop_punct:
            raise InvalidParameterError("split_punct and drop_punct exclude each other (punctuation is "
                                        "either kept as words or dropped); set one of them")
        if fusion not in FUSIONS:
            raise InvalidParameterError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if not (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and np.isfinite(alpha)
                and alpha >= 0):
            raise InvalidParameterError(f"alpha must be a finite number >= 0, got {alpha!r}")

        if dense is not None and not isinstance(dense, (list, tuple, dict)):
            raise InvalidParameterError(
                f"dense must be a dict (column → mmq.PQ/RSPQ), a list of column names or None, "
                f"got {type(dense).__name__}")
        spec = _dense_spec(dense, fusion)
        for name, q in (dict(dense) if isinstance(dense, dict) else dict.fromkeys(dense or ())).items():
            if not isinstance(name, str):
                raise InvalidParameterError(f"dense column names must be str, got {name!r}")
            if fusion in TOKEN_FUSIONS and not isinstance(q, _Quantizer):
                raise InvalidParameterError(
                    f"dense['{name}'] must be an mmq.PQ or mmq.RSPQ quantizer with fusion={fusion!r}, "
                    f"got {type(q).__name__}")
        if fusion in CONTINUOUS:
            if len(spec) != 1:
                raise InvalidParameterError(
                    f"fusion={fusion!r} fuses the text with exactly one dense column, got {list(spec)}")
        if rank is not None and (not isinstance(rank, int) or isinstance(rank, bool) or rank < 1):
            raise InvalidParameterError(f"rank must be an integer >= 1, got {rank!r}")

        for name, v in dict(pool=pool, outer_pool=outer_pool).items():
            if v not in POOLS:
                raise InvalidParameterError(f"{name} must be one of {POOLS}, got {v!r}")
        if blend not in BLENDS:
            raise InvalidParameterError(f"blend must be one of {BLENDS}, got {blend!r}")
        if blend is not None and fusion not in TOKEN_FUSIONS:
            raise InvalidParameterError(
                f"blend={blend!r} works with fusion in {TOKEN_FUSIONS}, got fusion={fusion!r}")
        if blend is not None and loss != "softmax":
            raise InvalidParameterError(f"blend={blend!r} trains with loss='softmax', got loss={loss!r}")
        if not (isinstance(holdout, (int, float)) and not isinstance(holdout, bool) and 0 < holdout <= 0.5):
            raise InvalidParameterError(f"holdout must be a number in (0, 0.5], got {holdout!r}")
        if isinstance(blend_window, bool) or not isinstance(blend_window, int) or blend_window < 1:
            raise InvalidParameterError(f"blend_window must be an int >= 1 (epochs), got {blend_window!r}")
        cw = self.class_weight
        if cw is not None:
            if isinstance(cw, str):
                if cw != "balanced":
                    raise InvalidParameterError(f"class_weight must be None, 'balanced' or a dict label -> weight, "
                                                f"got {cw!r}")
            elif isinstance(cw, Mapping):
                bad = {k: v for k, v in cw.items() if isinstance(v, bool) or not isinstance(v, (int, float))
                       or not math.isfinite(v) or v < 0}
                if bad:
                    raise InvalidParameterError(f"class_weight values must be finite numbers >= 0, got {bad}")
            else:
                raise InvalidParameterError(f"class_weight must be None, 'balanced' or a dict label -> weight, "
                                            f"got {type(cw).__name__}")
            if fusion != "discrete" or blend is not None:
                raise InvalidParameterError(f"class_weight works with text and discrete-fusion models (one trainer "
                                            f"for every loss); not yet with fusion={fusion!r}, blend={blend!r}")
        mc, pv = self._o.min_count, self.pretrained_vectors
        if isinstance(mc, bool) or not isinstance(mc, int) or mc < 1:
            raise InvalidParameterError(f"min_count must be an integer >= 1 (1 keeps every word), got {mc!r}")
        if pv is not None and not isinstance(pv, (str, os.PathLike, Mapping)):
            raise InvalidParameterError(f"pretrained_vectors must be the path of a .vec file or a dict word -> "
                                        f"vector, got {type(pv).__name__}")
        for name, on in (("min_count", mc != 1), ("pretrained_vectors", pv is not None)):
            if on and (fusion != "discrete" or blend is not None):
                raise InvalidParameterError(f"{name} works with text and discrete-fusion models; not yet with "
                                            f"fusion={fusion!r}, blend={blend!r}")
            if on and name == "pretrained_vectors" and head == "linear":
                raise InvalidParameterError("pretrained_vectors needs head='bottleneck' (the linear head has no "
                                            "word vectors)")
        return dict(lr=float(lr), word_ngrams=word_ngrams, l2=float(l2), threads=threads, dense=spec)

    def _class_weights(self, y: pl.Series) -> Optional[dict]:
        """``class_weight`` as a dict label → weight for the core (labels not named: 1).
        ``"balanced"``: scikit-learn's ``n / (n_classes · count(label))``, over the label
        occurrences (the rows, for single-label data)."""
        cw = self.class_weight
        if cw is None:
            return None
        if cw == "balanced":
            labs = (y.explode() if isinstance(y.dtype, pl.List) else y).drop_nulls().cast(pl.String)
            counts = labs.value_counts()
            n, k = len(labs), counts.height
            return {name: n / (k * c) for name, c in counts.iter_rows()}
        return {str(k): float(v) for k, v in cw.items()}

    @property
    def _dense(self) -> dict:
        """The dense columns as a dict, name → quantizer (discrete fusion) or None."""
        return _dense_spec(self.dense, self._o.fusion)

    # -- configuration -------------------------------------------------------------
    def _config(self) -> dict:
        r = self._check_params()
        return {
            "dim": self.dim,
            "epoch": self.epoch,
            "lr": r["lr"],
            "loss": self.loss,
            "neg": self.neg,
            "threads": r["threads"],
            "seed": self.seed,
            "alpha": float(self._o.alpha),
            "head": self.head,
            "l2": r["l2"],
            "l2_mode": self.l2_mode,
            "idf": self.idf,
            "modality_dropout": float(self._o.modality_dropout),
            **({} if self._o.min_count == 1 else {"min_count": self._o.min_count}),
            "tokenizer": {
                "word_ngrams": r["word_ngrams"],
                "minn": self._o.minn,
                "maxn": self._o.maxn,
                "bucket": self._o.bucket,
                "split_cjk": self._o.split_cjk,
                **self._tokenizer_flags(),
                # stored only when it is not fastText's, so other files stay as they were
                **({} if self._o.label_prefix == LABEL_PREFIX else {"label_prefix": self._o.label_prefix}),
            },
        }

    # -- scikit-learn's estimator protocol -------------------------------------------
    def get_params(self, deep: bool = True) -> dict:
        """The constructor's parameters, name → value, as given (``lr=None`` stays None:
        the head's default is chosen at fit). ``deep`` is accepted for scikit-learn; no
        parameter is an estimator of its own, so both answers are the same."""
        out = {k: getattr(self, k) for k in PARAMS}
        if deep:  # scikit-learn's nested names: tokenizer__word_ngrams, fusion__pool, blend__holdout
            for k in ("tokenizer", "fusion", "blend"):
                group = out[k]
                if hasattr(group, "get_params"):
                    out.update({f"{k}__{f}": v for f, v in group.get_params().items()})
        return out

    def set_params(self, **params: Any) -> "Classifier":
        """Set constructor parameters by name; returns self (scikit-learn's protocol, used
        by ``GridSearchCV`` and ``Pipeline``). The values are checked by the next
        :meth:`fit`, which raises :class:`InvalidParameterError` naming the parameter, so
        that parameters that depend on each other (``head`` and ``lr``...) can be set in
        any order. A fitted model keeps its weights until it is fitted again."""
        unknown = [k for k in params if k.split("__", 1)[0] not in PARAMS]
        if unknown:
            raise InvalidParameterError(
                f"unknown parameter(s) {unknown} for Classifier; the parameters are {list(PARAMS)}")
        for k, v in params.items():  # plain names first, so that fusion=Fusion(), fusion__pool=... works
            if "__" not in k:
                setattr(self, k, v)
        for k, v in params.items():
            if "__" in k:
                head, field = k.split("__", 1)
                group = getattr(self, head)
                if not hasattr(group, "set_params"):
                    raise InvalidParameterError(f"{k}: {head} is {group!r}, not an option group "
                                                f"(mmq.Tokenizer, mmq.Fusion or mmq.GBlend)")
                try:
                    group.set_params(**{field: v})
                except TypeError as e:
                    raise InvalidParameterError(str(e)) from None
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return self._model is not None

    def __sklearn_tags__(self):
        """scikit-learn's tags: a classifier of texts. X is a 1-D array-like of str (or a
        frame with a text column), not a numeric matrix, so ``two_d_array`` is False;
        scikit-learn's ``check_estimator`` therefore skips its checks on numeric data
        (docs/sklearn.md lists which apply and how the tests run them)."""
        # scikit-learn is optional: only scikit-learn calls this, so it is importable here.
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        threads = self.threads if self.threads is not None else (os.cpu_count() or 1)
        return Tags(
            estimator_type="classifier",
            target_tags=TargetTags(required=True, one_d_labels=True),
            classifier_tags=ClassifierTags(multi_class=True, multi_label=False),
            input_tags=InputTags(one_d_array=True, two_d_array=False, string=True),
            # Hogwild training with several threads is not bit-for-bit reproducible.
            non_deterministic=threads != 1,
            requires_fit=True,
        )

    @property
    def classes_(self) -> np.ndarray:
        """The labels, sorted (a NumPy array): after ``fit(X, y)`` y's own values
        (``np.unique(y)``), after ``fit(df)`` or :func:`mmq.load` the label names. The
        columns of the scikit-learn-style :meth:`predict_proba` and
        :meth:`decision_function` come in this order; :attr:`labels` is the model's own
        order (most frequent in training first)."""
        if self._model is None:
            # AttributeError, as for any fitted attribute: hasattr(clf, "classes_") is False
            raise AttributeError("classes_: this Classifier is not fitted; call fit() first")
        if self._classes is not None:
            return self._classes
        return np.array(sorted(self._model.labels))

    def _tokenizer_flags(self) -> dict:
        return {k: getattr(self._o, k) for k in TOKENIZER_FLAGS}

    def __repr__(self) -> str:
        state = "fitted" if self._model is not None else "not fitted"
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"Classifier({args}) [{state}]"

    @property
    def temperature(self) -> float:
        """The probabilities' temperature (1.0 unless calibrated on a validation frame)."""
        m = self._fitted()
        if self._o.fusion in ("late", "ensemble"):
            return m.temperature
        return float(json.loads(m.config_json).get("temperature", 1.0))

    @property
    def labels(self) -> list[str]:
        """Label names, most frequent in training first."""
        return self._fitted().labels

    def _fitted(self):
        if self._model is None:
            raise NotFittedError("this Classifier is not fitted: call fit() or mmq.load() first")
        return self._model

    # -- training ------------------------------------------------------------------
    def fit(self, data: Any, text: Any = "text", label: str = "label", categorical: Optional[Sequence[str]] = None,
            valid: Any = None, patience: Optional[int] = None, calibrate: Optional[bool] = None, *,
            max_seconds: Optional[float] = None,
            y: Any = None) -> "Classifier":
        """Train; returns self. Two ways to call it:

        - **mmq's frame API**, ``fit(df, text="text", label="label")``: train on
          ``df[text]`` (String; null = empty text) and ``df[label]`` (String, or
          List[String] for multilabel rows). :meth:`predict` and :meth:`predict_proba`
          then return DataFrames.
        - **scikit-learn's**, ``fit(X, y)``: X a list/tuple/1-D NumPy array/Polars or
          pandas Series of texts (or a frame whose ``text`` column, or only String column,
          holds them; a frame keeps its dense columns), y one label per row, of any
          sortable type (str, int...). :attr:`classes_` is then ``np.unique(y)``, and
          :meth:`predict` returns a NumPy array of those values and :meth:`predict_proba`
          a NumPy array whose columns follow :attr:`classes_`. ``fit(df, y=labels,
          text="body")`` names the text column of a frame.

        The second argument is read as y when it is not a column name (a str) or a list of
        the frame's column names. ``fit(df, "label")`` — the label column given as the
        text column — is an :class:`InvalidParameterError`.

        Rows are shuffled (seeded) every epoch. ``text`` may name several String columns
        and ``categorical`` columns whose values are tokens (String, Categorical, Enum,
        integer, Boolean): each column is then a modality of its own (a set of tokens;
        null = the empty set), as are the dense columns. Such models, and
        ``fusion='deepset'|'attention'`` or ``blend='gblend'``, train the many-modality
        model of :mod:`mmq.sets`. From a LazyFrame only the needed columns are read; with
        discrete fusion its dense vectors are read in batches and kept only as codes, so
        they need not fit in memory (continuous fusion collects them).

        ``valid``: a frame with the same columns (in scikit-learn's style also a tuple
        ``(X_valid, y_valid)``), scored after every epoch (every model kind; G-Blend: every
        super-epoch): the best epoch's weights (highest accuracy, then lowest loss) are
        kept, ``patience`` (epochs without a better score) stops early, each epoch is
        recorded in :attr:`history`, and with ``calibrate`` (default: on when ``valid`` is
        given) the probabilities' temperature is fitted on it. ``max_seconds`` (with
        ``valid``): a time budget. After each epoch, the epochs still to run are those
        that end within it at the mean epoch time so far: when that is fewer than
        ``epoch``, the learning rate's decay is rescheduled to reach 0 at the new last
        epoch (as a run planned that long would), and an epoch expected to end past the
        budget is not started (at least one epoch runs). The best epoch so far is kept."""
        # An interrupted (Ctrl-C) or failed fit leaves the classifier as it was.
        saved = dict(self.__dict__)
        try:
            self._check_params()  # again: set_params() does not check
            if y is None and not self._labels_given(data, text, label):
                if _is_pandas_frame(data):
                    data = frame_of(data)
                self._fit(data, text, label, categorical, valid, patience, calibrate, max_seconds)
                self._sk, self._classes = None, None
                return self
            if y is None:
                y, text = text, "text"
            elif not isinstance(text, str):
                raise InvalidParameterError(
                    f"fit(X, y=...) takes the labels once: text must then name X's text column (a str), "
                    f"got {type(text).__name__}")
            df, tcol, lcol, classes, names = _sk_training_frame(data, y, text, label)
            if isinstance(valid, tuple):
                if len(valid) != 2:
                    raise InvalidParameterError(f"valid must be (X_valid, y_valid) or a frame, got a tuple of {len(valid)}")
                valid = _sk_frame(valid[0], valid[1], tcol, lcol, what="valid[0]")
            self._fit(df, tcol, lcol, categorical, valid, patience, calibrate, max_seconds)
            self._sk = {"text": tcol, "names": names}
            self._classes = classes
            return self
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    def _text_model(self, what: str):
        """The fitted model when it is a text (or discrete-fusion) model, else an error."""
        m = self._fitted()
        if not isinstance(m, _mmq.RustClassifier):
            kind = (f"fusion={self._o.fusion!r}" if self._o.fusion != "discrete" else
                    f"blend={self._o.blend!r}" if self._o.blend else "several text or categorical columns")
            raise InvalidParameterError(
                f"{what} works with text models and discrete fusion (dense columns as codes); not yet with {kind}")
        return m

    def partial_fit(self, data: Any, text: str = "text", label: str = "label", *, epoch: Optional[int] = None,
                    lr: Optional[float] = None, frozen: bool = False) -> "Classifier":
        """Continue training on new rows (incremental training); returns self.

        The fitted model's weights are the starting point: its tokens keep their rows,
        tokens it has never seen get new rows, and labels it has never seen are added
        after its own (``labels`` keeps its order and appends them; with ``loss='hs'``
        new labels are an error, as its tree is fixed). The hashing, tokenizer, dense
        quantizers and head stay the model's. ``epoch`` and ``lr`` default to the model's;
        the learning rate decays from ``lr`` to 0 over these epochs, as in a fit.
        ``frozen=True`` trains only the tokens the model has rows for (what
        ``quantize(retrain=True)`` does after a cutoff). An unfitted classifier is fitted.
        Text models and discrete fusion only; a model fitted with scikit-learn's
        ``fit(X, y)`` is refused (its ``classes_`` would change)."""
        if self._model is None:
            if frozen:
                raise InvalidParameterError("frozen=True needs a fitted model to continue from")
            return self.fit(data, text, label)
        model = self._text_model("partial_fit")
        if self._sk is not None:
            raise InvalidParameterError("partial_fit continues models fitted on frames (fit(df)); this one was "
                                        "fitted with fit(X, y)")
        if not isinstance(text, str):
            raise InvalidParameterError(f"partial_fit reads one text column (a str), got {type(text).__name__}")
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1):
            raise InvalidParameterError(f"epoch must be an integer >= 1, got {epoch!r}")
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr)
                               or lr <= 0):
            raise InvalidParameterError(f"lr must be a number > 0, got {lr!r}")
        saved = dict(self.__dict__)
        try:
            df = as_frame(collect(data) if isinstance(data, pl.LazyFrame) else data)
            t, y = text_series(df, text), label_series(df, label)
            cfg = json.loads(model.config_json)
            cfg["epoch"] = self.epoch if epoch is None else int(epoch)
            cfg["lr"] = cfg["lr"] if lr is None else float(lr)
            cfg["threads"] = self._config()["threads"]
            with progress_for(self.progress) as cb:
                self._model = _mmq.RustClassifier.fit(
                    json.dumps(cfg), t, y, text, label, cb, [], self._dense_args(df), None, None, False, None,
                    self._class_weights(y), init=model, frozen=frozen)
            self._plugin_path = None
            return self
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    def quantize(self, data: Any = None, *, cutoff: int = 0, dsub: int = 2, qnorm: bool = False, qout: bool = False,
                 retrain: bool = False, epoch: Optional[int] = None, lr: Optional[float] = None, text: str = "text",
                 label: str = "label", seed: int = 1234) -> "Classifier":
        """Compress the model in place, as fastText's ``quantize`` does; returns self.

        ``cutoff`` > 0 keeps the ``cutoff`` token rows of largest norm (the other tokens
        become unknown); each row is then product-quantized, ``dsub`` dimensions per byte
        (256 centroids per sub-vector); ``qnorm`` stores each row's norm apart in one byte;
        ``qout`` quantizes the output matrix too. ``retrain`` (with ``cutoff`` and the
        training ``data``) trains the kept rows again for ``epoch`` epochs (default: the
        model's) at ``lr`` before the final quantization, as fastText does after a cutoff.
        The saved file holds codes and codebooks instead of floats (and the token ids as
        varint gaps); predictions of the saved and loaded model are those of the quantized
        model. Every model kind: text and discrete fusion as above; continuous fusion and
        the set models (deepset, attention, G-Blend, several columns) quantize their token
        rows (and with ``qout`` their output matrix) but take no ``cutoff``; late fusion
        quantizes its text model, concat fusion its one linear model."""
        model = self._fitted()
        for name, v in (("cutoff", cutoff), ("dsub", dsub), ("seed", seed)):
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "dsub" else 0):
                raise InvalidParameterError(f"{name} must be an integer >= {1 if name == 'dsub' else 0}, got {v!r}")
        for name, v in (("qnorm", qnorm), ("qout", qout), ("retrain", retrain)):
            if not isinstance(v, bool):
                raise InvalidParameterError(f"{name} must be True or False, got {v!r}")
        if not isinstance(model, _mmq.RustClassifier):
            return self._quantize_other(model, cutoff, dsub, qnorm, qout, retrain, seed)
        if retrain and data is None:
            raise InvalidParameterError("retrain=True trains again on the training data: quantize(train_df, "
                                        "cutoff=..., retrain=True)")
        if model.quantized_json is not None:
            raise InvalidParameterError("the model is quantized already")
        if retrain and 0 < cutoff < model.n_rows:
            # As fastText: the kept rows are trained again on their own (every other
            # token unknown), then quantized.
            retrain_on = Classifier._from_rust(model.prune(cutoff))
            retrain_on.progress, retrain_on.threads = self.progress, self.threads
            model = retrain_on.partial_fit(data, text, label, epoch=epoch, lr=lr, frozen=True)._model
        self._model = model.quantize(cutoff, dsub, qnorm, qout, seed)
        self._plugin_path = None
        return self

    def _quantize_other(self, m: Any, cutoff: int, dsub: int, qnorm: bool, qout: bool, retrain: bool,
                        seed: int) -> "Classifier":
        """:meth:`quantize` for the model kinds other than text and discrete fusion."""
        import copy

        if getattr(m, "quantized_json", None) is not None:
            raise InvalidParameterError("the model is quantized already")
        if isinstance(m, EnsembleModel):
            raise InvalidParameterError("an ensemble has no weights of its own: quantize its members, then make "
                                        "the ensemble of them (mmq.ensemble([...]))")
        if retrain:
            raise InvalidParameterError("retrain works with text and discrete-fusion models (it retrains the rows "
                                        "a cutoff keeps); quantize this model without it")
        if isinstance(m, LateModel):
            m = copy.copy(m)
            m.text = m.text.quantize(cutoff, dsub, qnorm, qout, seed)
        elif isinstance(m, ConcatModel):
            if cutoff:
                raise InvalidParameterError("cutoff works with text and discrete-fusion models: concat fusion's "
                                            "rows include its image features; quantize it with cutoff=0")
            m = copy.copy(m)
            m.model = m.model.quantize(cutoff, dsub, qnorm, qout, seed)
        else:
            m = m.quantize(cutoff, dsub, qnorm, qout, seed)
        self._model = m
        self._plugin_path = None
        return self

    @property
    def quantized(self) -> Optional[dict]:
        """The options the model was quantized with (``cutoff``, ``dsub``, ``qnorm``,
        ``qout``, ``seed``), or None when it is not quantized."""
        m = self._fitted()
        q = getattr(m, "quantized_json", None)
        return None if q is None else json.loads(q)

    @staticmethod
    def _labels_given(data: Any, text: Any, label: str) -> bool:
        """Whether ``fit(data, text, label)`` passes the labels as its second argument
        (scikit-learn's ``fit(X, y)``) rather than the text column(s) of a frame."""
        frame = is_frame(data)
        if isinstance(text, str):
            if not frame:
                raise InvalidInputError(
                    f"data must be a polars DataFrame or LazyFrame with text and label columns, got "
                    f"{type(data).__name__} and no labels; for texts and labels apart pass both: fit(texts, y)")
            if text == label:
                raise InvalidParameterError(
                    f"fit(df, {text!r}): the second argument is the text column, and {text!r} is also the label "
                    f"column (label={label!r}), so the model would learn to read the labels. Name the columns, "
                    f"fit(df, text='text', label={label!r}), or pass the labels as y: fit(df['text'], df[{label!r}])")
            return False
        if frame and isinstance(text, (list, tuple)) and text and all(isinstance(t, str) for t in text):
            # column names (the many-modality API; a wrong name is then reported as a missing
            # column), unless the list is no name list at all: one str per row, not all columns
            if isinstance(data, pl.LazyFrame) or len(text) != len(data):
                return False
            return not set(text) <= set(str(c) for c in data.columns)
        return True

    def _fit(self, data, text, label, categorical, valid, patience, calibrate, max_seconds=None) -> "Classifier":
        if max_seconds is not None:
            if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)) \
                    or not np.isfinite(max_seconds) or max_seconds <= 0:
                raise InvalidParameterError(f"max_seconds must be a number of seconds > 0, got {max_seconds!r}")
            if valid is None:
                raise InvalidParameterError("max_seconds needs a validation frame to pick the epoch to keep: "
                                            "fit(train, valid=valid_df, max_seconds=...)")
            max_seconds = float(max_seconds)
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
            raise InvalidParameterError(f"patience must be an integer >= 1 (epochs), got {patience!r}")
        if patience is not None and valid is None:
            raise InvalidParameterError("patience needs a validation frame: fit(train, valid=valid_df, patience=...)")
        if calibrate is not None and not isinstance(calibrate, bool):
            raise InvalidParameterError(f"calibrate must be True, False or None, got {calibrate!r}")
        if calibrate and valid is None:
            raise InvalidParameterError("calibrate=True needs a validation frame: fit(train, valid=valid_df)")
        calibrate = valid is not None if calibrate is None else calibrate
        many = not isinstance(text, str) or bool(categorical)
        if self._o.fusion == "concat":
            if many:
                raise InvalidParameterError("fusion='concat' reads one text column (and its dense columns)")

            self._mods, self._plugin_path = None, None
            self._model = late.fit_concat(self, as_frame(data), None if valid is None else as_frame(valid), text,
                                          label, patience, calibrate, max_seconds)
            return self
        if self._o.fusion == "late":
            if many:
                raise InvalidParameterError("fusion='late' reads one text column (and its dense columns)")
            if valid is None:
                raise InvalidParameterError("fusion='late' fits its weights on a validation split: "
                                            "fit(train, valid=valid_df)")

            self._mods, self._plugin_path = None, None
            with progress_for(self.progress) as cb:
                self._model = late.fit(self, as_frame(data), as_frame(valid), text, label, patience, cb,
                                       max_seconds=max_seconds)
            return self
        vopts = (valid, patience, calibrate, max_seconds)
        if many or self._o.blend is not None or self._o.fusion in ("deepset", "attention"):
            for name, on in (("class_weight", self.class_weight is not None), ("min_count", self._o.min_count != 1),
                             ("pretrained_vectors", self.pretrained_vectors is not None)):
                if on:
                    raise InvalidParameterError(f"{name} works with models of one text column (and dense columns "
                                                f"as codes); not yet with several text or categorical columns")
            if self._o.fusion in CONTINUOUS:
                raise InvalidParameterError(
                    f"several text or categorical columns need fusion in {TOKEN_FUSIONS}, got {self._o.fusion!r}")
            self._plugin_path = None
            with progress_for(self.progress) as cb:
                self._model = sets.fit(self, data, text, label, categorical, cb, vopts)
            self._mods = json.loads(self._model.config_json)["modalities"]
            return self
        self._mods = None
        if isinstance(data, pl.LazyFrame):
            if valid is not None:
                data = collect(data)
            else:
                return fit_classifier(self, data, text, label)
        df = as_frame(data)
        t = text_series(df, text)
        y = label_series(df, label)
        self._plugin_path = None  # a refit object is re-saved for the Polars plugin
        args = self._dense_args(df, fit=True)
        vargs = None
        if valid is not None:
            vdf, vy = valid_frame(valid, y, label)
            width = args[0][1].shape[1] if self._o.fusion in CONTINUOUS else None
            vargs = (text_series(vdf, text), vy, self._dense_args(vdf, width=width))
        if self._o.fusion in CONTINUOUS:
            cfg = self._config()
            cfg = {"mode": self._o.fusion, "dim": cfg["dim"], "rank": self._o.rank, "epoch": cfg["epoch"],
                   "lr": cfg["lr"], "threads": cfg["threads"], "seed": cfg["seed"], "tokenizer": cfg["tokenizer"],
                   "loss": self.loss, "neg": self.neg}
            if vargs is not None:
                vargs = (vargs[0], vargs[1], vargs[2][0])
            with progress_for(self.progress) as cb:
                self._model = _mmq.RustFusionClassifier.fit(json.dumps(cfg), t, y, text, label, args[0], cb,
                                                            vargs, patience, calibrate, max_seconds)
            return self
        quantizers = [(name, q._q) for name, q in self._dense.items()]
        with progress_for(self.progress) as cb:
            self._model = _mmq.RustClassifier.fit(
                json.dumps(self._config()), t, y, text, label, cb, quantizers, args, vargs, patience, calibrate,
                max_seconds, self._class_weights(y), pretrained=self._pretrained_rows())
        return self

    def _pretrained_rows(self) -> Optional[tuple]:
        """``pretrained_vectors`` as (token ids, rows) for the core: each word's own id
        (as this model's tokenizer hashes it; words that give no or several ids, e.g.
        ``"don't"`` with ``split_punct``, are skipped) and its vector; the first of the
        words that share an id wins. None when there are none."""
        pv = self.pretrained_vectors
        if pv is None:
            return None
        words, mat = read_vectors(pv, self.dim)
        cfg = self._config()["tokenizer"]
        toks = _mmq.tokenize(pl.Series(words, dtype=pl.String), json.dumps(
            dict(cfg, word_ngrams=1, minn=0, maxn=0))).to_list()
        ids, rows, seen = [], [], set()
        for i, t in enumerate(toks):
            # one word and the end-of-sentence token
            if t is not None and len(t) == 2 and t[0] not in seen:
                seen.add(t[0])
                ids.append(t[0])
                rows.append(i)
        if not ids:
            raise InvalidInputError(f"pretrained_vectors: none of its {len(words)} words is a word of this "
                                    f"model's tokenizer")
        return np.asarray(ids, dtype=np.uint32), np.ascontiguousarray(mat[rows], dtype=np.float32)

    def _dargs(self, data: Any):
        """Dense arguments for the Rust model: a list (discrete) or the one column (continuous)."""
        args = self._dense_args(data)
        return args[0] if self._o.fusion in CONTINUOUS else args

    def _dense_args(self, data: Any, fit: bool = False, width: Optional[int] = None) -> list:
        """(name, vectors | None, codes | None, present) per dense column, in order.
        ``width``: the vectors' length for a continuous model not fitted yet (a validation
        frame whose column is null in every row)."""
        if not self._dense:
            return []

        if not isinstance(data, (pl.DataFrame, pl.LazyFrame)):
            raise InvalidInputError(
                f"this model reads dense column(s) {list(self._dense)}: pass a DataFrame that has them, "
                f"not a {type(data).__name__}")
        df = as_frame(data)
        out = []
        for name, q in self._dense.items():
            if name not in df.columns:
                raise InvalidInputError(
                    f"dense column '{name}' not found; the frame has columns {df.columns}")
            s = df.get_column(name)
            present = ~s.is_null().to_numpy()
            kept = s.filter(pl.Series(present))
            inner = getattr(s.dtype, "inner", None)
            is_codes = inner is not None and inner.is_integer()
            if is_codes:
                if q is None:
                    raise InvalidInputError(
                        f"dense column '{name}' holds codes ({s.dtype}); fusion={self._o.fusion!r} needs float vectors")
                if not q.is_fitted:
                    raise InvalidInputError(
                        f"dense column '{name}' holds codes ({s.dtype}): its quantizer must be fitted already")
                codes = as_codes(kept.to_numpy() if len(kept) else np.zeros((0, q.m)), q.m)
                out.append((name, None, codes, present))
                continue
            if not (isinstance(s.dtype, (pl.Array, pl.List)) and inner is not None and inner.is_float()):
                raise InvalidInputError(
                    f"dense column '{name}' must be Array[Float32, d] or List[Float32] (or integer codes), found {s.dtype}")
            if len(kept) == 0:
                if q is None:
                    if fit:
                        raise InvalidInputError(f"dense column '{name}' is null in every row")
                    width = self._model.dense_dim if width is None else width
                    out.append((name, np.zeros((0, width), dtype=np.float32), None, present))
                    continue
                if fit and not q.is_fitted:
                    raise InvalidInputError(f"dense column '{name}' is null in every row: nothing to fit its quantizer on")
                vecs = np.zeros((0, q.d if q.is_fitted else 0), dtype=np.float32)
            else:
                vecs = as_matrix(kept, what=name)
            finite = np.isfinite(vecs).all(axis=1)
            if not finite.all():
                row = int(np.flatnonzero(present)[np.flatnonzero(~finite)[0]])
                raise InvalidInputError(f"dense column '{name}': row {row} has NaN or inf")
            if q is None:
                pass  # continuous fusion: the Rust model checks the dimension
            elif fit and not q.is_fitted:
                q.fit(vecs)
            elif vecs.shape[0] and vecs.shape[1] != q.d:
                raise InvalidInputError(
                    f"dense column '{name}': expected vectors of dimension {q.d}, got {vecs.shape[1]}")
            out.append((name, vecs, None, present))
        return out

    # -- prediction ----------------------------------------------------------------
    def predict(self, data: Any, k: int = 1, threshold: float = 0.0, text: str = "text") -> Any:
        """Most probable labels.

        After ``fit(df)`` (mmq's frame API) a DataFrame. With ``k=1``: columns ``label``
        (String) and ``prob`` (Float32), null where no label reaches ``threshold``. With
        ``k>1``: ``label`` List[String] and ``prob`` List[Float32], most probable first.

        After ``fit(X, y)`` (scikit-learn's style) a NumPy array of one label per row,
        values of :attr:`classes_`; X as in :meth:`fit`. ``k > 1`` or a ``threshold``
        still give the DataFrame (label names as str)."""
        if self._sk is not None:
            data, text = self._sk_input(data, text)
            if k == 1 and check_threshold(threshold) == 0.0:
                return self._predict_classes(data, text)
        m = self._fitted()
        # Clamped before anything of size n × k exists: a row has at most n_labels labels.
        k = min(check_k(k), len(m.labels))
        threshold = check_threshold(threshold)
        idx, probs = self._top_k(data, text, k, threshold)
        names = pl.Series("label", m.labels, dtype=pl.String)
        missing = idx < 0
        if missing.any():
            idx_s = pl.Series("i", idx)
            lab = names.gather(pl.select(pl.when(idx_s >= 0).then(idx_s)).to_series())
            prob = pl.Series("prob", probs, dtype=pl.Float32).fill_nan(None)
        else:  # every row has k labels: no null handling needed
            lab = names.gather(idx)
            prob = pl.Series("prob", probs, dtype=pl.Float32)
        if k == 1:
            return pl.DataFrame([lab.alias("label"), prob])
        n = len(idx) // k
        lab_l = lab.reshape((n, k)).arr.to_list().list.drop_nulls()
        prob_l = prob.reshape((n, k)).arr.to_list().list.drop_nulls()
        return pl.DataFrame([lab_l.alias("label"), prob_l.alias("prob")])

    def _top_k(self, data: Any, text: str, k: int, threshold: float):
        """The Rust model's top-k: label indices (in :attr:`labels` order; -1 where none
        reaches the threshold) and probabilities, k per row, flat."""
        m = self._fitted()
        if self._mods is not None:
            return m.predict(sets.inputs(self, data, self._mods), k, float(threshold))
        return m.predict(text_series(data, text), k, float(threshold), self._dargs(data))

    def _proba(self, data: Any, text: str) -> np.ndarray:
        """Probabilities, one column per label in :attr:`labels` order (float32)."""
        m = self._fitted()
        if self._mods is not None:
            return m.predict_proba(sets.inputs(self, data, self._mods))
        return m.predict_proba(text_series(data, text), self._dargs(data))

    def predict_proba(self, data: Any, text: str = "text") -> Any:
        """Probability of every label.

        After ``fit(df)`` (mmq's frame API) a DataFrame: one Float32 column per label,
        named by the label, **in** :attr:`labels` **order** (most frequent in training
        first, not sorted); ``.select(clf.classes_.tolist())`` puts them in sorted order.

        After ``fit(X, y)`` (scikit-learn's style) a float64 NumPy array of shape
        (rows, classes) **whose columns follow** :attr:`classes_` (sorted), as
        scikit-learn's metrics (``log_loss``, ``roc_auc_score``) expect; each row sums to
        1 (for ``loss='ova'`` and ``'ns'``, whose per-label probabilities are independent,
        the row is divided by its sum, as scikit-learn's one-vs-rest does)."""
        if self._sk is not None:
            data, text = self._sk_input(data, text)
            return self._proba_classes(data, text)
        m = self._fitted()
        p = self._proba(data, text)
        return pl.DataFrame({name: p[:, i] for i, name in enumerate(m.labels)})

    def decision_function(self, X: Any) -> np.ndarray:
        """scikit-learn's decision scores, for any fitted model: the log of the
        :meth:`predict_proba` probabilities in :attr:`classes_` order, shape (rows,
        classes); with two classes the log-odds of ``classes_[1]`` against
        ``classes_[0]``, shape (rows,). The largest score is the predicted class. X as in
        :meth:`fit` (texts, or a frame with a text column)."""
        p = self._proba_classes(*self._sk_input(X, "text"))
        logp = np.log(np.maximum(p, np.finfo(np.float32).tiny))
        return logp[:, 1] - logp[:, 0] if logp.shape[1] == 2 else logp

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy of the top label on X (texts, or a frame with a text column) against
        y, one label per row, as scikit-learn's ``score``; weighted by ``sample_weight``
        if given. For any fitted model; for one fitted from a frame y holds label names."""
        pred = self._predict_classes(*self._sk_input(X, "text"))
        if y is None or isinstance(y, str):
            raise InvalidInputError(f"score(X, y) needs y, one label per row of X, got {y!r}")
        truth = np.asarray(y.to_numpy() if isinstance(y, pl.Series) else y)
        if truth.ndim == 2 and truth.shape[1] == 1:
            truth = truth[:, 0]
        if truth.shape != pred.shape:
            raise InvalidInputError(f"X has {len(pred)} rows but y has shape {truth.shape}")
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if w is not None and w.shape != pred.shape:
            raise InvalidInputError(f"sample_weight must have one weight per row ({len(pred)}), got shape {w.shape}")
        return float(np.average(pred == truth, weights=w))

    # -- scikit-learn-style outputs ----------------------------------------------------
    def _sk_input(self, X: Any, text: str) -> "tuple[Any, str]":
        """A frame and its text column from scikit-learn-style X (a frame, texts, or one
        str); a frame's text column is ``text`` if given, else the one fit used."""
        col = (self._sk or {}).get("text") or "text"
        if is_frame(X):
            return _sk_texts(X, text if text != "text" else col)
        if isinstance(X, str):
            X = [X]
        return _sk_texts(X, col)

    def _class_index(self) -> "tuple[np.ndarray, np.ndarray]":
        """``(to_model, to_class)``: the model's label index of each class of
        :attr:`classes_`, and the class of each model label."""
        labels = self._fitted().labels
        names = self._sk["names"] if self._sk is not None else self.classes_.tolist()
        pos = {lab: i for i, lab in enumerate(labels)}
        to_model = np.array([pos[n] for n in names], dtype=np.int64)
        to_class = np.empty(len(labels), dtype=np.int64)
        to_class[to_model] = np.arange(len(names))
        return to_model, to_class

    def _proba_classes(self, data: Any, text: str) -> np.ndarray:
        to_model, _ = self._class_index()
        p = self._proba(data, text)[:, to_model].astype(np.float64)
        total = p.sum(axis=1, keepdims=True)
        p = np.divide(p, total, out=np.full_like(p, 1.0 / max(p.shape[1], 1)), where=total > 0)
        return p

    def _predict_classes(self, data: Any, text: str) -> np.ndarray:
        """The top label of each row as a value of :attr:`classes_` (mmq's own top-1,
        the label :meth:`test` scores)."""
        _, to_class = self._class_index()
        idx, _ = self._top_k(data, text, 1, 0.0)
        idx = np.asarray(idx, dtype=np.int64)
        if (idx < 0).any():  # no probability at all (NaN): the most probable class after all
            idx = np.where(idx < 0, self._class_index()[0][self._proba_classes(data, text).argmax(axis=1)], idx)
        return self.classes_[to_class[idx]]

    def test(self, data: Union[pl.DataFrame, pl.LazyFrame], text: str = "text", label: str = "label",
             k: int = 1, threshold: float = 0.0) -> TestResult:
        """fastText's ``test``: precision and recall at k over all rows, plus per-label
        precision, recall and F1 (``per_label``)."""
        m = self._fitted()
        k = min(check_k(k), len(m.labels))
        threshold = check_threshold(threshold)
        df = as_frame(data)
        if self._mods is not None:
            r = m.test(sets.inputs(self, df, self._mods), label_series(df, label), label, k, float(threshold))
        else:
            r = m.test(text_series(df, text), label_series(df, label), label, k, float(threshold),
                       self._dargs(df))
        per = np.array(r["per_label"], dtype=np.int64).reshape(-1, 3)
        tp, pred, gold = per[:, 0], per[:, 1], per[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            prec = np.where(pred > 0, tp / np.maximum(pred, 1), 0.0)
            rec = np.where(gold > 0, tp / np.maximum(gold, 1), 0.0)
            f1 = np.where(prec + rec > 0, 2 * prec * rec / np.where(prec + rec > 0, prec + rec, 1), 0.0)
        per_label = pl.DataFrame({
            "label": m.labels, "precision": prec, "recall": rec, "f1": f1,
            "tp": tp, "predicted": pred, "gold": gold,
        })
        p = r["correct"] / r["predicted"] if r["predicted"] else 0.0
        rc = r["correct"] / r["gold"] if r["gold"] else 0.0
        return TestResult(rows=r["rows"], k=k, precision=p, recall=rc, per_label=per_label)

    def _rows_with_dense(self, texts: list, dense: dict, what: str) -> pl.DataFrame:
        """A frame of ``texts`` with each dense column of the model holding the one vector
        ``dense[name]`` (or null) in every row: the rows :meth:`explain` and
        :meth:`explain_words` score."""
        rows = pl.DataFrame({"text": texts})
        for name, q in self._dense.items():
            if name not in dense:
                raise InvalidInputError(f"{what} needs the dense value of '{name}' (None if missing)")
            v = dense[name]
            if v is None and q is None:
                raise InvalidInputError(f"{what} needs the vector of '{name}' for this model kind")
            width = q.d if v is None else int(np.asarray(v).size)
            vec = None if v is None else np.asarray(v, dtype=np.float32).ravel()
            rows = rows.with_columns(pl.Series(name, [vec] * rows.height, dtype=pl.Array(pl.Float32, width)))
        return rows

    def explain(self, text: str, label: Optional[str] = None, **dense: Any) -> pl.DataFrame:
        """Tokens of one row — words, word n-grams, char n-grams and visual tokens
        (``image[j]=c``: code c of sub-quantizer j) — known to the model, with their
        contribution to ``label``'s score (default: the predicted label), largest first.
        Pass the row's dense vectors as keywords: ``explain(text, image=vec)``."""
        m = self._fitted()
        if self._o.fusion in CONTINUOUS or self._o.fusion in ("late", "concat", "ensemble") or self._mods is not None:
            raise MmqError("explain works for text and discrete-fusion models of one text column; "
                           "use explain_modalities for many-modality models")
        row = self._rows_with_dense([text], dense, "explain")
        if label is None:
            label = self.predict(row)["label"][0]
        if label not in m.labels:
            raise InvalidParameterError(f"unknown label {label!r}; labels are {m.labels}")
        rows = m.explain(text, m.labels.index(label), self._dense_args(row))
        return pl.DataFrame(rows, schema={"token": pl.String, "kind": pl.String, "score": pl.Float32},
                            orient="row").sort("score", descending=True)

    def explain_words(self, text: str, label: Optional[str] = None, **dense: Any) -> pl.DataFrame:
        """What each word of one row does to ``label`` (default: the most probable one),
        for every loss, head and model kind of one text column (text, discrete,
        continuous, late, concat): ``score`` is ``log p(label | row) − log p(label | row
        without the word)``, the drop in the label's log-probability when the word —
        with its char n-grams and the word n-grams it is part of — is left out. A word is
        a whitespace-separated piece of ``text`` (``position``: its index there), so char
        n-grams count toward the word they came from. Largest first. Pass the row's dense
        vectors as keywords, as for :meth:`explain` (they stay in every variant)."""
        m = self._fitted()
        if self._mods is not None:
            raise InvalidParameterError("explain_words is for models of one text column; use explain_modalities")
        words = text.split()
        rows = self._rows_with_dense([text] + [" ".join(words[:i] + words[i + 1:]) for i in range(len(words))],
                                     dense, "explain_words")
        logp = np.log(np.maximum(self._proba(rows, "text").astype(np.float64), 1e-30))
        if label is None:
            j = int(np.argmax(logp[0]))
        elif label in m.labels:
            j = m.labels.index(label)
        else:
            raise InvalidParameterError(f"unknown label {label!r}; labels are {m.labels}")
        return pl.DataFrame({
            "position": pl.Series(range(len(words)), dtype=pl.UInt32),
            "word": pl.Series(words, dtype=pl.String),
            "score": pl.Series(logp[0, j] - logp[1:, j], dtype=pl.Float32),
        }).sort("score", descending=True, maintain_order=True)

    def explain_modalities(self, data: Union[pl.DataFrame, pl.LazyFrame], label: Optional[str] = None) -> pl.DataFrame:
        """How much each modality of one row (a 1-row frame) pushes ``label``'s score
        (default: the predicted label), for many-modality models. Columns ``modality``,
        ``kind``, ``present``, ``score`` (contribution to the label's logit; the scores
        plus the ``bias`` row sum to it) and ``dims_won`` (with ``outer_pool='max'``:
        how many dimensions of the fused vector the modality gave; else null)."""
        m = self._fitted()
        if self._mods is None:
            raise InvalidParameterError("explain_modalities is for many-modality models (deepset, attention, "
                                        "G-Blend, several columns); use explain")

        df = as_frame(data)
        if df.height != 1:
            raise InvalidInputError(f"explain_modalities takes a frame of exactly 1 row, got {df.height}")
        if label is None:
            label = self.predict(df)["label"][0]
        if label not in m.labels:
            raise InvalidParameterError(f"unknown label {label!r}; labels are {m.labels}")
        shares, bias = m.explain_modalities(sets.inputs(self, df, self._mods), m.labels.index(label))
        is_max = self._o.fusion == "deepset" and self._o.outer_pool == "max"
        rows = [(md["name"], md["kind"], p, s, w if is_max else None) for md, (s, w, p) in zip(self._mods, shares)]
        rows.append(("bias", "bias", True, bias, None))
        return pl.DataFrame(rows, orient="row", schema={
            "modality": pl.String, "kind": pl.String, "present": pl.Boolean, "score": pl.Float32,
            "dims_won": pl.UInt32})

    @property
    def history(self) -> pl.DataFrame:
        """Models fitted with ``valid`` (every kind): one row per epoch (``epoch``,
        ``train_loss``, ``valid_loss``, ``valid_accuracy``, ``best``: the weights kept);
        with online G-Blend one row per super-epoch (``epoch`` is its last). Without
        ``valid``: G-Blend's record (:attr:`blend_history`) for G-Blend models, else empty."""
        m = self._fitted()
        if self._o.fusion == "late":
            m = m.text
        rows = json.loads(getattr(m, "valid_history_json", None) or getattr(m, "history_json", "[]"))
        if self._mods is not None and not rows:
            return self.blend_history
        schema = {"epoch": pl.UInt32, "train_loss": pl.Float32, "valid_loss": pl.Float32,
                  "valid_accuracy": pl.Float32, "best": pl.Boolean}
        return pl.DataFrame(rows or None, schema=schema)

    @property
    def blend_history(self) -> pl.DataFrame:
        """G-Blend's record (``blend='gblend'`` or ``'gblend_offline'``), one row per
        super-epoch and head: ``epoch`` (its first epoch) and ``epochs`` (``blend_window``),
        ``head`` (``fused`` or a modality), the head's loss ``weight`` over it, the ``gain``
        (held-out loss drop) and ``overfit`` (change of the held-out − train gap) of the
        head's trial run that set that weight, and the blended model's mean loss on the
        held-out slice and the training subset after it. Empty for other models."""
        m = self._fitted()
        if self._mods is None:
            return pl.DataFrame()

        return sets.history(m, self._mods)

    def _dense_index(self, column: str) -> int:
        names = list(self._dense)
        if self._o.fusion != "discrete" or self._mods is not None or column not in names:
            raise InvalidParameterError(
                f"{column!r} is not a dense column of this discrete-fusion model (dense columns: {names})")
        return names.index(column)

    def visual_neighbors(self, column: str, j: int, c: int, n: int = 10,
                         words: Optional[Sequence[str]] = None) -> pl.DataFrame:
        """Tokens nearest (cosine similarity of learned embeddings) to the visual token
        ``column[j]=c`` (centroid c of sub-quantizer j): the model's other visual tokens,
        and the given ``words`` if any (e.g. a vocabulary), most similar first."""
        m = self._fitted()
        ci = self._dense_index(column)
        target = m.embeddings([m.dense_token(ci, j, c)])[0]
        if np.isnan(target).any():
            raise InvalidInputError(f"visual token {column}[{j}]={c} never occurred in training")
        names, ids = [], []
        for di, (name, _d, mm, kk) in enumerate(m.dense_columns):
            for jj in range(mm):
                for cc in range(kk):
                    if (di, jj, cc) != (ci, j, c):
                        names.append(f"{name}[{jj}]={cc}")
                        ids.append(m.dense_token(di, jj, cc))
        kinds = ["Dense"] * len(ids)
        if words:
            wid = tokenize(list(words), bucket=self._o.bucket, split_cjk=False).list.first().to_list()
            names += list(words)
            ids += wid
            kinds += ["Word"] * len(wid)
        emb = m.embeddings(ids)
        seen = ~np.isnan(emb).any(axis=1)
        emb = emb[seen]
        sim = emb @ target / (np.linalg.norm(emb, axis=1) * np.linalg.norm(target) + 1e-12)
        out = pl.DataFrame({"token": np.array(names, dtype=object)[seen].tolist(),
                            "kind": np.array(kinds, dtype=object)[seen].tolist(), "similarity": sim})
        return out.sort("similarity", descending=True).head(n)

    def rows_near_centroid(self, data: Union[pl.DataFrame, pl.LazyFrame], column: str, j: int, c: int,
                           n: int = 5) -> pl.DataFrame:
        """The ``n`` rows of ``data`` whose sub-vector (sub-quantizer j's dimensions of
        ``column``) is nearest to centroid c, with the squared distance (after the
        quantizer's ``transform``): what the visual token ``column[j]=c`` looks like. Rows
        with a null ``column`` are skipped."""

        self._dense_index(column)
        q = self._dense[column]
        if not 0 <= j < q.m or not 0 <= c < q.k:
            raise InvalidParameterError(f"({j}, {c}) out of range for m = {q.m}, k = {q.k}")
        df = as_frame(data).with_row_index("row")
        df = df.filter(pl.col(column).is_not_null())
        x = apply_transform(as_matrix(df.get_column(column), what=column), q.transform)
        dims = q.subspaces[j]
        d2 = ((x[:, dims] - q.centroids(j)[c]) ** 2).sum(axis=1)
        order = np.argsort(d2, kind="stable")[:n]
        return df[order.tolist()].drop(column).with_columns(pl.Series("distance", d2[order]))

    def tokenize(self, data: TextInput, text: str = "text") -> pl.Series:
        """Hashed token ids of each row, as this model's tokenizer computes them."""
        if self._model is not None and getattr(self._model, "vocab", lambda: None)() is not None:
            s = text_series(data, text)  # a model imported from fastText: its dictionary's ids
            ids = self._model.tokenize_texts([v or "" for v in s.to_list()])
            return pl.Series(s.name, [None if v is None else i for v, i in zip(s.to_list(), ids)],
                             dtype=pl.List(pl.UInt32))
        return tokenize(data, text=text, word_ngrams=self._check_params()["word_ngrams"], minn=self._o.minn,
                        maxn=self._o.maxn, bucket=self._o.bucket, split_cjk=self._o.split_cjk,
                        **self._tokenizer_flags())

    def embed(self, data: Any, text: str = "text") -> np.ndarray:
        """Row embeddings: each row's hidden vector, as the model computes it before the
        output layer (float32, rows × dim): the weighted mean of the rows of its known
        tokens (text and, for discrete fusion, visual words weighted by ``alpha``); for
        ``head='linear'`` the label scores of its normalised features, without the bias.
        fastText's ``get_sentence_vector`` is this for one line. Text models and discrete
        fusion; ``data`` as for :meth:`predict`."""
        m = self._text_model("embed")
        if self._sk is not None:
            data, text = self._sk_input(data, text)
        return m.embed(text_series(data, text), self._dargs(data))

    def word_vectors(self, words: Sequence[str]) -> np.ndarray:
        """One vector per word (float32, len(words) × dim): the mean of the rows the model
        has for the word and its char n-grams (fastText's ``get_word_vector``); zeros
        when it has none."""
        m = self._text_model("word_vectors")
        if isinstance(words, str):
            raise InvalidParameterError("word_vectors takes a list of words; for one word pass [word]")
        out = np.zeros((len(words), m.embeddings([]).shape[1]), dtype=np.float32)
        for i, w in enumerate(words):
            if not isinstance(w, str):
                raise InvalidInputError(f"word {i} is a {type(w).__name__}, expected a str")
            rows = m.embeddings([int(t) for t in m.word_ids(w)])
            rows = rows[~np.isnan(rows).any(axis=1)]
            if len(rows):
                out[i] = rows.mean(axis=0)
        return out

    def nearest(self, word: str, k: int = 10, words: Optional[Sequence[str]] = None) -> list:
        """The ``k`` words most similar to ``word`` by the cosine of their
        :meth:`word_vectors`, as ``[(similarity, word), ...]`` (fastText's
        ``get_nearest_neighbors``), ``word`` itself left out. mmq hashes words and keeps
        no list of them, so the candidates are ``words`` (for example the training
        texts' words); a model imported from fastText searches its own dictionary when
        ``words`` is None. Words without any known row are skipped."""
        m = self._text_model("nearest")
        check_k(k)
        if words is None:
            v = m.vocab()
            if v is None:
                raise InvalidParameterError(
                    "nearest needs the candidate words: nearest(word, k, words=[...]) (mmq hashes words and keeps no "
                    "list of them; only a model imported from fastText has its dictionary)")
            words = v[0]
        cand = list(dict.fromkeys(w for w in words if w != word))
        q = self.word_vectors([word])[0]
        qn = float(np.linalg.norm(q))
        if qn == 0 or not cand:
            return []
        vecs = self.word_vectors(cand)
        norms = np.linalg.norm(vecs, axis=1)
        ok = norms > 0
        sims = np.full(len(cand), -np.inf, dtype=np.float64)
        sims[ok] = (vecs[ok] @ q) / (norms[ok] * qn)
        order = np.argsort(-sims, kind="stable")[:k]
        return [(float(sims[i]), cand[i]) for i in order if np.isfinite(sims[i])]

    # -- persistence ---------------------------------------------------------------
    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write one self-describing file (safetensors + JSON header), atomically."""
        self._fitted().save(Path(path))

    @staticmethod
    def _stored_params(cfg: dict) -> dict:
        """The parameters every model file's config holds (training and tokenizer)."""
        tok = cfg["tokenizer"]
        return dict(dim=cfg["dim"], epoch=cfg["epoch"], lr=cfg["lr"], word_ngrams=tok["word_ngrams"],
                    minn=tok["minn"], maxn=tok["maxn"], bucket=tok["bucket"], threads=cfg["threads"],
                    seed=cfg["seed"], split_cjk=tok["split_cjk"], label_prefix=tok.get("label_prefix") or LABEL_PREFIX,
                    min_count=int(cfg.get("min_count", 1)),
                    **{k: tok.get(k, False) for k in TOKENIZER_FLAGS})

    @classmethod
    def _from_rust(cls, model) -> "Classifier":
        cfg = json.loads(model.config_json)
        obj = cls(**cls._stored_params(cfg), loss=cfg["loss"], neg=max(cfg["neg"], 1))

        obj.alpha = float(cfg.get("alpha", 1.0))
        obj.head, obj.l2, obj.idf = cfg.get("head", "bottleneck"), float(cfg.get("l2", 0.0)), bool(cfg.get("idf", False))
        obj.modality_dropout = float(cfg.get("modality_dropout", 0.0))
        obj.l2_mode = cfg.get("l2_mode", "lazy")
        obj.dense = {name: _Quantizer._from_rust(model.dense_quantizer(i))
                     for i, (name, *_rest) in enumerate(model.dense_columns)}
        obj._model = model
        return obj

    @classmethod
    def _from_concat(cls, model) -> "Classifier":
        obj = cls._from_rust(model.model)
        obj.fusion, obj.dense, obj._model = "concat", {h.name: None for h in model.heads}, model
        return obj

    @classmethod
    def _from_ensemble(cls, model) -> "Classifier":
        first = model.members[0]
        core = first.text if isinstance(first, LateModel) else first.model if isinstance(first, ConcatModel) else first
        obj = cls._from_rust(core)
        obj.fusion, obj.dense, obj._model = "ensemble", dict.fromkeys(model.dense_names), model
        return obj

    @classmethod
    def _from_late(cls, model) -> "Classifier":
        obj = cls._from_rust(model.text)
        obj.fusion, obj.dense, obj._model = "late", {h.name: None for h in model.heads}, model
        return obj

    @classmethod
    def _from_rust_fusion(cls, model) -> "Classifier":
        cfg = json.loads(model.config_json)
        obj = cls(**cls._stored_params(cfg), fusion=cfg["mode"], dense=[cfg["dense_name"]], rank=cfg.get("rank"),
                  loss=cfg.get("loss", "softmax"), neg=int(cfg.get("neg", 5)))
        obj._model = model
        return obj

    @classmethod
    def _from_rust_sets(cls, model) -> "Classifier":
        cfg = json.loads(model.config_json)
        mods = cfg["modalities"]
        fusion = {"bag": "discrete"}.get(cfg["fusion"], cfg["fusion"])
        dense = {md["name"]: _Quantizer._from_rust(model.quantizer(i))
                 for i, md in enumerate(mods) if md["kind"] == "dense"}
        obj = cls(**cls._stored_params(cfg), fusion=fusion, dense=dense, alpha=cfg["alpha"], pool=cfg["pool"],
                  outer_pool=cfg["outer_pool"], blend=None if cfg["blend"] == "none" else cfg["blend"],
                  holdout=cfg["holdout"], blend_window=cfg.get("blend_window", 1),
                  loss=cfg.get("loss", "softmax"), neg=int(cfg.get("neg", 5)))
        obj._model = model
        obj._mods = mods
        return obj

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_model", "dense")}
        if self._mods is not None:
            state["dense"] = {}
            state["_model_bytes"] = self._model.to_bytes()
            return state
        keep = self._model is None or self._o.fusion in CONTINUOUS or self._o.fusion in ("late", "concat", "ensemble")
        # a discrete model's quantizers travel inside its bytes; a text model keeps dense as given
        state["dense"] = self.dense if keep or not self._dense else {}
        state["_model_bytes"] = None if self._model is None else self._model.to_bytes()
        return state

    def __setstate__(self, state: dict) -> None:
        b = state.pop("_model_bytes")
        state.setdefault("_mods", None)
        state.setdefault("_sk", None)
        state.setdefault("_classes", None)
        # attributes added after the first release: pickles made before them get the defaults
        for k, v in dict(tokenizer=None, pool="mean", outer_pool="mean", blend=None, holdout=0.1, blend_window=1,
                         head="bottleneck", l2=0.0, idf=False, dense_lr=0.1, dense_epoch=20, modality_dropout=0.0,
                         l2_mode="lazy", label_prefix=LABEL_PREFIX, min_count=1, pretrained_vectors=None,
                         **dict.fromkeys(TOKENIZER_FLAGS, False)).items():
            state.setdefault(k, v)
        self.__dict__.update(state)
        if b is not None and self._mods is not None:
            m = _mmq.RustSetClassifier.from_bytes(b, "<pickle>")
            other = Classifier._from_rust_sets(m)
            self._model, self.dense = m, other.dense
            return
        if b is not None and self._o.fusion in CONTINUOUS:
            self._model = _mmq.RustFusionClassifier.from_bytes(b, "<pickle>")
            return
        if b is not None and self._o.fusion == "late":
            self._model = LateModel.from_bytes(b, "<pickle>")
            return
        if b is not None and self._o.fusion == "concat":
            self._model = ConcatModel.from_bytes(b, "<pickle>")
            return
        if b is not None and self._o.fusion == "ensemble":
            self._model = EnsembleModel.from_bytes(b, "<pickle>")
            return
        self._model = None if b is None else _mmq.RustClassifier.from_bytes(b, "<pickle>")
        if self._model is not None and self._model.dense_columns:
            self.dense = {name: _Quantizer._from_rust(self._model.dense_quantizer(i))
                          for i, (name, *_rest) in enumerate(self._model.dense_columns)}


def _is_pandas_frame(data: Any) -> bool:
    return is_frame(data) and not isinstance(data, (pl.DataFrame, pl.LazyFrame))


def _sk_texts(X: Any, text: str, what: str = "X") -> "tuple[pl.DataFrame, str]":
    """A frame and its text column from scikit-learn-style X: a frame (its ``text``
    column, or its only String column) or a 1-D array-like of texts (put in a column
    named ``text``)."""
    if is_frame(X):
        df = frame_of(X)
        col = frame_text_column(df, text)
        text_series(df, col)  # a String column, or an error naming it
        return df, col
    return pl.DataFrame([texts_of(X, what).alias(text)]), text


def _sk_training_frame(X: Any, y: Any, text: str, label: str):
    """The frame ``fit(X, y)`` trains on: X's texts (and any other columns of a frame X)
    plus the labels as str, with the text and label column names, ``classes_`` and the
    classes' names."""
    df, tcol = _sk_texts(X, text)
    classes, names, rows = labels_of(y, df.height)
    lcol = label if label not in df.columns else "__label__"
    return df.with_columns(pl.Series(lcol, rows, dtype=pl.String)), tcol, lcol, classes, names


def _sk_frame(X: Any, y: Any, tcol: str, lcol: str, what: str) -> pl.DataFrame:
    """A validation frame from scikit-learn-style ``(X_valid, y_valid)``."""
    df, col = _sk_texts(X, tcol, what)
    if col != tcol:
        df = df.rename({col: tcol})
    arr = np.asarray(y.to_numpy() if isinstance(y, pl.Series) else y)
    if arr.ndim != 1 or len(arr) != df.height:
        raise InvalidInputError(f"{what} has {df.height} rows but its labels have shape {arr.shape}")
    return df.with_columns(pl.Series(lcol, [str(v) for v in arr.tolist()], dtype=pl.String))


# The constructor's parameters, in its order: get_params() and set_params() use these names.
PARAMS = tuple(inspect.signature(Classifier.__init__).parameters)[1:]
DEFAULTS = {k: p.default for k, p in inspect.signature(Classifier.__init__).parameters.items() if k != "self"}


def tokenize(data: TextInput, text: str = "text", word_ngrams: int = 1, minn: int = 0, maxn: int = 0,
             bucket: int = 2_000_000, split_cjk: bool = True, lowercase: bool = False,
             split_punct: bool = False, drop_punct: bool = False) -> pl.Series:
    """fastText-compatible hashed token ids (List[UInt32]) of each row; null rows stay null.

    Each id is ``hash % bucket``: words, then their char n-grams (``minn..maxn``), the
    end-of-sentence token ``</s>``, then word n-grams up to ``word_ngrams``.
    ``lowercase``, ``split_punct`` and ``drop_punct`` as in :class:`Classifier`.

    Example:
        >>> import mmq
        >>> mmq.tokenize(["hello world"], word_ngrams=2).list.len().to_list()
        [4]
    """
    s = text_series(data, text)
    cfg = {"word_ngrams": word_ngrams, "minn": minn, "maxn": maxn, "bucket": bucket, "split_cjk": split_cjk,
           "lowercase": lowercase, "split_punct": split_punct, "drop_punct": drop_punct}
    return _mmq.tokenize(s, json.dumps(cfg))


def load(path: Union[str, os.PathLike]):
    """Load a model or quantizer written by ``save`` (the file says which it is), or a
    fastText supervised model (``.bin``, or ``.ftz`` from ``quantize``), imported as a
    classifier that predicts what fastText predicts."""
    path = Path(path)
    kind = _mmq.file_kind(path)
    if kind == "late_classifier":
        return Classifier._from_late(LateModel.from_bytes(path.read_bytes(), str(path)))
    if kind == "concat_classifier":
        return Classifier._from_concat(ConcatModel.from_bytes(path.read_bytes(), str(path)))
    if kind == "ensemble_classifier":
        return Classifier._from_ensemble(EnsembleModel.from_bytes(path.read_bytes(), str(path)))
    if kind == "set_classifier":
        return Classifier._from_rust_sets(_mmq.RustSetClassifier.load(path))
    if kind == "fusion_classifier":
        return Classifier._from_rust_fusion(_mmq.RustFusionClassifier.load(path))
    if kind == "quantizer":
        return _Quantizer._from_rust(_mmq.RustQuantizer.load(path))
    return Classifier._from_rust(_mmq.RustClassifier.load(path))


def ensemble(models: Sequence["Classifier"]) -> "Classifier":
    """A classifier whose probabilities are the mean of ``models``' (fitted
    Classifiers: text models of one text column, late or concat fusion; see
    :mod:`mmq.ensemble`). It predicts, tests, saves, loads and pickles like any model;
    it is not trained again (``fit`` refuses it) and the Polars expressions do not serve
    it yet. Prediction costs the members' time together.

    Example:
        >>> import polars as pl, mmq
        >>> df = pl.DataFrame({"text": ["good movie", "bad film", "great", "awful"] * 20,
        ...                    "label": ["pos", "neg", "pos", "neg"] * 20})
        >>> a = mmq.Classifier(dim=10, epoch=20, lr=0.5, threads=1, progress=False).fit(df)
        >>> b = mmq.Classifier(head="linear", epoch=20, threads=1, progress=False).fit(df)
        >>> mmq.ensemble([a, b]).predict(["good film"])["label"].to_list()
        ['pos']
    """
    if isinstance(models, Classifier) or not isinstance(models, (list, tuple)) or not models:
        raise InvalidParameterError("mmq.ensemble takes a non-empty list of fitted mmq.Classifier, got "
                                    f"{type(models).__name__}")
    members = []
    for i, c in enumerate(models):
        if not isinstance(c, Classifier):
            raise InvalidParameterError(f"models[{i}] is a {type(c).__name__}, not an mmq.Classifier")
        m = c._fitted()
        if isinstance(m, EnsembleModel):
            members.extend(m.members)
        elif isinstance(m, (LateModel, ConcatModel)) or (isinstance(m, _mmq.RustClassifier) and not m.dense_columns
                                                          and c._mods is None):
            members.append(m)
        else:
            raise InvalidParameterError(
                f"models[{i}] (fusion={c._o.fusion!r}) cannot join an ensemble: members are text models of one "
                f"text column, late or concat fusion")
    return Classifier._from_ensemble(EnsembleModel(members))


def load_classifier(path: Union[str, os.PathLike]) -> "Classifier":
    """:func:`load` for a place that needs a classifier: a quantizer's file is a
    :class:`ModelFileError` that says so."""

    obj = load(path)
    if not isinstance(obj, Classifier):
        what = "quantizer" if isinstance(obj, _Quantizer) else type(obj).__name__
        raise ModelFileError(f"{path} holds a {what}, not a classifier")
    return obj
