#!/usr/bin/env python3
"""Streaming fit: a discrete-fusion classifier trained from a Parquet file whose dense
column does not fit in memory, read with ``pl.scan_parquet`` in batches.

Data (generated once, kept at the given path unless ``--delete``): ``--rows`` rows
(default 5,000,000) of

* ``label``: one of 40 latent classes, paired (class 2i and 2i+1 share their topic words);
* ``text``: 8 words: each word is, with probability 0.3, a topic word of the row's pair of
  classes (24 per pair, so the text tells the pair but not which of its two classes), else
  one of 2,000 background words;
* ``image``: ``Array[Float32, --dim]`` (default 512): the class's random unit-variance
  centre times 0.2 plus N(0, 1) noise per dimension: a weak signal per dimension that
  the quantizer's codes carry only in part;

written in chunks of 100,000 rows (one Parquet row group each, snappy) with pyarrow's
``ParquetWriter``: the generator holds one chunk at a time. 5M x 512 is ~10 GB.

The fit runs in a fresh subprocess (the script re-invokes itself with ``--child``)::

    lf = pl.scan_parquet(path).slice(0, rows - test_rows)
    mmq.Classifier(dim=16, epoch=2, lr=0.2, dense={"image": mmq.PQ(m=16)}).fit(lf)

which samples 256 * 256 = 65,536 rows to fit the quantizer, streams the frame once,
keeping only texts, labels and codes, and trains on the codes. The child reports its
wall time, its peak RSS (``ru_maxrss``; the parent also polls the child's RSS with psutil
every 0.2 s) and the test accuracy on the held-out last ``--test-rows`` rows (default
50,000). A second child trains text-only on the same rows for comparison (``--no-text``
skips it). Target: peak RSS < 3 GB. Results go to ``benches/results/streaming_fit.json``
(``streaming_fit_quick.json`` with ``--quick``).

Run from the repository root::

    PYTHONPATH=python python benches/streaming_fit.py [PATH]          # 5M rows, ~10 GB file
    PYTHONPATH=python python benches/streaming_fit.py --quick         # 200k rows
    PYTHONPATH=python python benches/streaming_fit.py --rows 1000000 --dim 256 --delete
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TAG = "STREAMING_FIT_RESULT "
N_CLASSES, TOPIC_WORDS, BACKGROUND, WORDS_PER_ROW = 40, 24, 2000, 8
P_TOPIC, IMAGE_SCALE, CHUNK = 0.3, 0.2, 100_000


def generate(path: Path, rows: int, dim: int, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_pairs = N_CLASSES // 2
    vocab = np.array([f"t{p}x{j}" for p in range(n_pairs) for j in range(TOPIC_WORDS)]
                     + [f"b{j}" for j in range(BACKGROUND)])
    centres = rng.standard_normal((N_CLASSES, dim)).astype(np.float32) * IMAGE_SCALE
    names = np.array([f"c{c:02d}" for c in range(N_CLASSES)])
    tmp = path.with_suffix(".partial")
    writer = None
    t0 = time.time()
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        cls = rng.integers(0, N_CLASSES, size=n)
        topic = rng.random((n, WORDS_PER_ROW)) < P_TOPIC
        word = np.where(topic,
                        (cls // 2)[:, None] * TOPIC_WORDS + rng.integers(0, TOPIC_WORDS, size=(n, WORDS_PER_ROW)),
                        n_pairs * TOPIC_WORDS + rng.integers(0, BACKGROUND, size=(n, WORDS_PER_ROW)))
        words = vocab[word]
        text = words[:, 0].astype(object)
        for j in range(1, WORDS_PER_ROW):
            text = text + " " + words[:, j]
        img = rng.standard_normal((n, dim), dtype=np.float32)
        img += centres[cls]
        table = pa.table({
            "text": pa.array(text, type=pa.string()),
            "label": pa.array(names[cls], type=pa.string()),
            "image": pa.FixedSizeListArray.from_arrays(pa.array(img.ravel(), type=pa.float32()), dim),
        })
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema, compression="snappy")
        writer.write_table(table, row_group_size=CHUNK)
        del img, table, text, words
        done = start + n
        if done % (10 * CHUNK) == 0 or done == rows:
            print(f"  generated {done:,} / {rows:,} rows ({time.time() - t0:.0f} s)", flush=True)
    writer.close()
    os.replace(tmp, path)


def prepare(args: argparse.Namespace, rows: int) -> None:
    """Check or generate the file (in a subprocess of its own, see ``main``)."""
    import polars as pl

    if args.path.exists():
        schema = pl.scan_parquet(args.path).collect_schema()
        n = pl.scan_parquet(args.path).select(pl.len()).collect().item()
        if schema.get("image") != pl.Array(pl.Float32, args.dim) or n != rows:
            raise SystemExit(f"{args.path} exists with {n:,} rows and image {schema.get('image')}, not {rows:,} "
                             f"rows of Array(Float32, {args.dim}): remove it or pass another path")
        print(f"using {args.path} ({n:,} rows, {args.path.stat().st_size / 1e9:.1f} GB)")
    else:
        print(f"generating {args.path}: {rows:,} rows x {args.dim} float32 ...", flush=True)
        t0 = time.time()
        generate(args.path, rows, args.dim)
        print(f"  {args.path.stat().st_size / 1e9:.1f} GB in {time.time() - t0:.0f} s", flush=True)


def _time_phases() -> dict:
    """Times the streaming fit's phases by wrapping its steps: the sampling pass, the
    quantizer's k-means, the encoding pass (reading batches and encoding them); the rest
    of the fit (concatenating, building the token arrays, training) is ``train_s``."""
    import mmq
    from mmq import _stream

    phases = {"sample_s": 0.0, "kmeans_s": 0.0, "encode_pass_s": 0.0}
    sample, fit, batches = _stream._sample, mmq.PQ.fit, _stream.iter_batches
    sample_depth = [0]  # batches read by the sampling pass count as sampling

    def timed_sample(*a, **kw):
        t = time.perf_counter()
        try:
            return sample(*a, **kw)
        finally:
            phases["sample_s"] += time.perf_counter() - t

    def timed_fit(self, *a, **kw):
        t = time.perf_counter()
        try:
            return fit(self, *a, **kw)
        finally:
            phases["kmeans_s"] += time.perf_counter() - t

    def timed_batches(lf, *a, **kw):
        if sample_depth[0]:
            yield from batches(lf, *a, **kw)
            return
        t = time.perf_counter()
        yield from batches(lf, *a, **kw)
        phases["encode_pass_s"] += time.perf_counter() - t

    def sample_guard(*a, **kw):
        sample_depth[0] += 1
        try:
            return timed_sample(*a, **kw)
        finally:
            sample_depth[0] -= 1

    _stream._sample, mmq.PQ.fit, _stream.iter_batches = sample_guard, timed_fit, timed_batches
    return phases


def child(args: argparse.Namespace) -> None:
    import polars as pl

    import mmq

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lf = pl.scan_parquet(args.path)
    n = lf.select(pl.len()).collect().item()
    n_train = n - args.test_rows
    train = lf.slice(0, n_train)
    dense = {} if args.text_only else {"image": mmq.PQ(m=args.m, k=256, seed=0)}
    clf = mmq.Classifier(dim=16, epoch=args.epoch, lr=0.2, threads=args.threads, seed=0, progress=False,
                         dense=dense)
    phases = _time_phases()
    t0 = time.perf_counter()
    clf.fit(train)
    fit_s = time.perf_counter() - t0
    phases["train_s"] = fit_s - sum(phases.values())
    peak_fit = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    test = lf.slice(n_train, args.test_rows).collect()
    acc = clf.test(test).precision
    print(TAG + json.dumps({
        "rows": n, "train_rows": n_train, "test_rows": args.test_rows, "fit_s": fit_s,
        "peak_rss_fit_mb": peak_fit, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "phases_s": phases, "rss_after_imports_mb": base, "accuracy": acc, "labels": len(clf.labels), "polars": pl.__version__,
    }), flush=True)


def run_child(args: argparse.Namespace, text_only: bool) -> dict:
    import psutil

    cmd = [sys.executable, __file__, str(args.path), "--child", "--m", str(args.m), "--epoch", str(args.epoch),
           "--test-rows", str(args.test_rows), "--threads", str(args.threads)]
    if text_only:
        cmd.append("--text-only")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "python"), env.get("PYTHONPATH", "")])
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    peak = [0.0]

    def poll() -> None:
        p = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                peak[0] = max(peak[0], p.memory_info().rss / 2**20)
            except psutil.Error:
                break
            time.sleep(0.2)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{out}")
    res = next(json.loads(line[len(TAG):]) for line in out.splitlines() if line.startswith(TAG))
    res["polled_peak_rss_mb"] = peak[0]
    res["child_wall_s"] = wall
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", nargs="?", type=Path, default=None)
    ap.add_argument("--rows", type=int, default=None, help="rows to generate (default 5,000,000; 200,000 --quick)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--m", type=int, default=16, help="PQ sub-quantizers (k = 256)")
    ap.add_argument("--epoch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--test-rows", type=int, default=50_000)
    ap.add_argument("--quick", action="store_true", help="200,000 rows")
    ap.add_argument("--no-text", action="store_true", help="skip the text-only comparison")
    ap.add_argument("--delete", action="store_true", help="delete the generated file at the end")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--text-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    rows = args.rows or (200_000 if args.quick else 5_000_000)
    if args.path is None:
        args.path = Path("/tmp/mmq_stream_quick.parquet" if args.quick else "/tmp/mmq_stream.parquet")
    if args.child:
        return child(args)
    if args.prepare:
        return prepare(args, rows)

    # The parent imports neither polars nor numpy and generates nothing itself: a child's
    # ru_maxrss starts from its parent's RSS at fork, so the parent stays small.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "python"), env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, __file__, str(args.path), "--prepare", "--rows", str(rows),
                    "--dim", str(args.dim)], check=True, env=env)
    parent_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results = {"discrete": run_child(args, text_only=False)}
    if not args.no_text:
        results["text_only"] = run_child(args, text_only=True)
    size_gb = args.path.stat().st_size / 1e9
    float_gb = rows * args.dim * 4 / 1e9
    if args.delete:
        args.path.unlink()

    print()
    print(f"Streaming fit from {args.path.name}: {rows:,} rows x {args.dim}-d float32 "
          f"({float_gb:.1f} GB of floats, {size_gb:.1f} GB file), {args.threads} threads, "
          f"PQ m={args.m} k=256, dim 16, {args.epoch} epochs")
    print(f"| model | fit wall s | peak RSS (ru_maxrss) | peak RSS (polled) | test accuracy ({args.test_rows:,} rows) |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['fit_s']:.0f} | {r['peak_rss_fit_mb'] / 1024:.2f} GB | "
              f"{r['polled_peak_rss_mb'] / 1024:.2f} GB | {r['accuracy']:.3f} |")
    print("discrete fit phases: " + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in results["discrete"]["phases_s"].items()))
    d = results["discrete"]
    ok = d["peak_rss_fit_mb"] < 3 * 1024
    print(f"target peak RSS < 3 GB during the fit: {'PASS' if ok else 'FAIL'} "
          f"({d['peak_rss_fit_mb'] / 1024:.2f} GB; {d['rss_after_imports_mb']:.0f} MB after imports)")
    out = args.out or (REPO / "benches" / "results" /
                       ("streaming_fit_quick.json" if args.quick else "streaming_fit.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"rows": rows, "dim": args.dim, "m": args.m, "k": 256, "epoch": args.epoch, "threads": args.threads,
            "file_gb": size_gb, "float_gb": float_gb, "parent_rss_mb": parent_rss,
            "polars": results["discrete"]["polars"], "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count()}
    out.write_text(json.dumps({"meta": meta, "results": results, "target_rss_pass": ok}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
