"""Do the images help? mmq's text-only and multimodal models tuned the same way.

For a real multimodal set of ../shared/data (fashion_products by default, or
mvsa_tweets), for each of 3 seeds:

  * text, autotuned:        mmq.autotune(train, valid, budget_s=B) on the text alone
  * multimodal, autotuned:  mmq.autotune(train, valid, budget_s=B, dense=["image"]):
                            60% of the budget for the text settings, then a fixed list of
                            fusions (late, 4 discrete PQ) on top of them; text alone stays a
                            candidate
  * ..., ens 5:             the same two searches with ensemble=5: the mean of the top 5
                            trials' probabilities (the rows above are the best single trial
                            of these very searches, AutotuneResult.single)
  * text, fixed:            Classifier(head="linear", lr=0.5, epoch=20, word_ngrams=2,
                            minn=2, maxn=5), fit(train, valid=valid, patience=3)
  * late, fixed:            the same text settings with fusion="late", dense=["image"]
  * discrete PQ, fixed:     the same text settings with PQ(m=8, k=64) codes, alpha=0.5
  * concat, fixed:          the same text settings with fusion="concat", alpha=1
  * concat + dropout:       the same with modality_dropout=0.2
  * text / concat / late, full L2: the fixed text settings with idf=True, l2=1e-5,
                            l2_mode="full" (the whole objective's penalty), alone and fused

All choices are made on the valid split; the test split is read once per model. Each
difference gets a paired bootstrap 95% interval over the test rows (10,000 resamples,
seeded; a row scores the fraction of the seeds' models that got it right).

    python benches/multimodal_table.py [--set fashion_products|mvsa_tweets] [--budget 90] [--quick]

Results go to benches/results/multimodal_<set>.json. The scikit-learn figures quoted
beside them are the reference figures of ../shared/data/README.md (not re-measured here).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

import mmq

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data"
SKLEARN = {  # ../shared/data/README.md
    "fashion_products": {"text (word+char TF-IDF + LR)": 0.964, "fusion (one LR over [TF-IDF; 0.02 x image])": 0.966},
    "mvsa_tweets": {"text (TF-IDF + LR)": 0.697, "late fusion": 0.707},
}


def bootstrap(a: np.ndarray, b: np.ndarray, n: int = 10_000, seed: int = 0) -> tuple:
    """Mean of a - b (per-row scores) with a paired bootstrap 95% interval, in points."""
    rng = np.random.default_rng(seed)
    d = a - b
    idx = rng.integers(0, len(d), size=(n, len(d)))
    means = d[idx].mean(axis=1)
    return 100 * d.mean(), 100 * np.percentile(means, 2.5), 100 * np.percentile(means, 97.5)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", default="fashion_products")
    ap.add_argument("--budget", type=float, default=90.0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    path = DATA / f"{a.set}.parquet"
    if not path.exists():
        print(f"skip: {path} not found (the real data sets live in ../shared/data)")
        return 0
    seeds = 1 if a.quick else a.seeds
    budget = 20.0 if a.quick else a.budget
    df = pl.read_parquet(path).select("text", "label", "image", "split")
    tr, va, te = (df.filter(pl.col("split") == s).drop("split") for s in ("train", "valid", "test"))
    gold = te["label"].to_numpy()
    fixed = dict(head="linear", lr=0.5, epoch=20, word_ngrams=2, minn=2, maxn=5, threads=2, progress=False)
    full = dict(idf=True, l2=1e-5, l2_mode="full")
    names = ["text, autotuned", "multimodal, autotuned", "text, autotuned, ens 5", "multimodal, autotuned, ens 5",
             "text, fixed", "late, fixed", "discrete PQ, fixed",
             "concat, fixed", "concat + dropout", "text, full L2", "concat, full L2", "late, full L2"]
    hits = {n: [] for n in names}
    acc = {n: [] for n in names}
    secs = {n: [] for n in names}
    picks = []
    for seed in range(seeds):
        runs = {}
        t = time.perf_counter()
        # ensemble=5: the best single trial (r.single) and the mean of the top 5 trials
        # (r.classifier) come from the same search, so their difference is the ensemble's.
        r = mmq.autotune(tr.drop("image"), va.drop("image"), budget_s=budget, seed=seed, threads=2, progress=False,
                         ensemble=5)
        runs["text, autotuned"] = (r.single, time.perf_counter() - t, te.drop("image"))
        runs["text, autotuned, ens 5"] = (r.classifier, time.perf_counter() - t, te.drop("image"))
        t = time.perf_counter()
        rm = mmq.autotune(tr, va, budget_s=budget, dense=["image"], seed=seed, threads=2, progress=False,
                          ensemble=5)
        runs["multimodal, autotuned"] = (rm.single, time.perf_counter() - t, te)
        runs["multimodal, autotuned, ens 5"] = (rm.classifier, time.perf_counter() - t, te)
        picks.append({"seed": seed, "text": r.trials.filter(pl.col("stage") != "ensemble").sort(
                          "accuracy", descending=True, maintain_order=True)["params"][0],
                      "ensemble_members": r.trials.filter(pl.col("stage") == "ensemble")["params"].to_list(),
                      "multimodal_ensemble_members": rm.trials.filter(pl.col("stage") == "ensemble")["params"].to_list(),
                      "multimodal_fusion": rm.single.fusion, "trials_text": r.trials.height,
                      "trials_multimodal": rm.trials.height})
        for name, kw, data in (("text, fixed", {}, "text"), ("late, fixed", dict(fusion="late", dense=["image"]), "mm"),
                               ("discrete PQ, fixed", dict(dense={"image": mmq.PQ(m=8, k=64, seed=seed)}, alpha=0.5),
                                "mm"),
                               ("concat, fixed", dict(fusion="concat", dense=["image"], alpha=1.0), "mm"),
                               ("concat + dropout", dict(fusion="concat", dense=["image"], alpha=1.0,
                                                         modality_dropout=0.2), "mm"),
                               ("text, full L2", full, "text"),
                               ("concat, full L2", dict(full, fusion="concat", dense=["image"], alpha=1.0), "mm"),
                               ("late, full L2", dict(full, fusion="late", dense=["image"]), "mm")):
            t = time.perf_counter()
            c = mmq.Classifier(**fixed, seed=seed, **kw)
            if data == "text":
                c.fit(tr.drop("image"), valid=va.drop("image"), patience=3)
                runs[name] = (c, time.perf_counter() - t, te.drop("image"))
            else:
                c.fit(tr, valid=va, patience=3)
                runs[name] = (c, time.perf_counter() - t, te)
        for name, (c, s, test) in runs.items():
            pred = c.predict(test)["label"].to_numpy()
            h = (pred == gold).astype(np.float64)
            hits[name].append(h)
            acc[name].append(h.mean())
            secs[name].append(s)
        print(f"seed {seed}: " + ", ".join(f"{n} {acc[n][-1]:.4f}" for n in names), file=sys.stderr, flush=True)
        print(f"  picks: multimodal single ({rm.single.fusion})", file=sys.stderr)
    score = {n: np.mean(hits[n], axis=0) for n in names}
    pairs = [("multimodal, autotuned", "text, autotuned"), ("text, autotuned, ens 5", "text, autotuned"),
             ("multimodal, autotuned, ens 5", "text, autotuned, ens 5"),
             ("multimodal, autotuned, ens 5", "multimodal, autotuned"), ("late, fixed", "text, fixed"),
             ("discrete PQ, fixed", "text, fixed"), ("concat, fixed", "text, fixed"),
             ("concat + dropout", "text, fixed"), ("text, autotuned", "text, fixed"),
             ("text, full L2", "text, fixed"), ("concat, full L2", "text, full L2"),
             ("late, full L2", "text, full L2"), ("concat, full L2", "text, autotuned")]
    print(f"\n{a.set}: test accuracy, mean of {seeds} seed(s), {len(gold):,} test rows; autotune budget {budget:.0f}s")
    print(f"{'model':<24} | {'accuracy':>8} | {'sd':>6} | {'fit s':>6}")
    for n in names:
        print(f"{n:<24} | {np.mean(acc[n]):8.4f} | {np.std(acc[n]):6.4f} | {np.median(secs[n]):6.1f}")
    print("\npaired differences (points, bootstrap 95% interval over test rows):")
    diffs = {}
    for x, y in pairs:
        d, lo, hi = bootstrap(score[x], score[y])
        diffs[f"{x} - {y}"] = (d, lo, hi)
        print(f"  {x} - {y}: {d:+.2f} ({lo:+.2f}, {hi:+.2f})")
    print("\nscikit-learn reference figures (../shared/data/README.md, not re-measured):")
    for k, v in SKLEARN.get(a.set, {}).items():
        best_mm = max(np.mean(acc[n]) for n in names)
        print(f"  {k}: {v:.3f}; best mmq here / it = {best_mm / v:.4f}")
    out = ROOT / "results" / f"multimodal_{a.set}{'_quick' if a.quick else ''}.json"
    out.write_text(json.dumps({
        "set": a.set, "seeds": seeds, "budget_s": budget, "test_rows": int(len(gold)),
        "accuracy": {n: acc[n] for n in names}, "fit_seconds": {n: secs[n] for n in names},
        "paired_diff_points": diffs, "picks": picks, "sklearn_reference": SKLEARN.get(a.set, {}),
    }, indent=1, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
