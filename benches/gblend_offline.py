#!/usr/bin/env python3
"""Online vs offline Gradient-Blending vs naive joint training on mvsa_tweets, at the
hyperparameters ``benches/fusion_table.py`` chose on the valid split (read from
``benches/results/fusion_table.json``; run that first). Set models over the text and the
RSPQ codes of the image; 3 seeds (model and quantizer), ``threads=1``; prints valid and
test accuracy and writes ``benches/results/gblend_offline.json``.

    PYTHONPATH=python python benches/gblend_offline.py
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))
import mmq  # noqa: E402


def main() -> int:
    data = Path(os.environ.get("MMQ_DATA", REPO.parent / "shared" / "data")) / "mvsa_tweets.parquet"
    if not data.exists():
        print(f"skip: {data} not found")
        return 0
    chosen = json.loads((REPO / "benches/results/fusion_table.json").read_text())["chosen"]
    df = pl.read_parquet(data)
    split = {s: df.filter(pl.col("split") == s) for s in ("train", "valid", "test")}
    out = []
    for base, fusion in (("bag_gblend", "discrete"), ("deepset_gblend", "deepset"), ("bag", "discrete"), ("deepset", "deepset")):
        c = chosen[base]
        for blend in (None, "gblend", "gblend_offline"):
            va, te = [], []
            for seed in range(3):
                kw = dict(dim=c["dim"], epoch=c["epoch"], lr=c["lr"], word_ngrams=c["word_ngrams"], minn=c["minn"],
                          maxn=c["maxn"], lowercase=c["lowercase"], threads=1, seed=seed, progress=False,
                          dense={"image": mmq.RSPQ(m=c["m"], k=c["k"], seed=seed)}, fusion=fusion, blend=blend)
                if "alpha" in c:
                    kw["alpha"] = c["alpha"]
                clf = mmq.Classifier(**kw).fit(split["train"], text=["text"])
                va.append(clf.test(split["valid"]).precision)
                te.append(clf.test(split["test"]).precision)
            row = {"settings": base, "fusion": fusion, "blend": blend, "valid": float(np.mean(va)),
                   "test": float(np.mean(te)), "test_sd": float(np.std(te))}
            out.append(row)
            print(f"{base:15s} settings, blend={str(blend):15s} valid {row['valid']:.4f}  "
                  f"test {row['test']:.4f} ± {row['test_sd']:.4f}", flush=True)
    (REPO / "benches/results/gblend_offline.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
