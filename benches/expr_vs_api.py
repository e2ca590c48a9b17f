#!/usr/bin/env python3
"""The Polars expressions against the Python API, side by side.

(a) tokenize, on the ``text`` column of ``ag_news_small.parquet`` (``shared/data`` beside
    the repository's root; override with ``MMQ_DATA``) repeated ``--repeat`` times (default
    10: 176,010 rows, 34 MB of text), word bigrams, bucket 2M:

    * expression: ``df.select(pl.col("text").mmq.tokenize(word_ngrams=2))``;
    * API: ``mmq.tokenize(df["text"], word_ngrams=2)``;
    * plain Python: ``str.split`` per row plus fastText's hashing per token
      (``tests/reference.py``'s ``fnv1a`` for each word and ``</s>``, then the word-bigram
      hashes), into a list of ids per row. The three give the same ids (checked).

(b) encode: ``--rows`` (default 200,000) x 512 synthetic float32 rows (seeded), a
    ``mmq.PQ(m=32, k=256)`` fitted on 20,000 of them:

    * expression: ``df.select(pl.col("image").mmq.encode(q))`` on an ``Array[Float32, 512]``
      column (the quantizer file is written once, before timing);
    * API: ``q.encode(x)`` on the same rows as a NumPy array (zero-copy in).

Each timing is the median of ``--runs`` (default 7) runs after one warm-up; all on the
machine's cores (rayon's default pool). Targets: tokenize expression >= 10x faster than
plain Python and within 1.2x of the API; encode expression within 1.2x of the API.
Results go to ``benches/results/expr_vs_api.json`` (``expr_vs_api_quick.json`` with
``--quick``: 2 repeats, 50,000 encode rows, 5 runs).

Run from the repository root::

    PYTHONPATH=python python benches/expr_vs_api.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import mmq  # noqa: E402
from reference import fnv1a  # noqa: E402

DATA = Path(os.environ.get("MMQ_DATA", REPO.parent / "shared" / "data"))


def timed(fn, runs: int) -> tuple[float, list[float], object]:
    out = fn()  # warm-up (and the result, for the checks)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def python_tokenize(texts: list, bucket: int) -> list:
    """str.split + fastText hashing in plain Python (words, </s>, word bigrams)."""
    eos = fnv1a(b"</s>")
    mask = (1 << 64) - 1
    out = []
    for t in texts:
        hs = [fnv1a(w.encode()) for w in (t or "").split()]
        hs.append(eos)
        ids = [h % bucket for h in hs]
        signed = [(h - (1 << 32) if h >= (1 << 31) else h) & mask for h in hs]
        for i in range(len(hs) - 1):
            h = (signed[i] * 116049371 + signed[i + 1]) & mask
            ids.append(h % bucket)
        out.append(ids)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    repeat = args.repeat or (2 if args.quick else 10)
    rows = args.rows or (50_000 if args.quick else 200_000)
    runs = args.runs or (5 if args.quick else 7)
    res: dict = {}

    # (a) tokenize
    src = DATA / "ag_news_small.parquet"
    if not src.exists():
        print(f"tokenize: skipped, {src} is absent")
    else:
        df = pl.concat([pl.read_parquet(src).select("text")] * repeat, rechunk=True)
        texts = df["text"].to_list()
        bucket = 2_000_000
        mb = df["text"].str.len_bytes().sum() / 1e6
        t_expr, r_expr, o_expr = timed(lambda: df.select(pl.col("text").mmq.tokenize(word_ngrams=2)), runs)
        t_api, r_api, o_api = timed(lambda: mmq.tokenize(df["text"], word_ngrams=2), runs)
        t_py, r_py, o_py = timed(lambda: python_tokenize(texts, bucket), max(3, runs // 2))
        api_ids = o_api.to_list()
        same = o_expr.to_series().to_list() == api_ids
        same_py = sum(a == b for a, b in zip(api_ids, o_py))
        res["tokenize"] = {
            "rows": df.height, "mb": mb, "expression_s": t_expr, "api_s": t_api, "python_s": t_py,
            "runs": {"expression": r_expr, "api": r_api, "python": r_py},
            "expression_equals_api": same, "python_rows_equal": same_py,
            "speedup_vs_python": t_py / t_expr, "expression_over_api": t_expr / t_api,
        }
        print(f"tokenize: {df.height:,} rows ({mb:.0f} MB), ids equal: expression/API {same}, "
              f"Python {same_py:,}/{df.height:,} rows")

    # (b) encode
    rng = np.random.default_rng(0)
    d = 512
    basis = rng.normal(size=(64, d)).astype(np.float32)
    x = (rng.normal(size=(rows, 64)).astype(np.float32) @ basis
         + 0.5 * rng.normal(size=(rows, d)).astype(np.float32))
    q = mmq.PQ(m=32, k=256, seed=0).fit(x[:20_000])
    frame = pl.DataFrame({"image": pl.Series("image", x, dtype=pl.Array(pl.Float32, d))})
    expr = pl.col("image").mmq.encode(q)  # writes the quantizer file once
    t_expr, r_expr, o_expr = timed(lambda: frame.select(expr), runs)
    t_api, r_api, o_api = timed(lambda: q.encode(x), runs)
    same = bool(np.array_equal(o_expr.to_series().to_numpy(), o_api))
    res["encode"] = {
        "rows": rows, "d": d, "m": 32, "k": 256, "expression_s": t_expr, "api_s": t_api,
        "runs": {"expression": r_expr, "api": r_api}, "expression_equals_api": same,
        "expression_over_api": t_expr / t_api,
    }

    checks = []
    print()
    print(f"| operation | expression | API | plain Python | expression / API | Python / expression |")
    print("|---|---|---|---|---|---|")
    if "tokenize" in res:
        r = res["tokenize"]
        print(f"| tokenize ({r['rows']:,} rows) | {r['expression_s'] * 1e3:.0f} ms | {r['api_s'] * 1e3:.0f} ms | "
              f"{r['python_s']:.1f} s | {r['expression_over_api']:.2f}x | {r['speedup_vs_python']:.0f}x |")
        checks.append(("tokenize expression >= 10x plain Python", r["speedup_vs_python"] >= 10))
        checks.append(("tokenize expression within 1.2x of the API", r["expression_over_api"] <= 1.2))
    r = res["encode"]
    print(f"| encode ({r['rows']:,} x {d}, m=32) | {r['expression_s'] * 1e3:.0f} ms | {r['api_s'] * 1e3:.0f} ms | "
          f"- | {r['expression_over_api']:.2f}x | - |")
    checks.append(("encode expression within 1.2x of the API", r["expression_over_api"] <= 1.2))
    print()
    for name, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    out = args.out or (REPO / "benches" / "results" / ("expr_vs_api_quick.json" if args.quick else "expr_vs_api.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"polars": pl.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
            "runs": runs, "repeat": repeat}
    out.write_text(json.dumps({"meta": meta, "results": res,
                               "checks": [{"check": n, "pass": ok} for n, ok in checks]}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
