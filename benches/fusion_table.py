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

1. text-only: (a) full grid dim x epoch x lr x word_ngrams without char n-grams, then
   (b) char n-grams 3-6 x epoch x lr at the best (dim, word_ngrams) of (a);
2. continuous modes: word_ngrams / char n-grams reused from text; lr x epoch at dim 10
   (epochs 2-30, lr 0.02-0.2), then dim in {10, 20, 50} at the best (lr, epoch);
3. discrete: all text hyperparameters reused, then m x k x alpha; then epoch x lr
   re-tuned at the best (m, k, alpha). Quantizer fits are cached per (kind, m, k, seed).

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
)
QUICK_GRID = dict(
    dim=(10, 20), epoch=(5, 10), lr_text=(0.1, 0.5), word_ngrams=(1, 2), char=(),
    epoch_cont=(2, 5), lr_cont=(0.05,), cont_stage1_dim=10, m=(8, 16), k=(16, 64), alpha=(0.5, 1.0),
)
CONT_MODES = ("image", "add", "max", "gated", "bilinear", "bilinear_gated")
DISC_KINDS = ("pq", "rspq")

# ---- targets -------------------------------------------------------------------------
T_DISC_GAIN_PTS = 1.0      # best discrete >= text-only + 1 point (test, mean of seeds)
T_DISC_VS_CONT_PTS = 1.0   # best discrete >= best continuous - 1 point
T_DISC_TIME_RATIO = 1.3    # discrete train time (classifier alone) <= 1.3 x text-only's


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
def make_quantizer(kind: str, m: int, k: int, seed: int):
    import mmq

    return mmq.PQ(m=m, k=k, seed=seed) if kind == "pq" else mmq.RSPQ(m=m, k=k, seed=seed)


def make_clf(method: str, p: dict, seed: int, dense: str, quantizer=None):
    """A Classifier for a table row. ``p`` holds dim, epoch, lr, word_ngrams, minn, maxn
    (+ m, k, alpha for discrete). ``quantizer`` (discrete only): fitted or not."""
    import mmq

    base = dict(dim=p["dim"], epoch=p["epoch"], lr=p["lr"], word_ngrams=p["word_ngrams"],
                minn=p["minn"], maxn=p["maxn"], threads=1, seed=seed, progress=False)
    if method == "text":
        return mmq.Classifier(**base)
    if method in CONT_MODES:
        return mmq.Classifier(**base, fusion=method, dense=[dense], rank=None)
    if method in DISC_KINDS:
        q = quantizer if quantizer is not None else make_quantizer(method, p["m"], p["k"], seed)
        return mmq.Classifier(**base, dense={dense: q}, alpha=p["alpha"])
    raise ValueError(method)


def ckey(p: dict) -> str:
    return json.dumps(p, sort_keys=True)


# --------------------------------------------------------------------------------------
# tuning workers (valid split only: the workers never load the test split)
# --------------------------------------------------------------------------------------
_W: dict = {}


def _init_worker(path: str, dense: str) -> None:
    # one core per worker: the models run with threads=1; keep the quantizers' k-means
    # (rayon's global pool, read on first use) on one thread too
    os.environ["RAYON_NUM_THREADS"] = "1"
    import faulthandler

    faulthandler.enable()  # a crash in the native core prints a traceback
    _W["dense"] = dense
    _W.update(load_splits(path, dense, with_test=False))
    _W["qcache"] = {}


def _quantizer(kind, m, k, seed):
    key = (kind, m, k, seed)
    q = _W["qcache"].get(key)
    if q is None:
        if "train_vecs" not in _W:
            _W["train_vecs"] = dense_matrix(_W["train"], _W["dense"])[0]
        q = make_quantizer(kind, m, k, seed).fit(_W["train_vecs"])
        _W["qcache"][key] = q
    return q


def job(method: str, configs: list, seed: int) -> list:
    """Fit every config (same method, same seed) and return its valid accuracy."""
    from mmq.errors import MmqError

    out = []
    for p in configs:
        q = _quantizer(method, p["m"], p["k"], seed) if method in DISC_KINDS else None
        t0 = time.perf_counter()
        try:
            clf = make_clf(method, p, seed, _W["dense"], q).fit(_W["train"])
            fit_s = time.perf_counter() - t0
            acc = clf.test(_W["valid"]).precision
            if not math.isfinite(acc):
                acc = None
        except MmqError as e:  # diverged ("training diverged ... lower lr")
            fit_s, acc = time.perf_counter() - t0, None
            p = dict(p, error=str(e)[:120])
        out.append((p, seed, acc, fit_s))
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
def one_fit(clf, train):
    """(wall s, CPU s of this process) of ``clf.fit(train)``."""
    c0, t0 = time.process_time(), time.perf_counter()
    clf.fit(train)
    return time.perf_counter() - t0, time.process_time() - c0


def timed_fit(make, train, min_total_s: float = 0.6, max_repeats: int = 3):
    """Fit ``make()`` on train; best wall time of up to ``max_repeats`` fits (repeat only
    while the total stays under ``min_total_s``; fits are deterministic with threads=1).
    Returns (model, wall s, CPU s of that fit)."""
    best, total, clf, n, cpu = math.inf, 0.0, None, 0, math.inf
    while n < max_repeats and (n == 0 or total < min_total_s):
        c = make()
        dt, dc = one_fit(c, train)
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
        qs = {name: make_quantizer(m, p["m"], p["k"], seed).fit(splits["train_vecs"])
              for name, (m, p) in variants.items() if m in DISC_KINDS}
        best = {name: (math.inf, math.inf) for name in variants}
        for _ in range(reps):
            for name, (m, p) in variants.items():
                w, c = one_fit(make_clf(m, p, seed, dense, qs.get(name)), splits["train"])
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
        if method in DISC_KINDS:
            # quantizer fitted first and passed in: times the classifier alone
            tq0 = time.perf_counter()
            q = make_quantizer(method, p["m"], p["k"], seed).fit(splits["train_vecs"])
            r["quantizer_fit_s"] = time.perf_counter() - tq0
            # the part of fit() that text-only does not have: vectors out of the frame, encoded
            te0 = time.perf_counter()
            q.encode(dense_matrix(splits["train"], dense)[0])
            r["encode_s"] = time.perf_counter() - te0
            clf, r["train_s"], r["train_cpu_s"] = timed_fit(
                lambda: make_clf(method, p, seed, dense, q), splits["train"])
            # quantizer fitted inside fit(): the full pipeline
            _, r["train_with_quantizer_s"], _ = timed_fit(
                lambda: make_clf(method, p, seed, dense, None), splits["train"])
        else:
            clf, r["train_s"], r["train_cpu_s"] = timed_fit(
                lambda: make_clf(method, p, seed, dense), splits["train"])
        r["valid_acc"] = clf.test(splits["valid"]).precision
        r["test_acc"] = clf.test(splits["test"]).precision
        r["model_bytes"] = saved_size(clf)
        runs.append(r)
    return summarise_runs(runs)


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
    if method in DISC_KINDS:
        s += f" m={p['m']} k={p['k']} alpha={p['alpha']}"
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
        text_cfgs = [dict(dim=d, epoch=e, lr=lr, word_ngrams=wn, minn=0, maxn=0)
                     for d, e, lr, wn in itertools.product(
                         grid["dim"], grid["epoch"], grid["lr_text"], grid["word_ngrams"])]
        tuner.collect("text", tuner.submit("text", text_cfgs, batch_by=lambda p: (p["dim"], p["word_ngrams"])))
        b = tuner.ranked("text")[0][2]
        # -- stage 1b: char n-grams (10x the tokens) at the best dim / word_ngrams -------
        char_cfgs = [dict(b, epoch=e, lr=lr, minn=c[0], maxn=c[1])
                     for c, e, lr in itertools.product(grid["char"], grid["epoch"], grid["lr_text"])]
        if char_cfgs:
            tuner.collect("text", tuner.submit("text", char_cfgs, batch_by=lambda p: (p["epoch"], p["maxn"])))
        best_text = tuner.ranked("text")[0][2]
        stages["text"] = {"configs": len(text_cfgs) + len(char_cfgs), "s": time.perf_counter() - t0}
        print(f"[{time.perf_counter() - t_start:6.1f}s] text-only tuned ({len(text_cfgs)} + {len(char_cfgs)} "
              f"configs x {len(seeds)} seeds): {fmt_p('text', best_text)}")
        shared_tok = {k: best_text[k] for k in ("word_ngrams", "minn", "maxn")}

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
        stage2a = {}
        for mode in CONT_MODES:
            stage2a[mode] = tuner.ranked(mode)[0][2]
        for kind in DISC_KINDS:
            stage2a[kind] = tuner.ranked(kind)[0][2]
        stages["stage2a"] = {"s": time.perf_counter() - t0}
        print(f"[{time.perf_counter() - t_start:6.1f}s] stage 2a done (continuous lr x epoch at dim "
              f"{grid['cont_stage1_dim']}; discrete m x k x alpha)")

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

    tune_s = time.perf_counter() - t_start
    methods = ["text"] + list(CONT_MODES) + list(DISC_KINDS)
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
    sk = sklearn_refs(splits, dense)
    total_s = time.perf_counter() - t_start

    # -- report ------------------------------------------------------------------------
    names = {"text": "mmq text-only", "image": "mmq image-only", "add": "mmq add", "max": "mmq max",
             "gated": "mmq gated", "bilinear": "mmq bilinear", "bilinear_gated": "mmq bilinear_gated",
             "pq": "mmq PQ discrete", "rspq": "mmq RSPQ discrete", "sk_text": "sklearn TF-IDF+LR (text)",
             "sk_image": "sklearn LR (image)", "sk_late": "sklearn late fusion"}
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
          "size = pickled model; late fusion = both)")

    # best models are chosen by VALID accuracy (mean over seeds), never by test
    def best_by_valid(ms):
        return max(ms, key=lambda m: final[m]["valid_acc"])

    def best_by_test(ms):
        return max(ms, key=lambda m: final[m]["test_acc"])

    cont = [m for m in CONT_MODES if m != "image"]
    multimodal = list(CONT_MODES) + list(DISC_KINDS)
    bd, bc, bm = best_by_valid(DISC_KINDS), best_by_valid(cont), best_by_valid(multimodal)
    text_acc = final["text"]["test_acc"]
    pts = lambda a: 100 * a  # noqa: E731
    checks = []

    def add(name, ok, detail):
        checks.append({"target": name, "pass": bool(ok), "detail": detail})

    gain = pts(final[bd]["test_acc"] - text_acc)
    add(f"best discrete beats text-only by >= {T_DISC_GAIN_PTS} point", gain >= T_DISC_GAIN_PTS,
        f"{names[bd]} {final[bd]['test_acc']:.4f} vs text-only {text_acc:.4f}: {gain:+.2f} pts")
    gap = pts(final[bd]["test_acc"] - final[bc]["test_acc"])
    add(f"best discrete within {T_DISC_VS_CONT_PTS} point of the best continuous mode",
        gap >= -T_DISC_VS_CONT_PTS,
        f"{names[bd]} {final[bd]['test_acc']:.4f} vs {names[bc]} {final[bc]['test_acc']:.4f}: {gap:+.2f} pts")
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
        f"{names[bm]} {final[bm]['test_acc']:.4f} vs late fusion {sk['sk_late']['test_acc']:.4f}: {d:+.2f} pts")
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
    print("  Protocol: text-only gets the full word-level grid, then char n-grams x epoch x lr at its "
          "best dim / word_ngrams; the fused models reuse its tokenizer "
          f"(word_ngrams={shared_tok['word_ngrams']}, char={shared_tok['minn']}-{shared_tok['maxn']}); "
          f"continuous: lr x epoch at dim {grid['cont_stage1_dim']}, then dim at the best (lr, epoch); "
          "discrete: m x k x alpha at the text model's dim/epoch/lr, then epoch x lr at the best "
          "(m, k, alpha). Ties go to the cheaper model (dim x epoch), then the lower lr.")
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
        "table": table,
    }
    out.write_text(json.dumps(doc, indent=1, default=float))
    print(f"\nwrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
