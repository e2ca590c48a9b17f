#!/usr/bin/env python3
"""Where mmq's text model and scikit-learn's TF-IDF + LogisticRegression part ways on
mvsa_tweets (a diagnosis for the fusion table's late-fusion target, not a tuning run).

Two halves, same split as ``fusion_table.py``:

* scikit-learn, word 1-2 grams, C chosen on VALID from a grid, for each of
  {scikit-learn's word pattern ``\\w\\w+`` (drops punctuation), fastText's whitespace words}
  x {TF-IDF sublinear + L2 norm (the fusion table's reference), l1-normalised counts (the
  mean of a bag, as fastText's hidden vector)}.
* mmq text-only (dim 10, word bigrams, ``lowercase``) over epochs x lr x tokenizer
  (punctuation kept / ``split_punct`` / ``drop_punct``, with and without char n-grams 3-6),
  3 seeds, ``threads=1``. It reports the configuration valid picks and, for diagnosis only,
  the highest mean TEST accuracy in the grid (an oracle: nothing is chosen by it).

Run from the repository root::

    PYTHONPATH=python python benches/text_gap.py

Results: ``benches/results/text_gap.json``.
"""
from __future__ import annotations

import itertools
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import mmq  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(REPO / "python"))
import mmq
import numpy as np
import polars as pl

SEEDS = (0, 1, 2)
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
TOKENIZERS = {
    "punctuation kept, char 3-6": dict(minn=3, maxn=6),
    "split_punct, char 3-6": dict(minn=3, maxn=6, split_punct=True),
    "drop_punct, char 3-6": dict(minn=3, maxn=6, drop_punct=True),
    "punctuation kept": dict(),
    "split_punct": dict(split_punct=True),
    "drop_punct": dict(drop_punct=True),
}
EPOCHS = (10, 20, 30, 50)
LRS = (0.2, 0.5, 1.0)


def sklearn_half(x: dict, y: dict) -> list:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    rows = []
    for (pname, pattern), (fname, feat) in itertools.product(
            (("\\w\\w+ words (scikit-learn)", r"(?u)\b\w\w+\b"), ("whitespace words (fastText)", r"\S+")),
            (("TF-IDF, L2", dict(sublinear_tf=True)), ("counts, l1 (bag mean)", dict(use_idf=False, norm="l1")))):
        vec = TfidfVectorizer(ngram_range=(1, 2), token_pattern=pattern, **feat)
        a = {"train": vec.fit_transform(x["train"])}
        a["valid"], a["test"] = vec.transform(x["valid"]), vec.transform(x["test"])
        best = None
        with threadpool_limits(1):
            for c in C_GRID:
                m = LogisticRegression(C=c, max_iter=3000).fit(a["train"], y["train"])
                va, te = ((m.predict(a[s]) == y[s]).mean() for s in ("valid", "test"))
                if best is None or va > best[0]:
                    best = (float(va), float(te), c)
        rows.append({"tokens": pname, "features": fname, "valid_acc": best[0], "test_acc": best[1], "C": best[2]})
    return rows


def mmq_half(frames: dict, y: dict) -> list:
    rows = []
    for (tname, tok), epoch, lr in itertools.product(TOKENIZERS.items(), EPOCHS, LRS):
        acc = {"valid": [], "test": []}
        for seed in SEEDS:
            clf = mmq.Classifier(dim=10, word_ngrams=2, epoch=epoch, lr=lr, lowercase=True, threads=1, seed=seed,
                                 progress=False, **tok).fit(frames["train"])
            for s in acc:
                acc[s].append(float((np.array(clf.predict(frames[s])["label"].to_list()) == y[s]).mean()))
        rows.append({"tokenizer": tname, "epoch": epoch, "lr": lr,
                     "valid_acc": float(np.mean(acc["valid"])), "test_acc": float(np.mean(acc["test"]))})
    return rows


def main() -> int:
    path = Path(os.environ.get("MMQ_DATA", REPO.parent / "shared" / "data")) / "mvsa_tweets.parquet"
    if not path.exists():
        print(f"skipped: {path} not found (set MMQ_DATA)")
        return 0
    t0 = time.perf_counter()
    df = pl.read_parquet(path, columns=["text", "label", "split"]).with_columns(pl.col("text").fill_null(""))
    frames = {s: df.filter(pl.col("split") == s).drop("split") for s in ("train", "valid", "test")}
    x = {s: f["text"].to_list() for s, f in frames.items()}
    y = {s: np.array(f["label"].to_list()) for s, f in frames.items()}

    sk = sklearn_half(x, y)
    print("scikit-learn, word 1-2 grams, C chosen on valid:")
    for r in sk:
        print(f"  {r['tokens']:<28} {r['features']:<22} valid {r['valid_acc']:.4f}  test {r['test_acc']:.4f}  "
              f"(C={r['C']:g})")
    mm = mmq_half(frames, y)
    print(f"mmq text-only, dim 10, bigrams, lowercase, {len(EPOCHS) * len(LRS)} (epoch, lr) per tokenizer, "
          f"mean of {len(SEEDS)} seeds:")
    summary = {}
    for tname in TOKENIZERS:
        rs = [r for r in mm if r["tokenizer"] == tname]
        bv = max(rs, key=lambda r: (r["valid_acc"], -r["epoch"], -r["lr"]))
        bt = max(r["test_acc"] for r in rs)
        summary[tname] = {"valid_pick": bv, "max_test_in_grid": bt}
        print(f"  {tname:<28} valid pick: epoch {bv['epoch']:>2} lr {bv['lr']:<4} valid {bv['valid_acc']:.4f} "
              f"test {bv['test_acc']:.4f} | highest test in the grid (oracle, diagnosis only) {bt:.4f}")
    out = REPO / "benches" / "results" / "text_gap.json"
    out.write_text(json.dumps({"sklearn": sk, "mmq": mm, "mmq_summary": summary, "seeds": list(SEEDS),
                               "mmq_version": mmq.__version__, "total_s": time.perf_counter() - t0}, indent=1))
    print(f"wrote {out.relative_to(REPO)} ({time.perf_counter() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
