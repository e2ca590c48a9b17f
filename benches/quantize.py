#!/usr/bin/env python3
"""Model compression side by side: ``mmq.Classifier.quantize`` against the official
fastText's ``quantize`` (PyPI ``fasttext``), on ag_news_small.

Both libraries train the same model (dim 50, word bigrams, 5 epochs, lr 0.5, bucket 2M,
2 threads) on the same file, then quantize it with the same options:

* ``plain``: product quantization of the input rows only (dsub 2);
* ``qnorm``: norms apart (``qnorm``; fastText's ``qout`` needs 256 labels or more, and
  ag_news has 4);
* ``cutoff``: the 20,000 rows of largest norm, retrained, with ``qnorm`` (fastText's
  tutorial settings, with a smaller cutoff for this 10k-row set).

Per (library, options, seed) the script reports test accuracy before and after, the file
size before and after and their ratio, and the quantize time. Each fastText run is a
subprocess of its own (fastText 0.9.3 gives "Encountered NaN" on a second training in one
process). The target of the migration issue: the quantized file at most 1/5 of the
model's own file with at most 0.5 point of accuracy lost.

    python benches/quantize.py [--seeds 3]

Results: ``benches/results/quantize.json`` and a Markdown table on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
DATA = Path(os.environ.get("MMQ_DATA", REPO.parent / "shared" / "data"))
TRAIN = dict(dim=50, wordNgrams=2, epoch=5, lr=0.5, bucket=2_000_000, thread=2)
OPTIONS = {
    "plain": dict(dsub=2),
    "qnorm": dict(dsub=2, qnorm=True),
    "cutoff": dict(dsub=2, qnorm=True, cutoff=20_000, retrain=True),
}

FT_SCRIPT = r"""
import json, os, sys, time, fasttext
train, test, out, seed, opts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
m = fasttext.train_supervised(input=train, seed=seed, verbose=0, **json.loads(sys.argv[6]))
m.save_model(out + ".bin")
before = m.test(test)[1]
t = time.perf_counter()
m.quantize(input=train, verbose=0, **opts)
q_s = time.perf_counter() - t
m.save_model(out + ".ftz")
print(json.dumps(dict(before=before, after=m.test(test)[1], size=os.path.getsize(out + ".bin"),
                      qsize=os.path.getsize(out + ".ftz"), q_s=q_s)))
os.remove(out + ".bin"); os.remove(out + ".ftz")
"""


def write_fasttext(df: pl.DataFrame, path: Path) -> None:
    path.write_text("".join(f"__label__{y} {' '.join(t.split())}\n" for t, y in zip(df["text"], df["label"])))


def run_fasttext(train: Path, test: Path, out: Path, seed: int, opts: dict) -> dict:
    r = subprocess.run([sys.executable, "-c", FT_SCRIPT, str(train), str(test), str(out), str(seed),
                        json.dumps(opts), json.dumps(TRAIN)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"fastText failed with {opts}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_mmq(tr: pl.DataFrame, te: pl.DataFrame, out: Path, seed: int, opts: dict) -> dict:
    import mmq

    clf = mmq.Classifier(dim=TRAIN["dim"], word_ngrams=TRAIN["wordNgrams"], epoch=TRAIN["epoch"], lr=TRAIN["lr"],
                         bucket=TRAIN["bucket"], threads=TRAIN["thread"], seed=seed, progress=False).fit(tr)
    clf.save(out.with_suffix(".mmq"))
    before = clf.test(te).precision
    t = time.perf_counter()
    clf.quantize(tr if opts.get("retrain") else None, **opts)
    q_s = time.perf_counter() - t
    clf.save(out.with_suffix(".ftz"))
    back = mmq.load(out.with_suffix(".ftz"))
    assert back.predict(te)["label"].equals(clf.predict(te)["label"]), "the saved quantized model predicts otherwise"
    r = dict(before=before, after=back.test(te).precision, size=out.with_suffix(".mmq").stat().st_size,
             qsize=out.with_suffix(".ftz").stat().st_size, q_s=q_s)
    out.with_suffix(".mmq").unlink()
    out.with_suffix(".ftz").unlink()
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args()
    df = pl.read_parquet(DATA / "ag_news_small.parquet")
    tr, te = df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "test")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        write_fasttext(tr, d / "train.txt")
        write_fasttext(te, d / "test.txt")
        for seed in range(a.seeds):
            for name, opts in OPTIONS.items():
                for lib in ("fasttext", "mmq"):  # interleaved
                    out = d / f"{lib}_{name}_{seed}"
                    r = (run_fasttext(d / "train.txt", d / "test.txt", out, seed, opts) if lib == "fasttext"
                         else run_mmq(tr, te, out, seed, opts))
                    r.update(lib=lib, options=name, seed=seed)
                    rows.append(r)
                    print(json.dumps(r), file=sys.stderr, flush=True)
    res = REPO / "benches" / "results" / "quantize.json"
    res.write_text(json.dumps(dict(train=TRAIN, options=OPTIONS, rows=rows), indent=1))
    print("| options | library | accuracy before → after (Δ points) | file MB before → after | ratio | quantize s |")
    print("|---|---|---|---|---|---|")
    for name in OPTIONS:
        for lib in ("fasttext", "mmq"):
            rs = [r for r in rows if r["lib"] == lib and r["options"] == name]
            med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
            delta = statistics.mean(100 * (r["after"] - r["before"]) for r in rs)
            print(f"| {name} | {lib} | {med('before'):.4f} → {med('after'):.4f} ({delta:+.2f}) | "
                  f"{med('size') / 1e6:.2f} → {med('qsize') / 1e6:.3f} | 1/{med('size') / med('qsize'):.1f} | "
                  f"{med('q_s'):.2f} |")


if __name__ == "__main__":
    main()
