#!/usr/bin/env python3
"""Set models (deepset, attention) with large label sets: ns and hs against the text
model, on the same rows (issue 15's target: >= 80% of the text model's tokens/s).

A seeded synthetic set: ``--rows`` rows of 20 Zipfian words from a 50k vocabulary,
``--labels`` Zipfian labels with 3 signal words each, and a dense 16-d column whose mean
depends on the label (PQ m=4, k=16 codes). dim 50, 2 epochs, lr 0.5, 2 threads. Each
contender is trained ``--repeats`` times, interleaved; the medians are reported. Tokens
per second count every token a model trains on (the text's word tokens, and for the set
models also the dense column's 4 codes per row), divided by the fit's wall time and the
threads. P@1 on 10,000 held-out rows.

    python benches/sets_large_labels.py            # 200k rows, 10k labels
    python benches/sets_large_labels.py --rows 50000 --labels 2000 --repeats 1   # quick
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import polars as pl

import mmq

WORDS, DENSE = 20, 16


def make(rows: int, labels: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    vocab = 50_000
    wp = 1.0 / np.arange(1, vocab + 1) ** 1.1
    wp /= wp.sum()
    lp = 1.0 / np.arange(1, labels + 1) ** 0.8
    lp /= lp.sum()
    lab = rng.choice(labels, size=rows, p=lp)
    w = rng.choice(vocab, size=(rows, WORDS), p=wp)
    sig = rng.integers(0, vocab, size=(labels, 3))
    w[:, :3] = sig[lab]
    text = [" ".join(f"w{x}" for x in r) for r in w]
    centers = rng.normal(size=(labels, DENSE)).astype(np.float32)
    x = centers[lab] + rng.normal(scale=1.5, size=(rows, DENSE)).astype(np.float32)
    df = pl.DataFrame({"text": text, "label": [f"L{v}" for v in lab]}).with_columns(
        pl.Series("image", x, dtype=pl.Array(pl.Float32, DENSE)))
    return df[:-10_000], df[-10_000:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--labels", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sets_large_labels.json")
    a = ap.parse_args()
    train, test = make(a.rows + 10_000, a.labels)
    pq = mmq.PQ(m=4, k=16, seed=0).fit(train["image"].to_numpy())
    base = dict(dim=50, epoch=2, lr=0.5, threads=2, seed=0, progress=False)
    contenders = {}
    for loss in ("hs", "ns"):
        contenders[f"text {loss}"] = (dict(base, loss=loss), "text", 0)
        for fusion in ("deepset", "attention"):
            contenders[f"{fusion} {loss}"] = (dict(base, loss=loss, fusion=fusion, dense={"image": pq}),
                                              ["text"], 4)
    words = train.height * (WORDS + 1)  # words and the end-of-row token
    runs: dict = {k: [] for k in contenders}
    acc: dict = {}
    for rep in range(a.repeats):
        for name, (kw, text, codes) in contenders.items():
            clf = mmq.Classifier(**kw)
            t = time.perf_counter()
            clf.fit(train, text=text)
            secs = time.perf_counter() - t
            tokens = (words + train.height * codes) * kw["epoch"]
            runs[name].append(tokens / secs / kw["threads"])
            acc[name] = clf.test(test).precision
            print(f"{name:16s} rep {rep}  {secs:6.2f} s  {runs[name][-1]:12,.0f} tokens/s/thread  "
                  f"P@1 {acc[name]:.4f}", flush=True)
    out = []
    print("\n| model | tokens/s/thread | ratio to text (same loss) | P@1 |\n|---|---|---|---|")
    for name in contenders:
        med = statistics.median(runs[name])
        ref = statistics.median(runs["text " + name.split()[-1]])
        out.append(dict(model=name, tokens_per_s_thread=med, ratio=med / ref, p_at_1=acc[name]))
        print(f"| {name} | {med:,.0f} | {med / ref:.2f} | {acc[name]:.4f} |")
    a.out.write_text(json.dumps(dict(rows=a.rows, labels=a.labels, repeats=a.repeats, results=out), indent=1))


if __name__ == "__main__":
    main()
