"""mmq.ray scale-out: encode and predict throughput on a local Ray cluster with 1 and 2
workers, the parallel efficiency from 1 to 2, and Ray's overhead on one worker against
the plain single-process API (one thread), interleaved rounds, medians.

    python benches/ray_scaleout.py [--rows 1000000] [--rounds 3] [--out benches/results/ray_scaleout.json]

Encode: PQ (m=32, k=256) of 256-d float32 vectors (the first 256 dimensions of
fashion_products' image embeddings, each row plus seeded noise). Predict: a text model
(dim 10, bigrams) fitted on ag_news_small's train split, predicting its test texts
repeated to ``--rows``. The input dataset is materialized in Ray's object store first
(in 32 blocks; each block is one batch), so the timed part is the map_batches stage alone: actor start and model
load, the batches, and the outputs (the codes in place of the vectors; the predictions
alone) written back to the object store.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=32)
    ap.add_argument("--out", default=str(ROOT / "benches" / "results" / "ray_scaleout.json"))
    args = ap.parse_args()

    import ray

    import mmq
    import mmq.ray as mr
    from mmq import _mmq

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    rng = np.random.default_rng(0)

    fp = pl.read_parquet(DATA / "fashion_products.parquet")
    base = fp.get_column("image").to_numpy()[:, :256]
    idx = rng.integers(0, len(base), args.rows)
    x = (base[idx] + rng.normal(scale=0.05, size=(args.rows, 256))).astype(np.float32)
    q = mmq.PQ(m=32, k=256, seed=0).fit(x[:65_536])
    vec = pl.DataFrame({"v": pl.Series(x, dtype=pl.Array(pl.Float32, 256))})

    ag = pl.read_parquet(DATA / "ag_news_small.parquet")
    clf = mmq.Classifier(dim=10, word_ngrams=2, epoch=5, lr=0.5, threads=2, seed=0, progress=False)
    clf.fit(ag.filter(pl.col("split") == "train"))
    model_path = "/tmp/mmq-ray-bench-model.mmq"
    clf.save(model_path)
    te = ag.filter(pl.col("split") == "test").select("text")
    texts = te.select(pl.col("text").gather(pl.Series(np.arange(args.rows) % len(te))))

    def blocks(df: pl.DataFrame):
        n = len(df)
        step = -(-n // args.blocks)
        return ray.data.from_arrow([df.slice(s, step).to_arrow() for s in range(0, n, step)]).materialize()

    ctx.execution_options.preserve_order = True  # the blocks in row order, for the exactness check
    ds_vec, ds_txt = blocks(vec), blocks(texts)
    tiny_vec, tiny_txt = blocks(vec.head(2)), blocks(texts.head(2))

    def plain_encode():
        _mmq.set_threads(1)
        from mmq.quant import as_matrix
        q.encode(as_matrix(vec.get_column("v")))

    def plain_predict():
        _mmq.set_threads(1)
        clf.predict(texts)

    def on_ray(ds, cls, kwargs, workers, rows=args.rows):
        def run():
            out = ds.map_batches(cls, fn_constructor_kwargs=kwargs, batch_format="pyarrow", batch_size=None,
                                 compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1).materialize()
            assert out.count() == rows
        return run

    # Outputs: the codes in place of the vectors, and the predictions alone (the plain
    # API returns no copy of its input either).
    enc = {"quantizer": q, "column": "v", "replace": True}
    pred = {"model": model_path, "keep": []}
    cases = {
        "encode": {"plain": plain_encode, "ray_1": on_ray(ds_vec, mr.Encode, enc, 1),
                   "ray_2": on_ray(ds_vec, mr.Encode, enc, 2),
                   # the same job on 2 rows: the fixed cost (actor start, model load, scheduling)
                   "start_1": on_ray(tiny_vec, mr.Encode, enc, 1, 2), "start_2": on_ray(tiny_vec, mr.Encode, enc, 2, 2)},
        "predict": {"plain": plain_predict, "ray_1": on_ray(ds_txt, mr.Predict, pred, 1),
                    "ray_2": on_ray(ds_txt, mr.Predict, pred, 2),
                    "start_1": on_ray(tiny_txt, mr.Predict, pred, 1, 2), "start_2": on_ray(tiny_txt, mr.Predict, pred, 2, 2)},
    }
    # exactness, once (in order): Ray's outputs equal the plain API's
    ctx.execution_options.preserve_order = True
    got = mr.to_polars(ds_vec.map_batches(mr.Encode, fn_constructor_kwargs=enc, batch_format="pyarrow",
                                          compute=ray.data.ActorPoolStrategy(size=2)))
    from mmq.quant import as_matrix
    exact_encode = bool(np.array_equal(np.stack(got.get_column("v").to_numpy()),
                                       q.encode(as_matrix(vec.get_column("v")))))
    ctx.execution_options.preserve_order = False
    times = {task: {k: [] for k in c} for task, c in cases.items()}
    for r in range(args.rounds):
        for task, c in cases.items():
            for name, fn in c.items():
                t = time.perf_counter()
                fn()
                times[task][name].append(time.perf_counter() - t)
                print(f"round {r} {task:8s} {name:6s} {times[task][name][-1]:7.2f} s", file=sys.stderr, flush=True)
    res = {"rows": args.rows, "rounds": args.rounds, "blocks": args.blocks, "ray": ray.__version__,
           "exact_encode": exact_encode, "cpus": os.cpu_count(), "tasks": {}}
    for task, t in times.items():
        med = {k: statistics.median(v) for k, v in t.items()}
        res["tasks"][task] = {
            "seconds": t, "median_s": med,
            "rows_per_s": {k: args.rows / v for k, v in med.items()},
            "parallel_efficiency_1_to_2": med["ray_1"] / (2 * med["ray_2"]),
            "ray_overhead_1_worker": med["ray_1"] / med["plain"] - 1,
            "parallel_efficiency_without_start": (med["ray_1"] - med["start_1"]) / (2 * (med["ray_2"] - med["start_2"])),
            "ray_overhead_without_start": (med["ray_1"] - med["start_1"]) / med["plain"] - 1,
        }
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"\n| task | plain API, 1 thread | Ray, 1 worker | Ray, 2 workers | efficiency 1→2 | Ray overhead (1 worker) "
          f"| fixed cost (1 / 2 workers) | efficiency / overhead without it |")
    print("|---|---|---|---|---|---|---|---|")
    for task, r in res["tasks"].items():
        m, rps = r["median_s"], r["rows_per_s"]
        print(f"| {task} | {m['plain']:.2f} s ({rps['plain']/1e3:.0f}k rows/s) | {m['ray_1']:.2f} s "
              f"({rps['ray_1']/1e3:.0f}k/s) | {m['ray_2']:.2f} s ({rps['ray_2']/1e3:.0f}k/s) | "
              f"{r['parallel_efficiency_1_to_2']:.2f} | {100*r['ray_overhead_1_worker']:+.1f}% | "
              f"{m['start_1']:.2f} s / {m['start_2']:.2f} s | {r['parallel_efficiency_without_start']:.2f} / "
              f"{100*r['ray_overhead_without_start']:+.1f}% |")
    print(f"exact encode: {exact_encode}")
    ray.shutdown()


if __name__ == "__main__":
    main()
