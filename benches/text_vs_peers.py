#!/usr/bin/env python3
"""mmq beside its peers, the official fastText (PyPI ``fasttext``) and Vowpal Wabbit 9.x (PyPI
``vowpalwabbit``), on sst2, ag_news_small, dbpedia_14k and imdb (Parquet under ``shared/data``,
beside the repository's root; override with ``MMQ_DATA``).

Contenders (lr L = 0.25 sst2 / ag_news_small, 0.5 dbpedia_14k, 0.1 imdb, as in
shared/data/README.md):

1. fastText  ``train_supervised(dim=10, wordNgrams=2, epoch=5, bucket=10M, minCount=1,
   thread=2, lr=L, seed)`` on a ``__label__X text`` file (written outside the timed region).
2. VW  ``--oaa N --ngram w2 -b 24 --passes 5 --loss_function logistic --random_seed seed
   -c -k --cache_file ... --quiet`` on a VW-format file (labels 1..N, one namespace ``w``,
   ':' and '|' escaped); the file is written outside the timed region, VW's own parsing and
   cache building are inside it (``Workspace(-d file ...)`` runs the whole training).
   With --passes VW holds out every 10th example by default (for early stopping).
3. mmq bottleneck  ``Classifier(dim=10, word_ngrams=2, epoch=5, bucket=10M, lr=L, threads=2)``.
4. mmq linear, defaults  ``Classifier(head="linear", threads=2)`` (lr 0.1, 5 epochs, unigrams).
5. mmq linear, bench  ``Classifier(head="linear", word_ngrams=2, epoch=5, lr=0.2, bucket=10M,
   threads=2)``.
6. mmq autotuned  ``mmq.autotune(train, valid, budget_s=B, seed)`` with B = VW's median train
   time on the set (target: autotuned mmq within VW's wall time >= VW's accuracy); the whole
   call is timed. Sets without a valid split get a seeded 10% slice of train (for autotune
   only). Skipped, and said so, while mmq has no ``autotune``. It runs after the other five
   (it needs VW's median over the seeds).
7. mmq autotuned, ens 5  the same call with ``ensemble=5``: the mean of the top 5 trials'
   probabilities (a search of its own, in the same budget, right after row 6's).

Every contender sees the same seeded shuffle of the training rows; within each seed they run
in turn (1..5, then the next seed), so machine load hits all alike. Measured per (set, seed,
contender): test accuracy; train wall time; predict rows/s over the test split (best of 3
timings, each looping >= 0.25 s after the call that gives the predictions; fastText
``model.predict(list)`` and VW ``Workspace.predict(line)`` per example, parsing included, run
on one thread, mmq ``clf.predict(test_frame)`` on rayon's pool). Reported: medians over seeds,
differences vs VW and fastText, and a paired bootstrap 95% interval (test rows resampled,
10,000 times, seeded; a row scores the fraction of seeds' models right) of every mmq row minus
VW. The headline is the best mmq linear row (by median test accuracy: chosen on test) minus VW.

Run from the repository root::

    python benches/text_vs_peers.py            # full: 4 sets x 3 seeds -> results/text_vs_peers.json
    python benches/text_vs_peers.py --quick    # smoke: sst2 + ag_news_small, 1 seed -> ..._quick.json
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
DATASETS = {"sst2": 0.25, "ag_news_small": 0.25, "dbpedia_14k": 0.5, "imdb": 0.1}  # name -> lr
QUICK_DATASETS = ("sst2", "ag_news_small")
CONTENDERS = {"fasttext": "fastText", "vw": "VW", "mmq_bottleneck": "mmq bottleneck",
              "mmq_linear_default": "mmq linear, defaults", "mmq_linear_bench": "mmq linear, bench",
              "mmq_autotune": "mmq autotuned", "mmq_autotune_ens": "mmq autotuned, ens 5"}
TUNED = ("mmq_autotune", "mmq_autotune_ens")  # need valid and VW's time
LINEAR = ("mmq_linear_default", "mmq_linear_bench")  # the headline: best of these minus VW
BOOT_N, BOOT_SEED = 10_000, 20261123
PREDICT_REPEATS, MIN_TIMING_S = 3, 0.25


def data_dir() -> Path:
    env = os.environ.get("MMQ_DATA")
    return Path(env).expanduser().resolve() if env else HERE.parents[2] / "shared" / "data"


def load(name: str, seed: int):
    """(train shuffled with ``seed``, valid or None, test); newlines in text -> spaces."""
    import polars as pl

    df = pl.read_parquet(data_dir() / f"{name}.parquet", columns=["text", "label", "split"])
    df = df.with_columns(pl.col("text").fill_null("").str.replace_all(r"[\r\n]", " "),
                         pl.col("label").cast(pl.String))
    part = lambda s: df.filter(pl.col("split") == s).select("text", "label")  # noqa: E731
    valid = part("valid")
    return (part("train").sample(fraction=1.0, shuffle=True, seed=seed),
            valid if valid.height else None, part("test"))


def best_rate(fn, rows: int):
    """Calls ``fn`` once (its result is returned: the predictions), then best of
    PREDICT_REPEATS timings in rows/s, each looping over ``fn`` for >= MIN_TIMING_S."""
    t0 = time.perf_counter()
    out = fn()
    calls = max(1, math.ceil(MIN_TIMING_S / max(time.perf_counter() - t0, 1e-6)))
    rates = []
    for _ in range(PREDICT_REPEATS):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        rates.append(rows * calls / (time.perf_counter() - t0))
    return out, max(rates)


def correct(pred, gold) -> str:
    """'1'/'0' per test row (compact in the JSON)."""
    return "".join("1" if p == g else "0" for p, g in zip(pred, gold, strict=True))


def vw_features(text: str) -> str:
    return "|w " + " ".join(text.replace(":", "%3A").replace("|", "%7C").split())


def run_fasttext(name, seed, train, test, tmp):
    import fasttext

    path = os.path.join(tmp, "train.ft")
    with open(path, "w", encoding="utf-8") as f:
        for t, y in zip(train["text"], train["label"]):
            f.write(f"__label__{y.replace(' ', '_')} {t}\n")
    t0 = time.perf_counter()
    model = fasttext.train_supervised(input=path, dim=10, wordNgrams=2, epoch=5, bucket=10_000_000,
                                      minCount=1, thread=2, lr=DATASETS[name], seed=seed, verbose=0)
    train_s = time.perf_counter() - t0
    texts = test["text"].to_list()
    (labels, _), rate = best_rate(lambda: model.predict(texts), len(texts))
    pred = [ls[0][len("__label__"):] if ls else None for ls in labels]
    return train_s, rate, correct(pred, [y.replace(" ", "_") for y in test["label"]])


def run_vw(name, seed, train, test, tmp):
    import vowpalwabbit

    classes = sorted(set(train["label"].to_list()))
    index = {y: i + 1 for i, y in enumerate(classes)}
    path = os.path.join(tmp, "train.vw")
    with open(path, "w", encoding="utf-8") as f:
        for t, y in zip(train["text"], train["label"]):
            f.write(f"{index[y]} {vw_features(t)}\n")
    lines = [vw_features(t) for t in test["text"]]
    args = ["-d", path, "--oaa", str(len(classes)), "--ngram", "w2", "-b", "24", "--passes", "5",
            "--loss_function", "logistic", "--random_seed", str(seed), "-c", "-k",
            "--cache_file", os.path.join(tmp, "train.vw.cache"), "--quiet"]
    t0 = time.perf_counter()
    vw = vowpalwabbit.Workspace(arg_list=args)  # with -d the constructor runs the parser: trains
    train_s = time.perf_counter() - t0
    try:
        pred, rate = best_rate(lambda: [vw.predict(x) for x in lines], len(lines))
    finally:
        vw.finish()
    gold = [index.get(y, 0) for y in test["label"]]
    return train_s, rate, correct(pred, gold)


def mmq_classifier(kind, name, seed):
    import mmq

    common = dict(threads=2, seed=seed, progress=False)
    if kind == "mmq_bottleneck":
        return mmq.Classifier(dim=10, word_ngrams=2, epoch=5, bucket=10_000_000, lr=DATASETS[name], **common)
    if kind == "mmq_linear_default":
        return mmq.Classifier(head="linear", **common)
    return mmq.Classifier(head="linear", word_ngrams=2, epoch=5, lr=0.2, bucket=10_000_000, **common)


def run_mmq(kind, name, seed, train, test, valid=None, budget_s=None):
    import mmq

    t0 = time.perf_counter()
    if kind in TUNED:
        r = mmq.autotune(train, valid, budget_s=budget_s, seed=seed, **({"ensemble": 5} if kind.endswith("ens") else {}))
        clf = r.classifier if hasattr(r, "classifier") else r[0]
    else:
        clf = mmq_classifier(kind, name, seed).fit(train)
    train_s = time.perf_counter() - t0
    out, rate = best_rate(lambda: clf.predict(test), test.height)
    return train_s, rate, correct(out["label"].to_list(), test["label"].to_list()), clf.test(test).precision


def run_one(kind, name, seed, train, test, **kw) -> dict:
    r = {"contender": kind, "dataset": name, "seed": seed, "ok": False, "loadavg_1m": os.getloadavg()[0]}
    try:
        with tempfile.TemporaryDirectory(prefix=f"peers_{kind}_") as tmp:
            if kind == "fasttext":
                res = run_fasttext(name, seed, train, test, tmp)
            elif kind == "vw":
                res = run_vw(name, seed, train, test, tmp)
            else:
                res = run_mmq(kind, name, seed, train, test, **kw)
        r.update(train_s=res[0], predict_rows_s=res[1], test_correct=res[2], ok=True,
                 accuracy=res[2].count("1") / len(res[2]))
        if len(res) > 3:  # mmq: clf.test(df).precision is the reported accuracy
            r["accuracy_from_predict"], r["accuracy"] = r["accuracy"], res[3]
    except Exception as e:  # noqa: BLE001  (a failed contender must not stop the others)
        r["error"] = f"{type(e).__name__}: {e}"
    gc.collect()
    tag = (f"acc {r['accuracy']:.4f}  train {r['train_s']:7.2f} s  predict {r['predict_rows_s']:>11,.0f} rows/s"
           if r["ok"] else f"FAILED: {r['error']}")
    print(f"  {name:<14} seed {seed}  {CONTENDERS[kind]:<21} {tag}", flush=True)
    return r


def row_scores(runs):
    import numpy as np

    return np.mean([[c == "1" for c in r["test_correct"]] for r in runs], axis=0)


def paired_ci(a_runs, b_runs, level=0.95):
    """Mean accuracy difference a - b in points, with a paired bootstrap interval over the test
    rows (same seeded resamples for every comparison; chunked to bound memory on imdb)."""
    import numpy as np

    d = row_scores(a_runs) - row_scores(b_runs)
    rng, boots, chunk = np.random.default_rng(BOOT_SEED), [], max(1, 4_000_000 // len(d))
    for start in range(0, BOOT_N, chunk):
        boots.append(d[rng.integers(0, len(d), size=(min(chunk, BOOT_N - start), len(d)))].mean(axis=1))
    lo, hi = np.quantile(np.concatenate(boots), [(1 - level) / 2, (1 + level) / 2])
    return 100 * float(d.mean()), 100 * float(lo), 100 * float(hi)


def summarise(runs, name, kinds):
    s = {}
    for k in kinds:
        ok = [r for r in runs if r["dataset"] == name and r["contender"] == k and r["ok"]]
        e = {"ok_seeds": [r["seed"] for r in ok],
             "errors": [r["error"] for r in runs if r["dataset"] == name and r["contender"] == k and not r["ok"]]}
        for key in ("accuracy", "train_s", "predict_rows_s"):
            if ok:
                e[key] = statistics.median(r[key] for r in ok)
                e[key + "_all"] = [r[key] for r in ok]
        s[k] = e
    for k in kinds:
        for ref in ("vw", "fasttext"):
            a, b = s[k], s[ref]
            if k != ref and "accuracy" in a and "accuracy" in b:
                a[f"acc_diff_pts_vs_{ref}"] = 100 * (a["accuracy"] - b["accuracy"])
                a[f"train_ratio_vs_{ref}"] = a["train_s"] / b["train_s"]
                a[f"predict_ratio_vs_{ref}"] = a["predict_rows_s"] / b["predict_rows_s"]
        if k.startswith("mmq") and "accuracy" in s[k] and "accuracy" in s["vw"]:
            pick = lambda kk: [r for r in runs if r["dataset"] == name and r["contender"] == kk and r["ok"]]  # noqa: E731
            s[k]["ci_vs_vw_pts"] = paired_ci(pick(k), pick("vw"))
    lin = [k for k in LINEAR if "accuracy" in s.get(k, {})]
    best = max(lin, key=lambda k: s[k]["accuracy"]) if lin else None
    return {"contenders": s, "best_linear": best}


def table(summ, names, test_rows) -> str:
    f = lambda v, fmt: "—" if v is None else format(v, fmt)  # noqa: E731
    head = ("set", "contender", "acc", "Δ vs VW", "95% CI vs VW", "Δ vs fT", "train s", "×VW", "×fT",
            "predict rows/s", "×VW")
    rows = [head]
    for name in names:
        for i, (k, e) in enumerate(summ[name]["contenders"].items()):
            ci = e.get("ci_vs_vw_pts")
            rows.append((f"{name} ({test_rows[name]:,})" if i == 0 else "",
                         CONTENDERS[k] + (" *" if k == summ[name]["best_linear"] else ""),
                         f(e.get("accuracy"), ".4f"), f(e.get("acc_diff_pts_vs_vw"), "+.2f"),
                         f"[{ci[1]:+.2f}, {ci[2]:+.2f}]" if ci else "—", f(e.get("acc_diff_pts_vs_fasttext"), "+.2f"),
                         f(e.get("train_s"), ".2f"), f(e.get("train_ratio_vs_vw"), ".2f"),
                         f(e.get("train_ratio_vs_fasttext"), ".2f"), f(e.get("predict_rows_s"), ",.0f"),
                         f(e.get("predict_ratio_vs_vw"), ".2f")))
        rows.append(None)
    widths = [max(len(r[i]) for r in rows if r) for i in range(len(head))]
    sep = "-+-".join("-" * w for w in widths)
    out = []
    for j, r in enumerate(rows[:-1]):
        out.append(sep if r is None else " | ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            out.append(sep)
    return "\n".join(out)


def _version(dist):
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, sst2 + ag_news_small (smoke run)")
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3, 1 with --quick)")
    ap.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=None)
    ap.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = ap.parse_args(argv)
    ddir = data_dir()
    names = args.datasets or list(QUICK_DATASETS if args.quick else DATASETS)
    for n in [n for n in names if not (ddir / f"{n}.parquet").is_file()]:
        print(f"SKIP: {ddir / (n + '.parquet')} not found; leaving {n} out.")
        names.remove(n)
    if not names:
        print(f"SKIP: no data set under {ddir} (set MMQ_DATA); nothing to benchmark.")
        return 0
    import mmq

    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    autotune = hasattr(mmq, "autotune")
    kinds = list(CONTENDERS) if autotune else [k for k in CONTENDERS if k not in TUNED]
    print(f"mmq {mmq.__version__} vs fastText {_version('fasttext')} vs VW {_version('vowpalwabbit')} on "
          f"{', '.join(names)}; seeds {seeds}; {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}", flush=True)
    if not autotune:
        print("  (mmq has no `autotune`: the 'mmq autotuned' row is skipped)")
    runs, test_rows, budgets, t_start = [], {}, {}, time.perf_counter()
    for name in names:
        for seed in seeds:
            train, _, test = load(name, seed)
            test_rows[name] = test.height
            runs += [run_one(k, name, seed, train, test) for k in kinds if k not in TUNED]
        if autotune:
            vw_t = [r["train_s"] for r in runs if r["dataset"] == name and r["contender"] == "vw" and r["ok"]]
            budgets[name] = statistics.median(vw_t) if vw_t else 10.0
            for seed in seeds:
                train, valid, test = load(name, seed)
                if valid is None:  # seeded 10% of the (seeded-shuffled) train, for autotune only
                    cut = train.height - train.height // 10
                    train, valid = train[:cut], train[cut:]
                runs += [run_one(k, name, seed, train, test, valid=valid, budget_s=budgets[name]) for k in TUNED]
    elapsed = time.perf_counter() - t_start
    summ = {n: summarise(runs, n, kinds) for n in names}

    tab = table(summ, names, test_rows)
    print("\n" + tab)
    print(f"\n(median over seeds {seeds}; acc = test accuracy; Δ = accuracy difference in points; "
          "95% CI = paired bootstrap over the test rows of (mmq row − VW), each row scored by the fraction "
          "of seeds right; ×VW / ×fT = ratio to VW / fastText; train s: fit wall time, data in memory "
          "(fastText/VW: their train file, written beforehand, read and parsed inside); predict: "
          "rows/s on the test split, best of 3; * = best mmq linear row by median test accuracy)")
    print("\nHeadline, best mmq linear minus VW (paired bootstrap, 10,000 resamples):")
    for n in names:
        b = summ[n]["best_linear"]
        ci = summ[n]["contenders"][b].get("ci_vs_vw_pts") if b else None
        print(f"  {n:<14} " + (f"{CONTENDERS[b]}: {ci[0]:+.2f} pts, 95% CI [{ci[1]:+.2f}, {ci[2]:+.2f}]; train "
                                f"{summ[n]['contenders'][b]['train_ratio_vs_vw']:.2f}x VW's" if ci else "n/a (failed)"))
    if not autotune:
        print("mmq autotuned: skipped (mmq has no `autotune` yet).")
    for r in [r for r in runs if not r["ok"]]:
        print(f"FAILED: {r['dataset']} seed {r['seed']} {CONTENDERS[r['contender']]}: {r['error']}")
    if (top := max(r["loadavg_1m"] for r in runs)) > 0.75 * (os.cpu_count() or 1):
        print(f"(warning: 1-min load average reached {top:.2f} on {os.cpu_count()} cores: timings are noisy)")
    print(f"benchmark took {elapsed:.0f} s")

    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    meta = {"quick": args.quick, "seeds": seeds, "datasets": names, "data_dir": str(ddir), "lr": DATASETS,
            "mmq_version": mmq.__version__, "mmq_module": str(Path(mmq.__file__).parent),
            "fasttext_version": _version("fasttext"), "vowpalwabbit_version": _version("vowpalwabbit"),
            "autotune_available": autotune, "autotune_budget_s": budgets, "boot_n": BOOT_N,
            "boot_seed": BOOT_SEED, "predict_repeats": PREDICT_REPEATS, "predict_min_timing_s": MIN_TIMING_S,
            "git": git, "python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "elapsed_s": elapsed, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "vw_args": "--oaa N --ngram w2 -b 24 --passes 5 --loss_function logistic --random_seed SEED "
                       "-c -k --cache_file TMP --quiet (default holdout: every 10th example with --passes)"}
    out = args.out or REPO / "benches" / "results" / ("text_vs_peers_quick.json" if args.quick else "text_vs_peers.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")  # an interrupted run leaves the previous results as they were
    tmp.write_text(json.dumps({"meta": meta, "summary": summ, "table": tab, "runs": runs}, indent=1) + "\n")
    os.replace(tmp, out)
    print(f"Results written to {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
