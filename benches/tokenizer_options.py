#!/usr/bin/env python3
"""Tokenizer options on real text: fastText's whitespace words (the default) against
``lowercase=True``, ``split_punct=True``, ``drop_punct=True`` and lowercase with each, for
mmq's text classifier.

Sets (Parquet under ``shared/data`` beside the repository's root, or ``MMQ_DATA``):
mvsa_tweets (raw tweets: case, hashtags, punctuation glued to words), ag_news_small,
dbpedia_14k and sst2 (already lower-cased and tokenized: a control where the options
should change little). Every set trains with the data README's fastText settings (dim 10,
word bigrams, 5 epochs, lr 0.25 / 0.5; mvsa_tweets, 2.8k rows: 30 epochs, lr 0.5, char n-grams 3-6, as
``fusion_table.py`` chose on its valid split for text-only), ``threads=1`` and seeds 0-2;
the table gives test accuracy mean ± sd and, for each option, the paired per-seed change
against the default. No hyperparameter is tuned on test: the settings are fixed in
advance, the same for every option. Results: ``benches/results/tokenizer_options.json``.

Run from the repository root::

    PYTHONPATH=python python benches/tokenizer_options.py
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import mmq  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(REPO / "python"))
import mmq
import polars as pl

SETS = {  # name -> classifier settings
    "mvsa_tweets": dict(dim=10, word_ngrams=2, epoch=30, lr=0.5, minn=3, maxn=6),
    "ag_news_small": dict(dim=10, word_ngrams=2, epoch=5, lr=0.25),
    "dbpedia_14k": dict(dim=10, word_ngrams=2, epoch=5, lr=0.5),
    "sst2": dict(dim=10, word_ngrams=2, epoch=5, lr=0.25),
}
OPTIONS = {
    "default (whitespace)": dict(),
    "lowercase": dict(lowercase=True),
    "split_punct": dict(split_punct=True),
    "lowercase + split_punct": dict(lowercase=True, split_punct=True),
    "drop_punct": dict(drop_punct=True),
    "lowercase + drop_punct": dict(lowercase=True, drop_punct=True),
}
SEEDS = (0, 1, 2)


def main() -> int:
    data = Path(os.environ.get("MMQ_DATA", REPO.parent / "shared" / "data"))
    if not data.is_dir():
        print(f"skipped: no data folder at {data} (set MMQ_DATA)")
        return 0
    results: dict = {}
    t_start = time.perf_counter()
    for name, params in SETS.items():
        path = data / f"{name}.parquet"
        if not path.exists():
            print(f"skipped {name}: {path} not found")
            continue
        df = pl.read_parquet(path, columns=["text", "label", "split"])
        train, test = df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "test")
        results[name] = {}
        for opt, kw in OPTIONS.items():
            accs = []
            for seed in SEEDS:
                clf = mmq.Classifier(**params, **kw, threads=1, seed=seed, progress=False).fit(train)
                accs.append(clf.test(test).precision)
            results[name][opt] = accs
        print(f"[{time.perf_counter() - t_start:5.0f}s] {name} done", flush=True)
    hdr = f"{'set':<14} " + " ".join(f"{o:>26}" for o in OPTIONS)
    lines = [hdr, "-" * len(hdr)]
    for name, r in results.items():
        base = r["default (whitespace)"]
        cells = []
        for opt, accs in r.items():
            cell = f"{statistics.fmean(accs):.4f}±{statistics.stdev(accs):.4f}"
            if opt != "default (whitespace)":
                cell += f" ({100 * statistics.fmean(a - b for a, b in zip(accs, base)):+.1f})"
            cells.append(cell)
        lines.append(f"{name:<14} " + " ".join(f"{c:>26}" for c in cells))
    table = "\n".join(lines)
    print()
    print(table)
    print("(test accuracy, mean ± sd over seeds 0-2; in brackets the paired change in points vs the default)")
    out = REPO / "benches" / "results" / "tokenizer_options.json"
    out.write_text(json.dumps({"settings": SETS, "options": OPTIONS, "seeds": list(SEEDS),
                               "test_acc": results, "table": table,
                               "total_s": time.perf_counter() - t_start}, indent=1))
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
