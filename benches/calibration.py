"""Are mmq's probabilities calibrated? Expected calibration error before and after
temperature scaling on the valid split.

For each real set with a valid split (mvsa_tweets, fashion_products, sst2, imdb) and
3 seeds: the same model fitted with ``fit(train, valid=valid, calibrate=False)`` and
with ``calibrate=True`` (same seed, threads=1: the same weights, only T differs).
Reports test accuracy, mean confidence (top probability), ECE (15 equal-width bins of the
top probability: Σ |bin| / n · |accuracy − confidence|) and test log loss.

    python benches/calibration.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl

import mmq

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data"
SETS = {  # name: Classifier settings (the benchmark's text settings)
    "mvsa_tweets": dict(dim=10, word_ngrams=2, epoch=5, lr=0.25),
    "fashion_products": dict(dim=50, word_ngrams=2, epoch=20, lr=0.5),
    "sst2": dict(dim=10, word_ngrams=2, epoch=5, lr=0.25),
    "imdb": dict(dim=10, word_ngrams=2, epoch=5, lr=0.1),
}


def ece(p: np.ndarray, gold: np.ndarray, bins: int = 15) -> tuple:
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    hit = (pred == gold).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    e = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            e += m.mean() * abs(hit[m].mean() - conf[m].mean())
    ll = -np.log(np.maximum(p[np.arange(len(gold)), np.maximum(gold, 0)], 1e-12))
    return hit.mean(), conf.mean(), e, float(ll[gold >= 0].mean())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    sets = ["mvsa_tweets"] if a.quick else list(SETS)
    seeds = 1 if a.quick else 3
    out = {}
    print(f"{'set':<17} | {'model':<12} | {'acc':>6} | {'conf':>6} | {'ECE':>6} | {'logloss':>7} | T")
    for name in sets:
        path = DATA / f"{name}.parquet"
        if not path.exists():
            print(f"skip {name}: {path} not found")
            continue
        df = pl.read_parquet(path).select("text", "label", "split")
        tr, va, te = (df.filter(pl.col("split") == s) for s in ("train", "valid", "test"))
        rows = {"raw": [], "calibrated": []}
        for seed in range(seeds):
            for kind, cal in (("raw", False), ("calibrated", True)):
                c = mmq.Classifier(**SETS[name], threads=1, seed=seed, progress=False)
                c.fit(tr, valid=va, calibrate=cal)
                p = c.predict_proba(te).to_numpy().astype(np.float64)
                pos = {lab: i for i, lab in enumerate(c.labels)}
                gold = np.array([pos.get(v, -1) for v in te["label"].to_list()])
                rows[kind].append((*ece(p, gold), c.temperature))
        out[name] = rows
        for kind, r in rows.items():
            m = np.mean(np.array(r), axis=0)
            print(f"{name:<17} | {kind:<12} | {m[0]:6.4f} | {m[1]:6.4f} | {m[2]:6.4f} | {m[3]:7.4f} | {m[4]:.3f}")
    res = ROOT / "results" / f"calibration{'_quick' if a.quick else ''}.json"
    res.write_text(json.dumps(out, indent=1))
    print(f"wrote {res}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
