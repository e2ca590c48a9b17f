"""Autotune: search a Classifier's settings on a validation split within a time budget.

``mmq.autotune(train, valid, budget_s=60)`` tries configurations one after another,
each trained with ``fit(train, valid=valid, patience=...)`` (so every trial is
early-stopped and calibrated on valid), scores each on valid with the chosen metric and
returns the best fitted model with the table of trials. The first trial is a strong
default (the linear head with word bigrams; with dense columns, that model on text
alone), so the result is never worse on valid than that text-only model; later trials
are drawn at random (seeded) from the search space below. With dense columns the search
has two stages: text settings first (60% of the budget), then fusions on top of the
best text settings (late fusion, reusing that text model; concat fusion when the best
text model has the linear head; then a few fixed discrete fusions), so a multimodal pick is compared with text tuned the same way. A
trial is started only while the stage's time left is larger than the mean duration of
its trials so far, so the budget holds up to about one trial; a budget shorter than one
trial runs exactly the first trial of each stage.

Search space (text): head (linear / fastText's bottleneck), lr (log-uniform), maximum
epochs, word n-grams 1-3, char n-grams (none, 2-4, 2-5, 3-6), IDF (linear head), dim
(bottleneck), lowercase and punctuation handling. With dense columns also: text alone,
late fusion, concat fusion (alpha) and discrete fusion (PQ codes as tokens: m, k, alpha).

fastText's autotune searches the same kind of space (epoch, lr, dim, wordNgrams,
minn/maxn, bucket, dsub) by random search within a duration; mmq's trials are
early-stopped on valid, and its trial table says what each one scored.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np
import polars as pl

from mmq import late
from mmq._input import as_frame
from mmq.classifier import Classifier, tokenize
from mmq.classifier import ensemble as mmq_ensemble
from mmq.errors import InvalidInputError, InvalidParameterError
from mmq.quant import PQ

METRICS = ("accuracy", "f1", "loss")


@dataclass
class AutotuneResult:
    """What :func:`autotune` returns: the best fitted classifier (with ``ensemble=k``,
    the ensemble of the top k trials), its settings, one row per trial (settings, valid
    score, seconds), and ``single``: the best single trial's classifier (the same object
    as ``classifier`` when ``ensemble=1``)."""

    classifier: Any
    params: dict
    trials: pl.DataFrame
    single: Any = None

    def __iter__(self):  # ``clf, trials = mmq.autotune(...)``
        return iter((self.classifier, self.trials))


def _score(clf: Any, valid: pl.DataFrame, metric: str, text: str, label: str) -> float:
    """Higher is better: accuracy (P@1), macro F1 over labels, or minus the mean loss."""
    if metric == "loss":
        p = clf.predict_proba(valid, text=text).to_numpy()
        pos = {lab: i for i, lab in enumerate(clf.labels)}
        y = valid[label]
        first = y.list.first() if y.dtype == pl.List(pl.String) else y
        gold = np.array([pos.get(v, -1) for v in first.to_list()])
        pg = np.where(gold >= 0, p[np.arange(len(gold)), np.maximum(gold, 0)], 0.0)
        return -float(-np.log(np.maximum(pg, 1e-12)).mean())
    r = clf.test(valid, text=text, label=label)
    if metric == "accuracy":
        return r.precision
    return float(r.per_label.filter(pl.col("gold") > 0)["f1"].mean())


def _draw(rng: np.random.Generator) -> dict:
    """One random text configuration of the search space."""
    p: dict = {}
    head = "linear" if rng.random() < 0.7 else "bottleneck"
    p["head"] = head
    if head == "linear":
        p["lr"] = float(np.exp(rng.uniform(np.log(0.05), np.log(1.0))))
        p["idf"] = bool(rng.random() < 0.5)
        if rng.random() < 0.5:
            p["l2_mode"] = "full"
            p["l2"] = float(rng.choice([1e-6, 3e-6, 1e-5, 3e-5, 1e-4]))
        else:
            p["l2"] = float(rng.choice([0.0, 1e-5, 1e-4, 1e-3]))
    else:
        p["lr"] = float(np.exp(rng.uniform(np.log(0.1), np.log(1.5))))
        p["dim"] = int(rng.choice([10, 25, 50, 100]))
    p["epoch"] = int(rng.choice([5, 10, 20, 30]))
    p["word_ngrams"] = int(rng.choice([1, 2, 2, 3]))
    p["minn"], p["maxn"] = [(0, 0), (0, 0), (2, 4), (2, 5), (3, 6)][int(rng.integers(5))]
    p["lowercase"] = bool(rng.random() < 0.5)
    punct = ["keep", "split", "drop"][int(rng.integers(3))]
    p["split_punct"], p["drop_punct"] = punct == "split", punct == "drop"
    return p


# Discrete-fusion settings tried on top of the best text settings: (m, k, alpha). A short
# fixed list, not a random search: with ~1.5k validation rows, picking the best of many
# near-equal fusions mostly picks noise (a 200-trial random fusion search on
# fashion_products won 0.962 on valid and lost 0.8 points on test against its text model).
DISCRETE = ((8, 64, 0.5), (16, 64, 0.25), (32, 256, 1.0), (4, 16, 0.5))


def _fusions(dense: Sequence[str], n_rows: int, linear: bool) -> list:
    """Fusion settings to try on top of the best text settings, most promising first:
    late fusion, concat fusion (alpha 1; linear head only), the discrete fusions of
    DISCRETE (PQ codes as tokens), with concat at alpha 0.5 and concat with modality
    dropout 0.2 after the first of them."""
    disc = []
    for m, k, alpha in DISCRETE:
        k = min(k, max(2, n_rows // 4))
        disc.append(dict(fusion="discrete", alpha=alpha, dense={name: ("PQ", m, k) for name in dense}))
    concat = ([dict(fusion="concat", alpha=a, dense=list(dense)) for a in (1.0, 0.5)]
              + [dict(fusion="concat", alpha=1.0, modality_dropout=0.2, dense=list(dense))]) if linear else [{}] * 3
    out = [dict(fusion="late", dense=list(dense)), concat[0], disc[0], concat[1], concat[2], *disc[1:]]
    return [f for f in out if f]


# Distinct word and bigram tokens per row up to which the strong starts keep lr 0.5.
START_TOKENS = 100.0


def _start_lr(train: pl.DataFrame, text: str, sample: int = 2000) -> float:
    """The strong starts' learning rate: 0.5, times sqrt(START_TOKENS / n) for rows of
    n > START_TOKENS distinct word and bigram tokens on average (over the first
    ``sample`` rows). The linear head's features have norm 1, and AdaGrad's steps are
    about ``lr`` per weight whatever a feature's scale, so one update moves a row's
    score by about lr times the L1 norm of its features, ~sqrt(n). Long documents want
    a smaller lr to take steps of the same size. Best lr on the valid splits of
    the six real sets, from 0.2 / 0.3 / 0.5 at 20 epochs with patience 3: 0.5 for sst2
    (19 tokens), fashion_products (13) and dbpedia_14k (88); 0.3 for ag_news_small (61);
    0.2 for imdb (385, +0.74 over lr 0.5) and mvsa_tweets (27, 400 rows); this rule
    gives imdb 0.25 and keeps 0.5 for the others."""
    col = train.get_column(text).head(sample)
    toks = tokenize(pl.DataFrame({text: col}), text=text, word_ngrams=2)
    n = float(toks.list.unique().list.len().mean() or 0.0)
    return round(0.5 * min(1.0, math.sqrt(START_TOKENS / n)), 3) if n > 0 else 0.5


def _build(p: dict, base: dict) -> Any:
    kw = dict(base, **p)
    d = kw.get("dense")
    if isinstance(d, dict):
        kw["dense"] = {name: PQ(m=m, k=k, seed=base.get("seed", 0)) for name, (_, m, k) in d.items()}
    return Classifier(**kw)


def _describe(p: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in p.items())


def autotune(train: Union[pl.DataFrame, pl.LazyFrame], valid: Union[pl.DataFrame, pl.LazyFrame],
             budget_s: float = 60.0, metric: str = "accuracy", text: str = "text", label: str = "label",
             dense: Optional[Sequence[str]] = None, seed: int = 0, threads: Optional[int] = None,
             patience: int = 3, max_trials: Optional[int] = None, progress: bool = True,
             label_prefix: str = "__label__", ensemble: int = 1) -> AutotuneResult:
    """Search Classifier settings on ``valid`` within ``budget_s`` seconds (see the module
    docstring). ``metric``: ``"accuracy"`` (P@1), ``"f1"`` (macro F1 over the labels
    present in valid) or ``"loss"`` (mean −ln p of the gold label). ``dense``: names of
    dense columns (e.g. ``["image"]``) the search may fuse with the text; text alone is
    always a candidate. ``label_prefix`` is stored with every model (see
    :class:`Classifier`). ``ensemble=k`` (k > 1) returns the mean of the top k trials'
    probabilities instead of the best trial (:func:`mmq.ensemble`; text, late and concat
    trials; the row ``stage="ensemble"`` of the trial table has its valid score): more
    accurate when valid is small (the top trials' errors differ; docs/better_answers.md),
    at k models' prediction time and memory. Returns an :class:`AutotuneResult` (``classifier``, ``params``,
    ``trials``); a progress line per trial goes to stderr when ``progress``.

    Example:
        >>> import polars as pl, mmq
        >>> df = pl.DataFrame({"text": ["good movie", "bad film", "great", "awful"] * 20,
        ...                    "label": ["pos", "neg", "pos", "neg"] * 20})
        >>> r = mmq.autotune(df, df, budget_s=5, max_trials=2, progress=False)
        >>> r.trials.height
        2
    """
    if metric not in METRICS:
        raise InvalidParameterError(f"metric must be one of {METRICS}, got {metric!r}")
    if isinstance(budget_s, bool) or not isinstance(budget_s, (int, float)) or not (budget_s > 0) \
            or not math.isfinite(budget_s):
        raise InvalidParameterError(f"budget_s must be a finite number of seconds > 0, got {budget_s!r}")
    if max_trials is not None and (isinstance(max_trials, bool) or not isinstance(max_trials, int)
                                   or max_trials < 1):
        raise InvalidParameterError(f"max_trials must be an integer >= 1, got {max_trials!r}")
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise InvalidParameterError(f"patience must be an integer >= 1 (epochs), got {patience!r}")
    if isinstance(ensemble, bool) or not isinstance(ensemble, int) or not 1 <= ensemble <= 100:
        raise InvalidParameterError(f"ensemble must be an integer in [1, 100] (models averaged), got {ensemble!r}")

    train, valid = as_frame(train), as_frame(valid)
    dense = list(dense or [])
    for name in dense:
        for what, df in (("train", train), ("valid", valid)):
            if name not in df.columns:
                raise InvalidInputError(f"dense column '{name}' not found in the {what} frame "
                                        f"(columns: {df.columns})")
    text_cols = [c for c in train.columns if c not in dense]
    base = dict(threads=threads, seed=seed, progress=False, label_prefix=label_prefix)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    rows: list = []
    best: list = [None]  # (score, classifier, params)
    top: list = []  # (score, trial, classifier, params): the best `ensemble` trials that can join an ensemble

    def run(p: dict, stage: str, stage_end: float, reuse_text: Any = None) -> None:
        fusion = p.get("fusion")
        t0 = time.perf_counter()
        # Each trial trains within the stage's time left (it stops after the epoch that
        # passes it and keeps its best epoch), so the first trial cannot overrun a short
        # budget by a whole long training.
        left = max(stage_end - t0, 1e-3)
        clf = _build(p, base)
        tr, va = (train, valid) if fusion else (train.select(text_cols), valid.select(text_cols))
        try:
            if reuse_text is not None:  # late fusion over the best text model already fitted

                clf._model = late.fit(clf, tr, va, text, label, patience, None, text_model=reuse_text,
                                      max_seconds=left)
                clf._mods, clf._plugin_path = None, None
            else:
                clf.fit(tr, text=text, label=label, valid=va, patience=patience, max_seconds=left)
            hist = clf.history if metric == "accuracy" and fusion != "late" else None
            if hist is not None and hist.height and hist["best"].any():
                # The best epoch's valid accuracy, as fit scored it (equal to test(valid)).
                score, err = float(hist.filter(pl.col("best"))["valid_accuracy"][-1]), None
            else:
                score, err = _score(clf, va, metric, text, label), None
        except InvalidParameterError as e:  # a drawn combination the model refuses
            score, err = float("-inf"), str(e)
        secs = time.perf_counter() - t0
        shown = {k: (v if not isinstance(v, dict) else {n: f"PQ(m={m}, k={k})" for n, (_, m, k) in v.items()})
                 for k, v in p.items()}
        rows.append({"trial": len(rows), "stage": stage, "params": _describe(shown), "fusion": fusion or "text",
                     "head": p.get("head", "bottleneck"), metric: score, "seconds": secs, "error": err})
        if best[0] is None or score > best[0][0]:
            best[0] = (score, clf, shown)
        if ensemble > 1 and err is None and fusion in (None, "late", "concat") and math.isfinite(score):
            top.append((score, len(rows) - 1, clf, shown))
            top.sort(key=lambda t: (-t[0], t[1]))
            del top[ensemble:]
        if progress:
            print(f"autotune trial {len(rows) - 1} ({stage}): valid {metric} {score:.4f} in {secs:.1f}s "
                  f"(best {best[0][0]:.4f}) {_describe(shown)}", file=sys.stderr, flush=True)

    def room(stage_end: float, n_stage: int, stage_start: float) -> bool:
        """Time for one more trial of this stage (by its mean so far), within the trial cap."""
        if max_trials is not None and len(rows) >= max_trials:
            return False
        now = time.perf_counter()
        mean = (now - stage_start) / max(n_stage, 1)
        return now + mean <= stage_end

    # Stage 1: text settings (the whole budget without dense columns, most of it with them:
    # the fusion stage is a short fixed list).
    text_end = start + (budget_s * 0.6 if dense else budget_s)
    # Two strong starts: the lazy penalty (best at few epochs), then char n-grams, IDF and
    # the full objective's penalty (best on short noisy texts: docs/better_answers.md).
    lr0 = _start_lr(train, text)
    run(dict(head="linear", lr=lr0, epoch=20, word_ngrams=2, l2=1e-4), "text", text_end)
    n = 1
    if room(text_end, n, start):
        run(dict(head="linear", lr=lr0, epoch=20, word_ngrams=2, minn=2, maxn=5, idf=True, l2=1e-5,
                 l2_mode="full"), "text", text_end)
        n += 1
    while room(text_end, n, start):
        run(_draw(rng), "text", text_end)
        n += 1
    # Stage 2: fusion on top of the best text settings (text alone stays a candidate).
    if dense:
        text_best = best[0]
        tp = {k: v for k, v in text_best[2].items()}
        s2 = time.perf_counter()
        end = start + budget_s
        linear = tp.get("head", "bottleneck") == "linear"
        for i, f in enumerate(_fusions(dense, train.height, linear)):
            if i > 0 and not room(end, i, s2):
                break
            reuse = text_best[1]._model if f["fusion"] == "late" else None
            run(dict(tp, **f), "fusion", end, reuse_text=reuse)
    if ensemble > 1 and len(top) > 1:
        t0 = time.perf_counter()
        members = [c for _, _, c, _ in top]
        clf = mmq_ensemble(members)
        score = _score(clf, valid, metric, text, label)
        shown = {"ensemble": [p for _, _, _, p in top]}
        rows.append({"trial": len(rows), "stage": "ensemble", "params": f"mean of trials {[t for _, t, _, _ in top]}",
                     "fusion": "ensemble", "head": "", metric: score, "seconds": time.perf_counter() - t0,
                     "error": None})
        if progress:
            print(f"autotune ensemble of {len(members)} trials: valid {metric} {score:.4f} (best trial "
                  f"{best[0][0]:.4f})", file=sys.stderr, flush=True)
        single = best[0][1]
        best[0] = (score, clf, shown)
    else:
        single = best[0][1]
    trials = pl.DataFrame(rows, schema={"trial": pl.UInt32, "stage": pl.String, "params": pl.String,
                                        "fusion": pl.String,
                                        "head": pl.String, metric: pl.Float64, "seconds": pl.Float64,
                                        "error": pl.String})
    return AutotuneResult(classifier=best[0][1], params=best[0][2], trials=trials, single=single)
