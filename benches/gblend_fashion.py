#!/usr/bin/env python3
"""Gradient-Blending over the Deep Multi-Modal Set vs naive joint training on
fashion_products (issue 13: "G-Blend over the deepset >= naive joint training on
fashion_products, the data now has the size the paper's claim needs").

Set models over two modalities, the title (words + bigrams) and the image's PQ codes
(m=8, k=64, fitted per seed), ``fusion="deepset"`` (mean / mean pooling), dim 50:

  * naive:           the fused head's loss alone
  * G-Blend online:  ``blend="gblend"`` (the paper's online algorithm, one super-epoch
                     per epoch, 10% of the training rows held out for the estimate)
  * G-Blend offline: ``blend="gblend_offline"`` (weights from an online run, then one
                     training on all rows with them fixed)

For each, ``lr`` is picked on the valid split from (0.2, 0.5, 1.0) with seed 0; every run
is ``fit(train, valid=valid, patience=3)`` with up to 20 epochs (the epoch kept is chosen
on valid too). Then 3 seeds at the picked lr; test read once per model. Paired bootstrap
95% intervals over the test rows (10,000 resamples; a row scores the fraction of the
seeds' models that got it right).

    python benches/gblend_fashion.py [--quick]

Results: benches/results/gblend_fashion[_quick].json.
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
DATA = ROOT.parent.parent / "shared" / "data" / "fashion_products.parquet"
KINDS = {"naive": None, "G-Blend online": "gblend", "G-Blend offline": "gblend_offline"}


def bootstrap(a: np.ndarray, b: np.ndarray, n: int = 10_000, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    d = a - b
    means = d[rng.integers(0, len(d), size=(n, len(d)))].mean(axis=1)
    return 100 * d.mean(), 100 * np.percentile(means, 2.5), 100 * np.percentile(means, 97.5)


def model(blend, lr: float, seed: int, epoch: int) -> mmq.Classifier:
    return mmq.Classifier(fusion="deepset", blend=blend, dim=50, lr=lr, epoch=epoch, word_ngrams=2,
                          dense={"image": mmq.PQ(m=8, k=64, seed=seed)}, threads=2, seed=seed, progress=False)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if not DATA.exists():
        print(f"skip: {DATA} not found (the real data sets live in ../shared/data)")
        return 0
    df = pl.read_parquet(DATA).select("text", "label", "image", "split")
    tr, va, te = (df.filter(pl.col("split") == s).drop("split") for s in ("train", "valid", "test"))
    if a.quick:
        tr = tr.head(3000)
    gold = te["label"].to_numpy()
    lrs = (0.5,) if a.quick else (0.2, 0.5, 1.0)
    seeds = 1 if a.quick else 3
    epoch = 5 if a.quick else 20
    res: dict = {}
    for name, blend in KINDS.items():
        grid = {}
        for lr in lrs:
            c = model(blend, lr, 0, epoch).fit(tr, valid=va, patience=3)
            grid[lr] = float(c.history["valid_accuracy"].max())
            print(f"{name} lr {lr}: valid {grid[lr]:.4f} ({c.history.height} epochs)", file=sys.stderr, flush=True)
        lr = max(grid, key=lambda k: (grid[k], -k))
        hits, accs, vals, secs, epochs = [], [], [], [], []
        for seed in range(seeds):
            t = time.perf_counter()
            c = model(blend, lr, seed, epoch).fit(tr, valid=va, patience=3)
            secs.append(time.perf_counter() - t)
            h = c.history
            vals.append(float(h["valid_accuracy"].max()))
            epochs.append(int(h.filter(pl.col("best"))["epoch"].max()) + 1)
            hit = (c.predict(te)["label"].to_numpy() == gold).astype(np.float64)
            hits.append(hit)
            accs.append(float(hit.mean()))
            print(f"{name} seed {seed}: valid {vals[-1]:.4f} test {accs[-1]:.4f} ({secs[-1]:.1f}s, best epoch "
                  f"{epochs[-1]})", file=sys.stderr, flush=True)
        res[name] = {"lr": lr, "valid_grid": grid, "test_acc": accs, "valid_acc": vals, "fit_s": secs,
                     "best_epoch": epochs, "score": np.mean(hits, axis=0)}
    print(f"\nfashion_products, deepset over title + PQ(8, 64) image codes; {seeds} seed(s), {len(gold):,} test rows")
    print(f"{'model':<16} | {'lr':>4} | {'valid':>6} | {'test':>6} | {'sd':>6} | {'fit s':>6}")
    for name, r in res.items():
        print(f"{name:<16} | {r['lr']:4.1f} | {np.mean(r['valid_acc']):6.4f} | {np.mean(r['test_acc']):6.4f} | "
              f"{np.std(r['test_acc']):6.4f} | {np.median(r['fit_s']):6.1f}")
    diffs = {}
    print("\npaired differences (points, bootstrap 95% interval over test rows):")
    for x in ("G-Blend online", "G-Blend offline"):
        d = bootstrap(res[x]["score"], res["naive"]["score"])
        diffs[f"{x} - naive"] = d
        print(f"  {x} - naive: {d[0]:+.2f} ({d[1]:+.2f}, {d[2]:+.2f})")
    for r in res.values():
        del r["score"]
    out = ROOT / "results" / f"gblend_fashion{'_quick' if a.quick else ''}.json"
    out.write_text(json.dumps({"seeds": seeds, "test_rows": int(len(gold)), "models": res,
                               "paired_diff_points": diffs}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
