#!/usr/bin/env python3
"""Multimodal comparison table: mmq text-only vs continuous fusion vs discrete (PQ / RSPQ)
fusion, beside scikit-learn references, on a text + dense-vector Parquet set.

Default data: ``mvsa_tweets.parquet`` (4,000 tweets, 3 sentiment classes, split
train/valid/test = 70/10/20, ``image`` = 1280-d EfficientNet-Lite0 features) from
``shared/data`` beside the repository's root (override the folder with ``MMQ_DATA``, or
pass any Parquet with columns ``text``, ``label``, ``split`` and a dense Array column,
named by ``--dense``). The script skips with a message when the data is absent.

Rows of the table (mmq unless said otherwise):

* text-only; image-only (``fusion="image"``); continuous fusion ``add``, ``max``,
  ``gated``, ``bilinear``, ``bilinear_gated``; discrete fusion with a PQ and an RSPQ
  quantizer (image codes become tokens weighted by ``alpha``);
* scikit-learn: TF-IDF (word 1-2 grams) + LogisticRegression on the text,
  LogisticRegression on the standardised dense vectors, and their late fusion (weighted
  average of the predicted probabilities, weight tuned on valid).

Protocol. Every hyperparameter is chosen on the VALID split only (mean valid accuracy over
the 3 seeds, ``threads=1`` so each run is deterministic); the test split is read only for
the final table. Seeds change the model init / shuffle and the quantizer seed; the split
is fixed. The grid is pruned in stages (printed in the notes section):

1. text-only: (a) full grid dim x epoch x lr x word_ngrams without char n-grams (text as
   is), then (b) char n-grams 3-6 x ``lowercase`` {False, True} x punctuation {kept in
   the words, ``split_punct``, ``drop_punct``} x epoch x lr at the best (dim, word_ngrams)
   of (a), plus ``lowercase`` x punctuation at the best of (a) when that stays ahead (the
   tokenizer = word_ngrams, char n-grams, ``lowercase`` and the punctuation option);
2. continuous modes: the tokenizer reused from text; lr x epoch at dim 10
   (epochs 2-30, lr 0.02-0.2), then dim in {10, 20, 50} at the best (lr, epoch);
3. discrete: all text hyperparameters reused, then m x k x alpha; then the quantizer's
   ``transform`` ("sqrt", "l2") at the 3 best (m, k, alpha); then epoch x lr re-tuned at
   the best (m, k, alpha, transform). Quantizer fits are cached per (kind, m, k, seed,
   transform).
4. set models (printed as "stage 3"): see below.

Set models (``mmq.sets``, issue 6; fitted with ``fit(df, text=["text"])``): Deep
Multi-Modal Sets ``fusion="deepset"`` with mean/mean and max/max pooling; MI2P-style
``fusion="attention"``; Gradient-Blending ``blend="gblend"`` (holdout 0.1) over the
deepset and over the bag of all tokens (``fusion="discrete"``), and the offline variant
``blend="gblend_offline"`` (weights estimated online, then a fresh model trained on every
training row with their mean fixed) over both, each beside its naive
joint-training counterpart (the same model without ``blend``: "deepset mean/mean" and
"bag (naive joint)"); and the single-modality references of the same set model, "set
text-only" (``dense={}``) and "set image-only" (``fit(df, text=[])``, the image's code
tokens alone). They reuse the quantizer kind / m / k / transform (and, for the bag, alpha) of the
best discrete model by valid and the text model's tokenizer; their stage ("stage 3") tunes lr x
epoch (lr 0.05-1 for mean pooling, 0.005-0.1 for max pooling) at one dim, then dim, then
lr x epoch again if the dim moved, then char n-grams x lowercase x punctuation (2 x 2 x 3) at the best. Targets: each G-Blend row
>= the best single-modality set model and >= its naive counterpart (test, mean of the
seeds); attention's train time <= 1.5x discrete fusion's (interleaved in one process,
same data, same dim/epoch/lr/tokenizer/quantizer, quantizers fitted beforehand).

Missing images (after the table, in evaluation processes that read the test split; every
model at its tuned hyperparameters, seeds 0-2; per seed a seeded 30% of the rows, the
same for every model): (i) models trained on the full training split, tested with the
images of 30% of the test rows removed; (ii) trained with 30% of the training images
removed and tested on the same 30%-missing test rows (a deployment where images are
missing at the same rate in training and in use). Drops are paired per seed against
the model trained and tested on full data. Continuous modes (gated, add,
bilinear_gated) are run with the missing vectors ZERO-FILLED (the naive approach: a zero
vector in place of the null before fit / predict) and, for reference, with the null
itself (the library's text-vector-alone path); discrete fusion and the set models get
the null (no visual tokens / the empty set). Target: deepset loses less accuracy than
every zero-filled continuous mode, in both settings.

Tuning runs in ``--workers`` processes (default 2; each model single-threaded). Timings
are taken afterwards, serially, in this process: train time is the fit wall time (per
seed the best of up to 3 repeats when a fit is short, then the mean over seeds). For
discrete fusion two times are reported: the classifier alone (quantizer fitted
beforehand, ``mmq.PQ(...).fit(train[dense])``, and passed in; encoding the vectors is
included) and with the quantizer fit inside ``fit()``. Model size = bytes of the file
written by ``.save``. Results: ``benches/results/fusion_table.json``.

Run from the repository root::

    PYTHONPATH=python python benches/fusion_table.py              # MVSA tweets, full
    PYTHONPATH=python python benches/fusion_table.py --quick      # smoke test, tiny grid
    PYTHONPATH=python python benches/fusion_table.py other.parquet --dense emb
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import pickle
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
DEFAULT_FILE = "mvsa_tweets.parquet"
SEEDS = (0, 1, 2)

try:  # used in place: PYTHONPATH=python; fall back to the checkout's python/ folder
    import mmq  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(REPO / "python"))

# ---- grids ---------------------------------------------------------------------------
FULL_GRID = dict(
    dim=(10, 20, 50),
    epoch=(5, 10, 20, 30),                  # text-only and discrete
    lr_text=(0.05, 0.1, 0.2, 0.5),          # text-only and discrete
    word_ngrams=(1, 2),
    char=((3, 6),),                         # (minn, maxn) tried in stage 1b (stage 1a: none)
    # continuous: keep lr <= ~0.25 (divergence). A first full run (epochs 5-30, lr
    # 0.05-0.2 at dim 20) put 5 of the 6 modes at the (5 epochs, lr 0.05) corner, so the
    # grid reaches further down; the dense projection overfits 2.8k rows within epochs.
    epoch_cont=(2, 5, 10, 30),
    lr_cont=(0.02, 0.05, 0.1, 0.2),
    cont_stage1_dim=10,
    m=(8, 16, 32, 64),
    k=(16, 32, 64, 256),
    alpha=(0.25, 0.5, 1.0, 2.0, 4.0),       # 4: a first run put PQ at the edge (2)
    # quantizer transform (mmq.quant.TRANSFORMS), tried at the 3 best (m, k, alpha)
    transform=("sqrt", "l2"),
    # set models (deepset, attention, bag, G-Blend): mean pooling wants a high lr
    epoch_set=(5, 10, 20, 30),
    # a run with lr 0.2-2 (mean) / 0.02-0.2 (max) put every set model at the bottom of its
    # grid; the grids now reach further down (and drop the top value, never chosen and
    # among the worst on valid)
    lr_set=(0.05, 0.1, 0.2, 0.5, 1.0),
    lr_set_max=(0.005, 0.01, 0.02, 0.05, 0.1),   # max pooling diverges / stalls above ~0.1
    lowercase=(False, True),                # tuned with char n-grams (stage 1b) and set models
    punct=("keep", "split", "drop"),        # likewise: punctuation kept in words / split_punct / drop_punct
    blend_window=(1, 3, 10),                # G-Blend's super-epoch, tuned last
    set_stage1_dim=20,
)
QUICK_GRID = dict(
    dim=(10, 20), epoch=(5, 10), lr_text=(0.1, 0.5), word_ngrams=(1, 2), char=(),
    epoch_cont=(2, 5), lr_cont=(0.05,), cont_stage1_dim=10, m=(8, 16), k=(16, 64), alpha=(0.5, 1.0), transform=("sqrt",),
    epoch_set=(5, 10), lr_set=(0.5, 1.0), lr_set_max=(0.1,), set_stage1_dim=10, lowercase=(False, True),
    punct=("keep", "split", "drop"), blend_window=(1, 3),
)
CONT_MODES = ("image", "add", "max", "gated", "bilinear", "bilinear_gated")
DISC_KINDS = ("pq", "rspq")
# set models (mmq.sets): method -> Classifier options; "text"/"image" say which modalities
SET_SPEC = {
    "set_text": dict(fusion="deepset", image=False),             # text modality alone
    "set_image": dict(fusion="deepset", text=False),             # image code tokens alone
    "deepset": dict(fusion="deepset"),                           # mean / mean
    "deepset_max": dict(fusion="deepset", pool="max", outer_pool="max"),
    "attention": dict(fusion="attention"),
    "bag": dict(fusion="discrete"),                              # set-model bag of all tokens
    "bag_gblend": dict(fusion="discrete", blend="gblend"),
    "deepset_gblend": dict(fusion="deepset", blend="gblend"),
    "bag_gblend_offline": dict(fusion="discrete", blend="gblend_offline"),
    "deepset_gblend_offline": dict(fusion="deepset", blend="gblend_offline"),
}
SET_METHODS = tuple(SET_SPEC)
# G-Blend row -> naive joint row
GBLEND = {"deepset_gblend": "deepset", "bag_gblend": "bag", "deepset_gblend_offline": "deepset",
          "bag_gblend_offline": "bag"}
# the punctuation option of the tokenizer: kept inside the words, split out, or dropped
PUNCT = {"keep": dict(split_punct=False, drop_punct=False), "split": dict(split_punct=True, drop_punct=False),
         "drop": dict(split_punct=False, drop_punct=True)}
MISSING_FRAC = 0.3
MISSING_CONT = ("gated", "add", "bilinear_gated")

# ---- targets -------------------------------------------------------------------------
T_DISC_GAIN_PTS = 1.0      # best discrete >= text-only + 1 point (test, mean of seeds)
T_DISC_VS_CONT_PTS = 1.0   # best discrete >= best continuous - 1 point
T_DISC_TIME_RATIO = 1.3    # discrete train time (classifier alone) <= 1.3 x text-only's
T_ATT_TIME_RATIO = 1.5     # attention train time <= 1.5 x discrete fusion's (same dim/epoch)


def data_dir() -> Path:
    env = os.environ.get("MMQ_DATA")
    return Path(env).expanduser().resolve() if env else HERE.parents[2] / "shared" / "data"


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------
def load_splits(path: str, dense: str, with_test: bool):
    """train / valid (/ test) frames with columns text, label, <dense>."""
    import polars as pl

    df = pl.read_parquet(path)
    missing = [c for c in ("text", "label", "split", dense) if c not in df.columns]
    if missing:
        raise SystemExit(f"{path}: missing column(s) {missing}; found {df.columns}")
    df = df.select(
        pl.col("text").cast(pl.String).fill_null(""),
        pl.col("label").cast(pl.String),
        pl.col("split").cast(pl.String),
        pl.col(dense),
    )
    out = {}
    for s in ("train", "valid", "test") if with_test else ("train", "valid"):
        out[s] = df.filter(pl.col("split") == s).drop("split")
    return out


def dense_matrix(frame, dense: str):
    """(vectors of the present rows as float32 n x d, boolean mask of present rows)."""
    from mmq.quant import as_matrix
    import polars as pl

    s = frame.get_column(dense)
    present = ~s.is_null().to_numpy()
    return as_matrix(s.filter(pl.Series(present)), what=dense), present


# --------------------------------------------------------------------------------------
# model construction (shared by the tuning workers and the final measurements)
# --------------------------------------------------------------------------------------
def make_quantizer(kind: str, m: int, k: int, seed: int, transform=None):
    import mmq

    cls = mmq.PQ if kind == "pq" else mmq.RSPQ
    return cls(m=m, k=k, seed=seed, transform=transform)


def qkind(method: str, p: dict):
    """The quantizer kind ("pq" / "rspq") a method needs, or None."""
    if method in DISC_KINDS:
        return method
    if method in SET_SPEC and SET_SPEC[method].get("image", True):
        return p["q"]
    return None


def fit_kw(method: str) -> dict:
    """Keyword arguments of ``fit`` (a list of text columns selects the set model)."""
    if method in SET_SPEC:
        return dict(text=["text"] if SET_SPEC[method].get("text", True) else [])
    return {}


def make_clf(method: str, p: dict, seed: int, dense: str, quantizer=None):
    """A Classifier for a table row. ``p`` holds dim, epoch, lr, word_ngrams, minn, maxn
    (+ m, k, alpha for discrete; + q, m, k (, alpha) for set models). ``quantizer``
    (discrete and set models with the image): fitted or not."""
    import mmq

    base = dict(dim=p["dim"], epoch=p["epoch"], lr=p["lr"], word_ngrams=p["word_ngrams"],
                minn=p["minn"], maxn=p["maxn"], lowercase=p.get("lowercase", False),
                split_punct=p.get("split_punct", False), drop_punct=p.get("drop_punct", False),
                threads=1, seed=seed,
                progress=False)
    if method == "text":
        return mmq.Classifier(**base)
    if method in CONT_MODES:
        return mmq.Classifier(**base, fusion=method, dense=[dense], rank=None)
    if method in DISC_KINDS:
        q = quantizer if quantizer is not None else make_quantizer(method, p["m"], p["k"], seed, p.get("transform"))
        return mmq.Classifier(**base, dense={dense: q}, alpha=p["alpha"])
    if method in SET_SPEC:
        s = SET_SPEC[method]
        d = {}
        if qkind(method, p):
            d = {dense: quantizer if quantizer is not None else make_quantizer(p["q"], p["m"], p["k"], seed, p.get("transform"))}
        return mmq.Classifier(**base, dense=d, fusion=s["fusion"], pool=s.get("pool", "mean"),
                              outer_pool=s.get("outer_pool", "mean"), blend=s.get("blend"),
                              blend_window=p.get("blend_window", 1), alpha=p.get("alpha", 1.0))
    raise ValueError(method)


def ckey(p: dict) -> str:
    return json.dumps(p, sort_keys=True)


# --------------------------------------------------------------------------------------
# tuning workers (valid split only: the workers never load the test split)
# --------------------------------------------------------------------------------------
_W: dict = {}


def _init_worker(path: str, dense: str, with_test: bool = False) -> None:
    # one core per worker: the models run with threads=1; keep the quantizers' k-means
    # (rayon's global pool, read on first use) on one thread too
    os.environ["RAYON_NUM_THREADS"] = "1"
    import faulthandler

    faulthandler.enable()  # a crash in the native core prints a traceback
    _W["dense"] = dense
    _W.update(load_splits(path, dense, with_test=with_test))
    _W["qcache"] = {}


def _quantizer(kind, m, k, seed, transform=None):
    key = (kind, m, k, seed, transform)
    q = _W["qcache"].get(key)
    if q is None:
        if "train_vecs" not in _W:
            _W["train_vecs"] = dense_matrix(_W["train"], _W["dense"])[0]
        q = make_quantizer(kind, m, k, seed, transform).fit(_W["train_vecs"])
        _W["qcache"][key] = q
    return q


def job(method: str, configs: list, seed: int) -> list:
    """Fit every config (same method, same seed) and return its valid accuracy."""
    from mmq.errors import MmqError

    out = []
    for p in configs:
        kind = qkind(method, p)
        q = _quantizer(kind, p["m"], p["k"], seed, p.get("transform")) if kind else None
        t0 = time.perf_counter()
        try:
            clf = make_clf(method, p, seed, _W["dense"], q).fit(_W["train"], **fit_kw(method))
            fit_s = time.perf_counter() - t0
            acc = clf.test(_W["valid"]).precision
            if not math.isfinite(acc):
                acc = None
        except MmqError as e:  # diverged ("training diverged ... lower lr")
            fit_s, acc = time.perf_counter() - t0, None
            p = dict(p, error=str(e)[:120])
        out.append((p, seed, acc, fit_s))
    return out


def missing_rows(n: int, frac: float, seed: int, stream: int):
    """Boolean mask of a seeded ``frac`` of ``n`` rows (exactly round(frac * n) rows)."""
    import numpy as np

    rng = np.random.default_rng([seed, stream])
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, int(round(frac * n)), replace=False)] = True
    return mask


def drop_dense(frame, dense: str, mask, how: str):
    """Remove the dense value of the rows in ``mask``: ``how="null"`` sets them null (the
    library's missing modality); ``how="zero"`` is the naive approach, a zero vector in
    place of every missing value (the rows in ``mask`` and any null already there)."""
    import numpy as np
    import polars as pl

    if how == "null":
        return frame.with_columns(
            pl.when(pl.Series(mask)).then(pl.lit(None, dtype=frame.schema[dense])).otherwise(pl.col(dense)).alias(dense))
    x, present = dense_matrix(frame, dense)
    full = np.zeros((frame.height, x.shape[1]), dtype=np.float32)
    full[present] = x
    full[mask] = 0.0
    return frame.with_columns(pl.Series(dense, full).cast(frame.schema[dense]))


def missing_job(method: str, p: dict, how: str, seed: int, frac: float) -> dict:
    """Missing-image experiment for one model and seed (evaluation workers: they hold the
    test split; hyperparameters come from the tuning on valid).
    full: trained on full train, tested on full test; test_missing: the same model on the
    test split with ``frac`` of its images removed; train_test_missing: trained with
    ``frac`` of the training images removed, tested on the same test rows as test_missing.
    ``how``: "null" (missing value = null: empty set / text alone) or "zero" (zero-filled)."""
    dense, tr, te = _W["dense"], _W["train"], _W["test"]
    m_te = missing_rows(te.height, frac, seed, 1)
    m_tr = missing_rows(tr.height, frac, seed, 2)
    none_te = missing_rows(te.height, 0.0, seed, 1)
    none_tr = missing_rows(tr.height, 0.0, seed, 2)
    kw = fit_kw(method)
    t0 = time.perf_counter()
    full_tr = drop_dense(tr, dense, none_tr, how) if how == "zero" else tr
    full_te = drop_dense(te, dense, none_te, how) if how == "zero" else te
    clf = make_clf(method, p, seed, dense).fit(full_tr, **kw)
    out = {"method": method, "how": how, "seed": seed,
           "full": clf.test(full_te).precision,
           "test_missing": clf.test(drop_dense(te, dense, m_te, how)).precision}
    clf2 = make_clf(method, p, seed, dense).fit(drop_dense(tr, dense, m_tr, how), **kw)
    out["train_test_missing"] = clf2.test(drop_dense(te, dense, m_te, how)).precision
    out["s"] = time.perf_counter() - t0
    return out


class Tuner:
    """Runs batches of (method, configs, seed) jobs in a process pool and aggregates
    mean valid accuracy over seeds per config."""

    def __init__(self, pool, seeds):
        self.pool, self.seeds = pool, seeds
        self.results: dict = {}   # method -> {ckey: {"p": p, "valid": {seed: acc}, "fit_s": [..]}}

    def submit(self, method: str, configs: list, batch_by=None):
        """Submit one job per (seed, group of configs). ``batch_by``: key -> group id."""
        groups: dict = {}
        for p in configs:
            groups.setdefault(batch_by(p) if batch_by else 0, []).append(p)
        futs = []
        for seed in self.seeds:
            for g in groups.values():
                futs.append(self.pool.submit(job, method, g, seed))
        return futs

    def collect(self, method: str, futs) -> None:
        table = self.results.setdefault(method, {})
        for f in futs:
            for p, seed, acc, fit_s in f.result():
                err = p.pop("error", None)
                e = table.setdefault(ckey(p), {"p": p, "valid": {}, "fit_s": [], "errors": []})
                e["valid"][seed] = acc
                e["fit_s"].append(fit_s)
                if err:
                    e["errors"].append(err)

    def ranked(self, method: str, subset=None) -> list:
        """(mean valid, sd, p, entry) best first; configs where any seed failed come last.
        Ties: cheaper model first (dim x epoch), then lower lr."""
        rows = []
        for e in self.results[method].values():
            p = e["p"]
            if subset is not None and not subset(p):
                continue
            accs = [e["valid"].get(s) for s in self.seeds]
            ok = all(a is not None for a in accs)
            mean = statistics.fmean(accs) if ok else -1.0
            sd = statistics.stdev(accs) if ok and len(accs) > 1 else 0.0
            rows.append((mean, sd, p, e))
        rows.sort(key=lambda r: (-r[0], r[2]["dim"] * r[2]["epoch"], r[2]["lr"]))
        return rows


# --------------------------------------------------------------------------------------
# final measurements (serial, in this process)
# --------------------------------------------------------------------------------------
def one_fit(clf, train, **kw):
    """(wall s, CPU s of this process) of ``clf.fit(train, **kw)``."""
    c0, t0 = time.process_time(), time.perf_counter()
    clf.fit(train, **kw)
    return time.perf_counter() - t0, time.process_time() - c0


def timed_fit(make, train, min_total_s: float = 0.6, max_repeats: int = 3, kw=None):
    """Fit ``make()`` on train; best wall time of up to ``max_repeats`` fits (repeat only
    while the total stays under ``min_total_s``; fits are deterministic with threads=1).
    Returns (model, wall s, CPU s of that fit)."""
    best, total, clf, n, cpu = math.inf, 0.0, None, 0, math.inf
    while n < max_repeats and (n == 0 or total < min_total_s):
        c = make()
        dt, dc = one_fit(c, train, **(kw or {}))
        total += dt
        n += 1
        if dt < best:
            best, clf, cpu = dt, c, dc
    return clf, best, cpu


def paired_timing(variants: dict, splits: dict, dense: str, seeds, reps: int = 3) -> dict:
    """Train time of several models measured interleaved (round robin, ``reps`` rounds per
    seed, min per seed, mean over seeds), so a change in the machine's load hits them
    alike. Discrete models get their quantizer fitted beforehand (the classifier alone).
    ``variants``: name -> (method, params)."""
    out = {name: {"wall": [], "cpu": []} for name in variants}
    for seed in seeds:
        qs = {name: make_quantizer(qkind(m, p), p["m"], p["k"], seed, p.get("transform")).fit(splits["train_vecs"])
              for name, (m, p) in variants.items() if qkind(m, p)}
        best = {name: (math.inf, math.inf) for name in variants}
        for _ in range(reps):
            for name, (m, p) in variants.items():
                w, c = one_fit(make_clf(m, p, seed, dense, qs.get(name)), splits["train"], **fit_kw(m))
                if w < best[name][0]:
                    best[name] = (w, c)
        for name in variants:
            out[name]["wall"].append(best[name][0])
            out[name]["cpu"].append(best[name][1])
    return {name: {"wall_s": statistics.fmean(v["wall"]), "cpu_s": statistics.fmean(v["cpu"]),
                   "wall_by_seed": v["wall"], "cpu_by_seed": v["cpu"], "params": variants[name][1],
                   "method": variants[name][0]} for name, v in out.items()}


def saved_size(clf) -> int:
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "model.mmq"
        clf.save(f)
        return f.stat().st_size


def measure(method: str, p: dict, splits: dict, dense: str, seeds) -> dict:
    runs = []
    for seed in seeds:
        r = {"seed": seed}
        kw = fit_kw(method)
        kind = qkind(method, p)
        if kind:
            # quantizer fitted first and passed in: times the classifier alone
            tq0 = time.perf_counter()
            q = make_quantizer(kind, p["m"], p["k"], seed, p.get("transform")).fit(splits["train_vecs"])
            r["quantizer_fit_s"] = time.perf_counter() - tq0
            # the part of fit() that text-only does not have: vectors out of the frame, encoded
            te0 = time.perf_counter()
            q.encode(dense_matrix(splits["train"], dense)[0])
            r["encode_s"] = time.perf_counter() - te0
            clf, r["train_s"], r["train_cpu_s"] = timed_fit(
                lambda: make_clf(method, p, seed, dense, q), splits["train"], kw=kw)
            # quantizer fitted inside fit(): the full pipeline
            _, r["train_with_quantizer_s"], _ = timed_fit(
                lambda: make_clf(method, p, seed, dense, None), splits["train"], kw=kw)
        else:
            clf, r["train_s"], r["train_cpu_s"] = timed_fit(
                lambda: make_clf(method, p, seed, dense), splits["train"], kw=kw)
        if method in SET_SPEC and SET_SPEC[method].get("blend"):
            h = clf.history
            r["gblend_history"] = h.to_dicts()
            last = h.filter(h["epoch"] == h["epoch"].max())
            r["gblend_last_weights"] = dict(zip(last["head"].to_list(), last["weight"].to_list()))
            # mean over the run, each super-epoch weighted by its number of epochs
            import polars as pl

            mean = h.group_by("head", maintain_order=True).agg(
                (pl.col("weight") * pl.col("epochs")).sum() / pl.col("epochs").sum())
            r["gblend_mean_weights"] = dict(zip(mean["head"].to_list(), mean["weight"].to_list()))
        r["valid_acc"] = clf.test(splits["valid"]).precision
        r["test_acc"] = clf.test(splits["test"]).precision
        # per test row: 1 if right (for the paired bootstrap of the targets' differences)
        r["test_correct"] = correct_string(clf.predict(splits["test"])["label"].to_list(), splits["test"])
        r["model_bytes"] = saved_size(clf)
        runs.append(r)
    return summarise_runs(runs)


def correct_string(pred: list, frame) -> str:
    """'1'/'0' per row of ``frame``: whether ``pred`` is its label (compact in the JSON)."""
    return "".join("1" if p == y else "0" for p, y in zip(pred, frame["label"].to_list(), strict=True))


def row_scores(res: dict):
    """Per test row, the fraction of the seeds' models that got it right (its mean is the
    mean test accuracy over the seeds)."""
    import numpy as np

    runs = res.get("runs") or [res]
    return np.mean([[c == "1" for c in r["test_correct"]] for r in runs], axis=0)


BOOT_N = 10_000


def paired_ci(a: dict, b: dict, level: float = 0.95):
    """Difference of mean test accuracy a - b in points, with a paired bootstrap interval
    over the test rows (the same resampled rows for both; seeded, BOOT_N resamples). It
    measures how much the verdict depends on which 800 rows the test split happens to
    hold; the seeds' spread is already averaged inside each row's score."""
    import numpy as np

    d = row_scores(a) - row_scores(b)
    rng = np.random.default_rng(20261123)
    idx = rng.integers(0, len(d), size=(BOOT_N, len(d)))
    boots = d[idx].mean(axis=1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return 100 * float(d.mean()), 100 * float(lo), 100 * float(hi)


def ci_text(a: dict, b: dict) -> str:
    _, lo, hi = paired_ci(a, b)
    return f"paired bootstrap 95% CI [{lo:+.2f}, {hi:+.2f}]"


def summarise_runs(runs: list) -> dict:
    def ms(key):
        xs = [r[key] for r in runs if key in r]
        if not xs:
            return None, None
        return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)

    out = {"runs": runs}
    for key in ("test_acc", "valid_acc", "train_s", "train_cpu_s", "train_with_quantizer_s", "quantizer_fit_s",
                "encode_s",
                "model_bytes"):
        m, s = ms(key)
        if m is not None:
            out[key] = m
            out[key + "_sd"] = s
    return out


def sklearn_refs(splits: dict, dense: str) -> dict:
    """TF-IDF + LR (text), LR on standardised dense vectors, late fusion. C and the fusion
    weight are chosen on valid. Deterministic (lbfgs): one run, sd 0. BLAS is held to one
    thread, like the mmq models (lbfgs's BLAS threads spin badly on a busy 2-core box)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _sklearn_refs(splits, dense)


def _sklearn_refs(splits: dict, dense: str) -> dict:
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tr, va, te = splits["train"], splits["valid"], splits["test"]
    classes = sorted(set(tr["label"].to_list()))
    y = {s: np.array([classes.index(v) for v in splits[s]["label"].to_list()]) for s in ("train", "valid", "test")}
    res: dict = {}

    def acc(prob, s):
        return float((prob.argmax(1) == y[s]).mean())

    def size(obj) -> int:
        return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))

    # text: TF-IDF word 1-2 grams + LR
    text_grid = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
    best = None
    for C in text_grid:
        t0 = time.perf_counter()
        m = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                          LogisticRegression(C=C, max_iter=2000))
        m.fit(tr["text"].to_list(), y["train"])
        fit_s = time.perf_counter() - t0
        pv = m.predict_proba(va["text"].to_list())
        a = acc(pv, "valid")
        if best is None or a > best[0]:
            best = (a, C, m, fit_s, pv)
    a, C, mt, fit_s, pv_t = best
    pt_t = mt.predict_proba(te["text"].to_list())
    res["sk_text"] = {"valid_acc": a, "test_acc": acc(pt_t, "test"), "train_s": fit_s,
                      "model_bytes": size(mt), "params": {"C": C, "ngram_range": [1, 2], "sublinear_tf": True},
                      "grid": {"C": list(text_grid)}}

    # image: standardised dense vectors + LR (rows without a vector: the training prior)
    def dense_of(frame):
        x, present = dense_matrix(frame, dense)
        return x, present

    xtr, ptr = dense_of(tr)
    img_grid = (0.0001, 0.0003, 0.001, 0.003, 0.01)
    prior = np.bincount(y["train"], minlength=len(classes)) / len(y["train"])

    def img_proba(model, frame):
        x, present = dense_of(frame)
        out = np.tile(prior, (len(present), 1))
        if x.shape[0]:
            out[present] = model.predict_proba(x)
        return out

    best = None
    for C in img_grid:
        t0 = time.perf_counter()
        m = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000))
        m.fit(xtr, y["train"][ptr])
        fit_s = time.perf_counter() - t0
        pv = img_proba(m, va)
        a = acc(pv, "valid")
        if best is None or a > best[0]:
            best = (a, C, m, fit_s, pv)
    a, C, mi, fit_s_i, pv_i = best
    pt_i = img_proba(mi, te)
    res["sk_image"] = {"valid_acc": a, "test_acc": acc(pt_i, "test"), "train_s": fit_s_i,
                       "model_bytes": size(mi), "params": {"C": C, "standardised": True},
                       "grid": {"C": list(img_grid)}}

    # late fusion: w * p_text + (1 - w) * p_image, w tuned on valid
    ws = [round(i / 20, 2) for i in range(21)]
    scores = [(acc(w * pv_t + (1 - w) * pv_i, "valid"), -abs(w - 0.5), w) for w in ws]
    av, _, w = max(scores)
    res["sk_late"] = {"valid_acc": av, "test_acc": acc(w * pt_t + (1 - w) * pt_i, "test"),
                      "train_s": res["sk_text"]["train_s"] + fit_s_i,
                      "model_bytes": res["sk_text"]["model_bytes"] + res["sk_image"]["model_bytes"],
                      "params": {"w_text": w, "C_text": res["sk_text"]["params"]["C"],
                                 "C_image": res["sk_image"]["params"]["C"]},
                      "grid": {"w_text": ws}}
    for key, prob in (("sk_text", pt_t), ("sk_image", pt_i), ("sk_late", w * pt_t + (1 - w) * pt_i)):
        res[key]["test_correct"] = "".join("1" if ok else "0" for ok in prob.argmax(1) == y["test"])
    for r in res.values():
        r["test_acc_sd"] = r["valid_acc_sd"] = 0.0
    return res


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------
def fmt_p(method: str, p: dict) -> str:
    s = f"dim={p['dim']} epoch={p['epoch']} lr={p['lr']}"
    if method != "image":
        s += f" ngrams={p['word_ngrams']}"
        if p.get("maxn"):
            s += f" char={p['minn']}-{p['maxn']}"
        if p.get("lowercase"):
            s += " lowercase"
        if p.get("split_punct"):
            s += " split_punct"
        if p.get("drop_punct"):
            s += " drop_punct"
    if method in DISC_KINDS:
        s += f" m={p['m']} k={p['k']} alpha={p['alpha']}"
    if p.get("transform"):
        s += f" transform={p['transform']}"
    if method in SET_SPEC:
        if not SET_SPEC[method].get("text", True):
            s = f"dim={p['dim']} epoch={p['epoch']} lr={p['lr']}"
        if qkind(method, p):
            s += f" {p['q'].upper()} m={p['m']} k={p['k']}"
        if SET_SPEC[method]["fusion"] == "discrete":
            s += f" alpha={p.get('alpha', 1.0)}"
        if SET_SPEC[method].get("blend"):
            s += f" blend_window={p.get('blend_window', 1)}"
    return s


def so_sha256() -> str:
    import hashlib
    import mmq

    so = next(Path(mmq.__file__).parent.glob("_mmq*.so"), None)
    return hashlib.sha256(so.read_bytes()).hexdigest() if so else "?"


def git_rev() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # pragma: no cover
        return "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", help=f"multimodal Parquet (default: <data dir>/{DEFAULT_FILE})")
    ap.add_argument("--dense", default="image", help="name of the dense Array column (default: image)")
    ap.add_argument("--workers", type=int, default=2, help="tuning processes (default 2)")
    ap.add_argument("--quick", action="store_true", help="tiny grid, for a smoke test")
    ap.add_argument("--out", help="JSON output (default benches/results/fusion_table[_<name>][_quick].json)")
    args = ap.parse_args()

    if args.data:
        path = Path(args.data).expanduser().resolve()
        if not path.exists():
            print(f"SKIP: {path} not found", file=sys.stderr)
            return 0
    else:
        path = data_dir() / DEFAULT_FILE
        if not path.exists():
            print(f"SKIP: {path} not found (the shared data folder is absent; set MMQ_DATA or pass a "
                  f"Parquet file)", file=sys.stderr)
            return 0
    grid = QUICK_GRID if args.quick else FULL_GRID
    seeds = SEEDS
    dense = args.dense
    t_start = time.perf_counter()
    load_start = os.getloadavg()

    import mmq
    import polars as pl

    splits = load_splits(str(path), dense, with_test=True)
    for s in ("train", "valid", "test"):
        if splits[s].height == 0:
            raise SystemExit(f"{path}: split '{s}' is empty")
    splits["train_vecs"], _ = dense_matrix(splits["train"], dense)
    n_lab = splits["train"]["label"].n_unique()
    print(f"data: {path} ({', '.join(f'{s} {splits[s].height}' for s in ('train', 'valid', 'test'))}; "
          f"{n_lab} labels; dense '{dense}' d={splits['train_vecs'].shape[1]}, "
          f"{splits['train_vecs'].shape[0]} train rows with a vector)")
    print(f"mmq {mmq.__version__} (git {git_rev()}), python {platform.python_version()}, "
          f"{os.cpu_count()} cores, tuning in {args.workers} processes x 1 thread")

    import multiprocessing as mp

    stages: dict = {}
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=mp.get_context("spawn"),
                             initializer=_init_worker, initargs=(str(path), dense)) as pool:
        tuner = Tuner(pool, seeds)

        # -- stage 1a: text-only, full word-level grid -------------------------------
        t0 = time.perf_counter()
        text_cfgs = [dict(dim=d, epoch=e, lr=lr, word_ngrams=wn, minn=0, maxn=0, lowercase=False,
                          **PUNCT["keep"])
                     for d, e, lr, wn in itertools.product(
                         grid["dim"], grid["epoch"], grid["lr_text"], grid["word_ngrams"])]
        tuner.collect("text", tuner.submit("text", text_cfgs, batch_by=lambda p: (p["dim"], p["word_ngrams"])))
        b = tuner.ranked("text")[0][2]
        # -- stage 1b: char n-grams (10x the tokens) at the best dim / word_ngrams -------
        # (and the tokenizer options: lowercase on and off, punctuation kept / split / dropped)
        char_cfgs = [dict(b, epoch=e, lr=lr, minn=c[0], maxn=c[1], lowercase=lc, **PUNCT[pu])
                     for c, lc, pu, e, lr in itertools.product(grid["char"], grid["lowercase"], grid["punct"],
                                                                grid["epoch"], grid["lr_text"])]
        if char_cfgs:
            tuner.collect("text", tuner.submit("text", char_cfgs, batch_by=lambda p: (p["epoch"], p["maxn"])))
        # the options toggled at the best so far when that config's other settings are untried
        # (the best of stage 1a, without char n-grams)
        b = tuner.ranked("text")[0][2]
        lc_cfgs = [c for c in (dict(b, lowercase=lc, **PUNCT[pu])
                               for lc, pu in itertools.product(grid["lowercase"], grid["punct"]))
                   if ckey(c) not in tuner.results["text"]]
        if lc_cfgs:
            tuner.collect("text", tuner.submit("text", lc_cfgs))
        best_text = tuner.ranked("text")[0][2]
        stages["text"] = {"configs": len(text_cfgs) + len(char_cfgs) + len(lc_cfgs), "s": time.perf_counter() - t0}
        print(f"[{time.perf_counter() - t_start:6.1f}s] text-only tuned ({len(text_cfgs)} + {len(char_cfgs)} "
              f"configs x {len(seeds)} seeds): {fmt_p('text', best_text)}")
        shared_tok = {k: best_text[k] for k in ("word_ngrams", "minn", "maxn", "lowercase", "split_punct",
                                               "drop_punct")}

        # -- stage 2a: continuous lr x epoch at a fixed dim; discrete m x k x alpha -----
        t0 = time.perf_counter()
        futs = {}
        for mode in sorted(CONT_MODES, key=lambda m: -("bilinear" in m)):  # slowest first
            cfgs = [dict(dim=grid["cont_stage1_dim"], epoch=e, lr=lr, **shared_tok)
                    for lr, e in itertools.product(grid["lr_cont"], grid["epoch_cont"])]
            futs[mode] = tuner.submit(mode, cfgs, batch_by=lambda p: p["lr"])
        for kind in DISC_KINDS:
            cfgs = [dict(best_text, m=m, k=k, alpha=a)
                    for m, k, a in itertools.product(grid["m"], grid["k"], grid["alpha"])]
            futs[kind] = tuner.submit(kind, cfgs, batch_by=lambda p: (p["m"], p["k"]))
        for method, fs in futs.items():
            tuner.collect(method, fs)
        # the quantizer's transform at the 3 best (m, k, alpha) of each kind
        futs = {kind: tuner.submit(kind, [dict(r[2], transform=t) for r in tuner.ranked(kind)[:3]
                                          for t in grid["transform"]])
                for kind in DISC_KINDS}
        for method, fs in futs.items():
            tuner.collect(method, fs)
        stage2a = {}
        for mode in CONT_MODES:
            stage2a[mode] = tuner.ranked(mode)[0][2]
        for kind in DISC_KINDS:
            stage2a[kind] = tuner.ranked(kind)[0][2]
        stages["stage2a"] = {"s": time.perf_counter() - t0}
        print(f"[{time.perf_counter() - t_start:6.1f}s] stage 2a done (continuous lr x epoch at dim "
              f"{grid['cont_stage1_dim']}; discrete m x k x alpha, then the transform)")

        # -- stage 2b: continuous dim; discrete epoch x lr (text's dim) -----------------
        t0 = time.perf_counter()
        futs = {}
        for mode in CONT_MODES:
            b = stage2a[mode]
            cfgs = [dict(b, dim=d) for d in grid["dim"] if d != b["dim"]]
            futs[mode] = tuner.submit(mode, cfgs, batch_by=lambda p: p["dim"])
        for kind in DISC_KINDS:
            b = stage2a[kind]
            cfgs = [dict(b, epoch=e, lr=lr) for e, lr in itertools.product(grid["epoch"], grid["lr_text"])]
            cfgs = [c for c in cfgs if ckey(c) not in tuner.results[kind]]
            futs[kind] = tuner.submit(kind, cfgs)
        for method, fs in futs.items():
            tuner.collect(method, fs)
        stages["stage2b"] = {"s": time.perf_counter() - t0}
        print(f"[{time.perf_counter() - t_start:6.1f}s] stage 2b done (continuous dim; discrete epoch x lr)")

        # -- stage 3: set models (mmq.sets): deepset, attention, bag, G-Blend, refs ------
        # quantizer kind / m / k (and bag's alpha) of the best discrete model by valid;
        # tokenizer of the text model; then lr x epoch at a fixed dim, dim, lr x epoch again
        # at the new dim if it moved, and char n-grams toggled at the best.
        t0 = time.perf_counter()
        set_q = max(DISC_KINDS, key=lambda kd: tuner.ranked(kd)[0][0])
        qb = tuner.ranked(set_q)[0][2]
        n_set_cfgs = 0

        def set_p(method, **kw):
            p = dict(shared_tok, **kw)
            if SET_SPEC[method].get("image", True):
                p.update(q=set_q, m=qb["m"], k=qb["k"])
                if qb.get("transform"):
                    p["transform"] = qb["transform"]
                if SET_SPEC[method]["fusion"] == "discrete":
                    p["alpha"] = qb["alpha"]
            return p

        def set_lrs(method):
            return grid["lr_set_max"] if SET_SPEC[method].get("pool") == "max" else grid["lr_set"]

        def run_set_stage(make_cfgs, batch_by=None):
            nonlocal n_set_cfgs
            futs = {}
            for method in SET_METHODS:
                cfgs = [c for c in make_cfgs(method) if ckey(c) not in tuner.results.get(method, {})]
                n_set_cfgs += len(cfgs)
                if cfgs:
                    futs[method] = tuner.submit(method, cfgs, batch_by=batch_by)
            for method, fs in futs.items():
                tuner.collect(method, fs)

        d1 = grid["set_stage1_dim"]
        run_set_stage(lambda mt: [set_p(mt, dim=d1, epoch=e, lr=lr)
                                  for lr, e in itertools.product(set_lrs(mt), grid["epoch_set"])],
                      batch_by=lambda p: p["lr"])
        run_set_stage(lambda mt: [dict(tuner.ranked(mt)[0][2], dim=d) for d in grid["dim"]])

        def retune(mt):
            b = tuner.ranked(mt)[0][2]
            if b["dim"] == d1:
                return []
            return [dict(b, epoch=e, lr=lr) for lr, e in itertools.product(set_lrs(mt), grid["epoch_set"])]
        run_set_stage(retune, batch_by=lambda p: p["lr"])

        def toggle_tok(mt):
            # char n-grams (none / each of grid["char"]) x lowercase x punctuation at the best config
            b = tuner.ranked(mt)[0][2]
            if not SET_SPEC[mt].get("text", True):
                return []
            chars = [(0, 0)] + [tuple(c) for c in grid["char"]]
            return [dict(b, minn=c[0], maxn=c[1], lowercase=lc, **PUNCT[pu])
                    for c, lc, pu in itertools.product(chars, grid["lowercase"], grid["punct"])]
        run_set_stage(toggle_tok)
        # G-Blend: the super-epoch length at the best config
        run_set_stage(lambda mt: [dict(tuner.ranked(mt)[0][2], blend_window=w) for w in grid["blend_window"]
                                  if w != 1] if SET_SPEC[mt].get("blend") else [])
        stages["stage3"] = {"configs": n_set_cfgs, "s": time.perf_counter() - t0, "quantizer": set_q,
                            "m": qb["m"], "k": qb["k"], "alpha": qb["alpha"], "transform": qb.get("transform")}
        print(f"[{time.perf_counter() - t_start:6.1f}s] stage 3 done (set models: {n_set_cfgs} configs x "
              f"{len(seeds)} seeds; {set_q.upper()} m={qb['m']} k={qb['k']} from the discrete tuning)")

    tune_s = time.perf_counter() - t_start
    methods = ["text"] + list(CONT_MODES) + list(DISC_KINDS) + list(SET_METHODS)
    chosen, notes = {}, {}
    for method in methods:
        ranked = tuner.ranked(method)
        chosen[method] = dict(ranked[0][2])
        n_fail = sum(1 for r in ranked if r[0] < 0)
        notes[method] = {
            "chosen": chosen[method],
            "valid_mean": ranked[0][0], "valid_sd": ranked[0][1],
            "runner_up": [{"p": r[2], "valid_mean": r[0]} for r in ranked[1:4]],
            "configs_tried": len(ranked), "configs_failed": n_fail,
            "failures": sorted({err for r in ranked for err in r[3]["errors"]})[:3],
            "all": [{"p": r[2], "valid_mean": r[0] if r[0] >= 0 else None, "valid_sd": r[1],
                     "valid_by_seed": [r[3]["valid"].get(s) for s in seeds],
                     "tune_fit_s_mean": statistics.fmean(r[3]["fit_s"])} for r in ranked],
        }

    # -- final: fit each chosen config on the 3 seeds, serially, timed ------------------
    print(f"[{time.perf_counter() - t_start:6.1f}s] tuning done; measuring the chosen models serially")
    final = {}
    for method in methods:
        final[method] = measure(method, chosen[method], splits, dense, seeds)
        final[method]["params"] = chosen[method]
    # discrete at the text model's exact hyperparameters (same dim/epoch/lr): time parity check
    matched = {}
    for kind in DISC_KINDS:
        p = dict(chosen["text"], m=chosen[kind]["m"], k=chosen[kind]["k"], alpha=chosen[kind]["alpha"])
        matched[kind] = measure(kind, p, splits, dense, seeds)
        matched[kind]["params"] = p
    # text-only vs discrete train time, interleaved (the time target reads this)
    variants = {"text": ("text", chosen["text"])}
    for kind in DISC_KINDS:
        variants[kind] = (kind, chosen[kind])
        variants[kind + "@text"] = (kind, matched[kind]["params"])
    paired = paired_timing(variants, splits, dense, seeds)
    # attention vs discrete fusion train time, interleaved, same dim/epoch/lr/tokenizer and
    # the same quantizer (kind, m, k), at attention's tuned values and at discrete's
    att = chosen["attention"]
    dq = chosen[att["q"]]
    # the tokenizer options too: they change the number of text tokens per row
    hyper = ("dim", "epoch", "lr", "word_ngrams", "minn", "maxn", "lowercase", "split_punct", "drop_punct")
    att_variants = {
        "attention": ("attention", att),
        "discrete@attention": (att["q"], dict({h: att.get(h, False) for h in hyper}, m=att["m"], k=att["k"],
                                              alpha=dq["alpha"], transform=att.get("transform"))),
        "bag@attention": ("bag", dict(att, alpha=dq["alpha"])),
        "attention@discrete": ("attention", dict(att, **{h: dq.get(h, False) for h in hyper}, m=dq["m"],
                                                 k=dq["k"], transform=dq.get("transform"))),
        "discrete": (att["q"], dq),
    }
    print(f"[{time.perf_counter() - t_start:6.1f}s] timing attention vs discrete (interleaved)")
    paired_att = paired_timing(att_variants, splits, dense, seeds)
    sk = sklearn_refs(splits, dense)

    # -- missing images: evaluation workers (they read the test split) -------------------
    print(f"[{time.perf_counter() - t_start:6.1f}s] missing-image experiment ({MISSING_FRAC:.0%} of the rows)")
    t0 = time.perf_counter()
    bd_valid = max(DISC_KINDS, key=lambda m: final[m]["valid_acc"])
    miss_specs = ([("text", "null")] + [(m, "zero") for m in MISSING_CONT] + [(m, "null") for m in MISSING_CONT]
                  + [(bd_valid, "null")]
                  + [(m, "null") for m in ("deepset", "deepset_max", "attention", "bag", "deepset_gblend",
                                           "bag_gblend")])
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=mp.get_context("spawn"),
                             initializer=_init_worker, initargs=(str(path), dense, True)) as pool:
        # slowest (continuous) first
        order = sorted(miss_specs, key=lambda mh: mh[0] not in MISSING_CONT)
        futs = [pool.submit(missing_job, m, chosen[m], how, seed, MISSING_FRAC) for m, how in order for seed in seeds]
        miss_runs = [f.result() for f in futs]
    missing = {}
    for m, how in miss_specs:
        rs = sorted((r for r in miss_runs if r["method"] == m and r["how"] == how), key=lambda r: r["seed"])
        e = {"method": m, "how": how, "runs": rs}
        for key in ("full", "test_missing", "train_test_missing"):
            xs = [r[key] for r in rs]
            e[key] = statistics.fmean(xs)
            e[key + "_sd"] = statistics.stdev(xs) if len(xs) > 1 else 0.0
            if key != "full":
                ds = [r[key] - r["full"] for r in rs]
                e[key + "_drop"] = statistics.fmean(ds)
                e[key + "_drop_sd"] = statistics.stdev(ds) if len(ds) > 1 else 0.0
        missing[f"{m}/{how}"] = e
    stages["missing"] = {"s": time.perf_counter() - t0}
    total_s = time.perf_counter() - t_start

    # -- report ------------------------------------------------------------------------
    names = {"text": "mmq text-only", "image": "mmq image-only", "add": "mmq add", "max": "mmq max",
             "gated": "mmq gated", "bilinear": "mmq bilinear", "bilinear_gated": "mmq bilinear_gated",
             "pq": "mmq PQ discrete", "rspq": "mmq RSPQ discrete", "sk_text": "sklearn TF-IDF+LR (text)",
             "sk_image": "sklearn LR (image)", "sk_late": "sklearn late fusion",
             "set_text": "set text-only", "set_image": "set image-only", "deepset": "deepset mean/mean",
             "deepset_max": "deepset max/max", "attention": "attention (MI2P)", "bag": "bag (naive joint)",
             "bag_gblend": "bag + G-Blend", "deepset_gblend": "deepset + G-Blend",
             "bag_gblend_offline": "bag + G-Blend offline", "deepset_gblend_offline": "deepset + G-Blend offline"}
    rows = methods + ["sk_text", "sk_image", "sk_late"]
    allres = dict(final, **sk)
    hdr = f"{'method':<26} {'test acc (3 seeds)':>19} {'valid acc':>9} {'train s':>8} {'+quant s':>9} {'size bytes':>11}"
    lines = [hdr, "-" * len(hdr)]
    for r in rows:
        x = allres[r]
        tq = f"{x['train_with_quantizer_s']:.3f}" if "train_with_quantizer_s" in x else "-"
        lines.append(f"{names[r]:<26} {x['test_acc']:>11.4f} ± {x['test_acc_sd']:.4f} {x['valid_acc']:>9.4f} "
                     f"{x['train_s']:>8.3f} {tq:>9} {int(x['model_bytes']):>11,}")
    table = "\n".join(lines)
    print()
    print(table)
    print("(sklearn rows are deterministic: one fit, sd 0; train s of the chosen C, 1 BLAS thread; "
          "size = pickled model; late fusion = both. 'set' rows: mmq.sets models, fit(text=[...]); "
          "deepset mean/mean is the naive joint counterpart of deepset + G-Blend; set text-only / "
          "image-only are the deepset with only that modality (image-only: fit(text=[])))")

    # missing images
    mhdr = (f"{'model (missing image =)':<34} {'full test':>15} {'30% test images missing':>26} "
            f"{'30% train+test missing':>26}")
    mlines = [mhdr, "-" * len(mhdr)]
    for key, e in missing.items():
        label = f"{names[e['method']]} ({'zero vector' if e['how'] == 'zero' else 'null'})"
        cells = [f"{e['full']:.4f} ± {e['full_sd']:.4f}"]
        for k2 in ("test_missing", "train_test_missing"):
            cells.append(f"{e[k2]:.4f} ({100 * e[k2 + '_drop']:+.2f} ± {100 * e[k2 + '_drop_sd']:.2f})")
        mlines.append(f"{label:<34} {cells[0]:>15} {cells[1]:>26} {cells[2]:>26}")
    mtable = "\n".join(mlines)
    print()
    print(mtable)
    print(f"(test accuracy mean ± sd over seeds {list(seeds)}; in brackets the drop vs 'full test' in points, "
          f"paired per seed. {MISSING_FRAC:.0%} of the rows lose their image: a seeded choice per seed, the same "
          "rows for every model. '30% test images missing': models trained on full data. "
          "'30% train+test missing': trained with 30% of the training images removed, tested on the same "
          "30%-missing test rows. 'null' = the library's missing modality (empty set / no visual tokens / "
          "text vector alone); 'zero vector' = null replaced by zeros before fit and predict.)")

    # best models are chosen by VALID accuracy (mean over seeds), never by test
    def best_by_valid(ms):
        return max(ms, key=lambda m: final[m]["valid_acc"])

    def best_by_test(ms):
        return max(ms, key=lambda m: final[m]["test_acc"])

    cont = [m for m in CONT_MODES if m != "image"]
    multimodal = list(CONT_MODES) + list(DISC_KINDS) + [m for m in SET_METHODS if m not in ("set_text", "set_image")]
    bd, bc, bm = best_by_valid(DISC_KINDS), best_by_valid(cont), best_by_valid(multimodal)
    text_acc = final["text"]["test_acc"]
    pts = lambda a: 100 * a  # noqa: E731
    checks = []

    def add(name, ok, detail):
        checks.append({"target": name, "pass": bool(ok), "detail": detail})

    gain = pts(final[bd]["test_acc"] - text_acc)
    add(f"best discrete beats text-only by >= {T_DISC_GAIN_PTS} point", gain >= T_DISC_GAIN_PTS,
        f"{names[bd]} {final[bd]['test_acc']:.4f} vs text-only {text_acc:.4f}: {gain:+.2f} pts, "
        + ci_text(final[bd], final["text"]))
    gap = pts(final[bd]["test_acc"] - final[bc]["test_acc"])
    add(f"best discrete within {T_DISC_VS_CONT_PTS} point of the best continuous mode",
        gap >= -T_DISC_VS_CONT_PTS,
        f"{names[bd]} {final[bd]['test_acc']:.4f} vs {names[bc]} {final[bc]['test_acc']:.4f}: {gap:+.2f} pts, "
        + ci_text(final[bd], final[bc]))
    # interleaved timings (paired_timing): text-only vs the discrete models, classifier alone
    tt = paired["text"]
    for suffix, what in (("", "as tuned"), ("@text", "at text-only's dim/epoch/lr")):
        pv = paired[bd + suffix]
        ratio, cratio = pv["wall_s"] / tt["wall_s"], pv["cpu_s"] / tt["cpu_s"]
        other = [k for k in DISC_KINDS if k != bd][0]
        po = paired[other + suffix]
        add(f"discrete train time (classifier alone) <= {T_DISC_TIME_RATIO}x text-only, {what}",
            ratio <= T_DISC_TIME_RATIO,
            f"{names[bd]} {pv['wall_s']:.3f}s vs text-only {tt['wall_s']:.3f}s: {ratio:.2f}x wall, "
            f"{cratio:.2f}x CPU ({names[other]}: {po['wall_s'] / tt['wall_s']:.2f}x)"
            + (f"; vectors -> codes {final[bd]['encode_s']:.3f}s of it; with the quantizer fit "
               f"{final[bd]['train_with_quantizer_s']:.3f}s" if not suffix else ""))
    d = pts(final[bm]["test_acc"] - sk["sk_late"]["test_acc"])
    add("mmq best multimodal >= sklearn late fusion", d >= 0,
        f"{names[bm]} {final[bm]['test_acc']:.4f} vs late fusion {sk['sk_late']['test_acc']:.4f}: {d:+.2f} pts, "
        + ci_text(final[bm], sk["sk_late"]) + f"; text alone: mmq text-only vs TF-IDF+LR "
        f"{pts(text_acc - sk['sk_text']['test_acc']):+.2f} pts, " + ci_text(final["text"], sk["sk_text"]))
    # G-Blend (test accuracy, mean of the seeds)
    ref_single = max(("set_text", "set_image"), key=lambda m: final[m]["test_acc"])
    for gb, naive in GBLEND.items():
        g, s1, nv = final[gb]["test_acc"], final[ref_single]["test_acc"], final[naive]["test_acc"]
        add(f"{names[gb]} >= best single-modality set model", g >= s1,
            f"{g:.4f} vs {names[ref_single]} {s1:.4f} ({pts(g - s1):+.2f} pts; set image-only "
            f"{final['set_image']['test_acc']:.4f}; mmq text-only {text_acc:.4f}: {pts(g - text_acc):+.2f} pts), "
            + ci_text(final[gb], final[ref_single]))
        add(f"{names[gb]} >= naive joint training ({names[naive]})", g >= nv,
            f"{g:.4f} vs {nv:.4f} ({pts(g - nv):+.2f} pts), " + ci_text(final[gb], final[naive]))
    # attention vs discrete train time (interleaved, same data / hyperparameters)
    for a, d_, what in (("attention", "discrete@attention", "at attention's tuned dim/epoch/lr"),
                        ("attention@discrete", "discrete", "at discrete's tuned dim/epoch/lr")):
        pa, pd = paired_att[a], paired_att[d_]
        ratio = pa["wall_s"] / pd["wall_s"]
        hp = pa["params"]
        add(f"attention train time <= {T_ATT_TIME_RATIO}x discrete fusion, {what}", ratio <= T_ATT_TIME_RATIO,
            f"{pa['wall_s']:.3f}s vs {names[hp['q']]} {pd['wall_s']:.3f}s: {ratio:.2f}x wall, "
            f"{pa['cpu_s'] / pd['cpu_s']:.2f}x CPU (dim={hp['dim']} epoch={hp['epoch']}, {hp['q'].upper()} "
            f"m={hp['m']} k={hp['k']}, quantizers fitted beforehand"
            + (f"; set-model bag {paired_att['bag@attention']['wall_s'] / pd['wall_s']:.2f}x)" if a == "attention"
               else ")"))
    # missing images: deepset's drop vs the zero-filled continuous modes
    ds = missing["deepset/null"]
    for k2, what in (("test_missing", "30% of test images missing"),
                     ("train_test_missing", "30% of train and test images missing")):
        zs = {m: missing[f"{m}/zero"][k2 + "_drop"] for m in MISSING_CONT}
        add(f"deepset loses less than every zero-filled continuous mode, {what}",
            all(ds[k2 + "_drop"] > z for z in zs.values()),
            f"deepset {100 * ds[k2 + '_drop']:+.2f} pts vs zero-filled "
            + ", ".join(f"{m} {100 * z:+.2f}" for m, z in zs.items()) + " pts")
    print("\nTargets (the 'best' of a family is the one with the highest mean VALID accuracy):")
    for c in checks:
        print(f"  {'PASS' if c['pass'] else 'FAIL'}  {c['target']}: {c['detail']}")
    alt = []
    for label, fam in (("discrete", DISC_KINDS), ("continuous", cont), ("multimodal", multimodal)):
        bv, bt = best_by_valid(fam), best_by_test(fam)
        if bv != bt:
            alt.append(f"best {label} by test would be {names[bt]} ({final[bt]['test_acc']:.4f}) "
                       f"instead of {names[bv]} ({final[bv]['test_acc']:.4f})")
    for a in alt:
        print(f"  note: {a}")

    print("\nNotes: chosen hyperparameters (mean valid accuracy over seeds; valid = "
          f"{splits['valid'].height} rows, so 1 row = {100 / splits['valid'].height:.2f} pts)")
    for method in methods:
        n = notes[method]
        ru = "; ".join(f"{fmt_p(method, r['p'])} -> {r['valid_mean']:.4f}" for r in n["runner_up"])
        fail = f", {n['configs_failed']} diverged" if n["configs_failed"] else ""
        print(f"  {names[method]:<22} {fmt_p(method, n['chosen'])}: valid {n['valid_mean']:.4f} ± "
              f"{n['valid_sd']:.4f} ({n['configs_tried']} configs{fail}); next: {ru}")
    for r in ("sk_text", "sk_image", "sk_late"):
        print(f"  {names[r]:<22} {sk[r]['params']} (valid {sk[r]['valid_acc']:.4f})")
    print("  Protocol: text-only gets the full word-level grid, then char n-grams x lowercase x punctuation x epoch "
          "x lr at its "
          "best dim / word_ngrams; the fused models reuse its tokenizer "
          f"(word_ngrams={shared_tok['word_ngrams']}, char={shared_tok['minn']}-{shared_tok['maxn']}, "
          f"lowercase={shared_tok['lowercase']}, split_punct={shared_tok['split_punct']}, "
          f"drop_punct={shared_tok['drop_punct']}); "
          f"continuous: lr x epoch at dim {grid['cont_stage1_dim']}, then dim at the best (lr, epoch); "
          "discrete: m x k x alpha at the text model's dim/epoch/lr, then the quantizer transform "
          f"{list(grid['transform'])} at the 3 best, then epoch x lr at the best (m, k, alpha, transform). Ties go to the cheaper model (dim x epoch), then the lower lr.")
    st3 = stages["stage3"]
    print(f"  Set models: quantizer {st3['quantizer'].upper()} m={st3['m']} k={st3['k']} "
          f"transform={st3.get('transform')} (bag: alpha={st3['alpha']}) "
          "from the discrete tuning, tokenizer from text-only; lr x epoch at dim "
          f"{grid['set_stage1_dim']} (lr {list(grid['lr_set'])}, max pooling {list(grid['lr_set_max'])}; epochs "
          f"{list(grid['epoch_set'])}), then dim {list(grid['dim'])}, lr x epoch again at the new dim if it "
          f"moved, then char n-grams x lowercase x punctuation at the best; {st3['configs']} configs x {len(seeds)} seeds in {st3['s']:.0f}s. "
          f"G-Blend: holdout=0.1 (default), then blend_window {list(grid['blend_window'])} at the best.")
    for gb in GBLEND:
        for key, what in (("gblend_mean_weights", "mean over the run"), ("gblend_last_weights", "last super-epoch")):
            ws = [r[key] for r in final[gb]["runs"]]
            heads = list(ws[0])
            print(f"  {names[gb]}: loss weights, {what} (mean over seeds) "
                  + ", ".join(f"{h} {statistics.fmean(w[h] for w in ws):.2f}" for h in heads))
    print(f"  Timing: train s = fit wall time, best of up to 3 repeats per seed, mean over seeds, "
          f"threads=1; '+quant s' = discrete with the quantizer fitted inside fit(). "
          f"Total run {total_s:.0f}s (tuning {tune_s:.0f}s); load average (1 min) at start "
          f"{load_start[0]:.1f}, at end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.")

    out = Path(args.out) if args.out else REPO / "benches" / "results" / (
        "fusion_table" + ("" if path.name == DEFAULT_FILE else f"_{path.stem}")
        + ("_quick" if args.quick else "") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "data": str(path), "dense": dense, "rows": {s: splits[s].height for s in ("train", "valid", "test")},
        "seeds": list(seeds), "grid": {k: list(v) if isinstance(v, tuple) else v for k, v in grid.items()},
        "mmq_version": mmq.__version__, "git": git_rev(), "python": platform.python_version(),
        "polars": pl.__version__, "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "mmq_module": str(Path(mmq.__file__).parent), "mmq_so_sha256": so_sha256(),
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "quick": args.quick, "total_s": total_s, "tuning_s": tune_s, "stages": stages,
        "results": allres, "discrete_at_text_hyperparameters": matched, "paired_train_timing": paired,
        "chosen": chosen, "tuning": notes, "targets": checks, "notes_alt_selection": alt,
        "table": table, "paired_train_timing_attention": paired_att, "missing_images": {
            "fraction": MISSING_FRAC, "results": missing, "table": mtable,
            "protocol": "seeded 30% of test rows lose their image (models trained on full data); separately "
                        "30% of training rows and the same 30% of test rows (trained and tested with missing "
                        "images); zero = null replaced by a zero vector before fit/predict; null = the "
                        "library's missing modality"},
    }
    # written to a temporary file first and moved into place: an interrupted run leaves the
    # previous results as they were
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=float))
    os.replace(tmp, out)
    print(f"\nwrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
