#!/usr/bin/env python3
"""Side-by-side benchmark: mmq's product quantizers against faiss and nanopq.

Methods (k = 256 centroids per sub-quantizer, u8 codes, all from the same training rows):

* ``mmq PQ``    -- ``mmq.PQ(m)``: m contiguous blocks;
* ``mmq RSPQ``  -- ``mmq.RSPQ(m, s=d/m)``: m random subsets of d/m dimensions each, drawn
  independently (they may overlap, and some dimensions are left to no sub-quantizer);
* ``faiss``     -- ``faiss.ProductQuantizer(d, m, 8)``, ``cp.niter = 25``,
  ``cp.max_points_per_centroid = 256``, ``faiss.omp_set_num_threads(<cores>)``;
* ``nanopq``    -- ``nanopq.PQ(M=m, Ks=256).fit(x_train, iter=25, seed=0)`` (SciPy k-means,
  pure Python around it; a reference point, not a target).

Data:

* synthetic, d in {512, 1280, 2048}, n = 200,000 rows (seeded): a mean offset, plus 128
  clusters of Zipf-like sizes in a 64-dimensional latent space with a power-law spectrum,
  mixed into all d dimensions by a random orthonormal basis, plus per-dimension noise of
  log-normally spread scales (about 2/3 of the energy in the low-rank part);
* real: the ``image`` column of ``mvsa_tweets.parquet`` (4,000 x 1280 EfficientNet-Lite0
  features) from ``shared/data`` beside the repository's root (override with ``MMQ_DATA``);
  skipped with a message when absent.

For every (data, d, m) and method:

* train seconds: one ``fit`` on the same training sample (256 * k = 65,536 rows drawn
  without replacement with a fixed seed, or all rows when there are fewer), 25 iterations
  at most. Note that mmq's k-means also stops early once the relative improvement of its
  objective falls under 1e-4 (its default ``tol``, not settable from Python); faiss and
  nanopq always run the 25 iterations;
* encode vectors/s: best of 3 over all n rows (a repetition loops until it lasts at least
  0.5 s on small sets);
* reconstruction MSE: mean over rows of ||x - decode(encode(x))||^2 (summed over the
  dimensions), computed the same way (NumPy, float64 accumulation) for every method on the
  same rows: all n rows, except nanopq when its encode over n rows would take more than
  ~60 s -- it then encodes (and is scored on) the first 20,000 rows, which the table marks
  and whose faiss / mmq MSE on the same rows serve for its ratio.

nanopq's k-means is slow (SciPy, no BLAS): to keep the whole run near 10 minutes on 2 cores,
when a short probe says its train on the full sample would take more than
``--nanopq-train-budget`` seconds (default 20), it trains on the first rows of the sample
only, and the table shows its train time scaled linearly to the full sample ("~", with a
note; its MSE then comes from the smaller sample). ``--nanopq-train-budget 0`` always
trains it on the full sample (the full run then takes far longer).

Targets (mmq PQ against faiss, at every case): encode >= 2x faiss's vectors/s; train time
<= faiss's with MSE <= 1.02x faiss's. Results go to ``benches/results/pq_vs_faiss.json``
(``pq_vs_faiss_quick.json`` with ``--quick``).

Run from the repository root::

    PYTHONPATH=python python benches/pq_vs_faiss.py            # full (~8-10 min on 2 cores)
    PYTHONPATH=python python benches/pq_vs_faiss.py --quick    # smoke: d=512 only, n=50k

On a shared machine, ``--wait-quiet 60`` waits (up to 60 s per case) for other processes to
go quiet first; every row of the table shows the share of the cores other processes took
during its train / encode timing ("others %"). faiss's OpenMP loops spin-wait by default and
slow down several-fold when another process holds a core (mmq's rayon pool barely notices);
``--omp-passive`` sets ``OMP_WAIT_POLICY=PASSIVE`` for it, which mostly removes that.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
RESULTS = HERE.parent / "results"

K = 256
MAX_ITER = 25
MAX_POINTS_PER_CENTROID = 256
TRAIN_ROWS = MAX_POINTS_PER_CENTROID * K  # 65,536
SEED = 0
ENCODE_REPEATS = 3
MIN_TIMING_S = 0.5
NANOPQ_ENCODE_LIMIT_S = 60.0
NANOPQ_SUBSET = 20_000
MSE_CHUNK = 16_384
TARGET_ENCODE_SPEEDUP = 2.0
TARGET_MSE_RATIO = 1.02

FULL_DIMS = (512, 1280, 2048)
FULL_N = 200_000
QUICK_DIMS = (512,)
QUICK_N = 50_000
MS = (8, 32)


def data_dir() -> Path:
    env = os.environ.get("MMQ_DATA")
    return Path(env).expanduser().resolve() if env else HERE.parents[2] / "shared" / "data"


def n_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return math.nan


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def system_busy_s() -> float:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat; NaN elsewhere)."""
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
    except (OSError, ValueError):
        return math.nan
    # user nice system idle iowait irq softirq steal ...
    return (v[0] + v[1] + v[2] + sum(v[5:8])) / _TICK


class OtherLoad:
    """Share of the machine (0..1 of all cores) that *other* processes used while in the
    ``with`` block: system busy time minus this process's CPU time."""

    def __enter__(self):
        self.b0, self.p0, self.t0 = system_busy_s(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        others = (system_busy_s() - self.b0) - (time.process_time() - self.p0)
        self.share = max(0.0, others) / max(wall * n_cores(), 1e-9) if wall > 0.05 else math.nan
        return False


def wait_quiet(max_wait_s: float, threshold: float = 0.15) -> float:
    """Wait (at most ``max_wait_s``) until other processes use under ``threshold`` of the
    machine over a 2 s window; returns the last measured share."""
    deadline = time.perf_counter() + max_wait_s
    while True:
        with OtherLoad() as ol:
            time.sleep(2.0)
        if not ol.share > threshold or time.perf_counter() >= deadline:
            return ol.share
        log(f"    (machine busy: others use {100 * ol.share:.0f}% of the cores; waiting)")
        time.sleep(5.0)


def dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------
def make_synthetic(n: int, d: int, seed: int = SEED, chunk: int = 25_000) -> np.ndarray:
    """Realistic-ish embeddings: offset + clustered low-rank part + anisotropic noise."""
    rng = np.random.default_rng([seed, d])
    r, n_clusters = 64, 128
    basis, _ = np.linalg.qr(rng.standard_normal((d, r)))            # d x r, orthonormal
    lam = (1.0 + np.arange(r)) ** -0.8                               # latent spectrum
    # 2/3 of the (centred) energy in the low-rank part, 1/3 in the noise; average
    # per-dimension variance 1.
    lat_energy = float(lam.sum()) * (1.5 ** 2 + 1.0)
    proj = (basis * math.sqrt(d * (2 / 3) / lat_energy)).T.astype(np.float32)  # r x d
    sigma = rng.lognormal(0.0, 0.6, d)
    sigma *= math.sqrt(d * (1 / 3) / float((sigma ** 2).sum()))
    sigma = sigma.astype(np.float32)
    mu = (0.5 * rng.standard_normal(d)).astype(np.float32)
    p = 1.0 / (1.0 + np.arange(n_clusters)) ** 0.8
    p /= p.sum()
    centers = rng.standard_normal((n_clusters, r)) * np.sqrt(lam) * 1.5
    x = np.empty((n, d), dtype=np.float32)
    for i in range(0, n, chunk):
        j = min(n, i + chunk)
        lab = rng.choice(n_clusters, size=j - i, p=p)
        lat = (centers[lab] + rng.standard_normal((j - i, r)) * np.sqrt(lam)).astype(np.float32)
        blk = rng.standard_normal((j - i, d), dtype=np.float32)
        blk *= sigma
        blk += mu
        blk += lat @ proj
        x[i:j] = blk
    return x


def load_mvsa() -> np.ndarray | None:
    path = data_dir() / "mvsa_tweets.parquet"
    if not path.exists():
        log(f"SKIP mvsa_tweets: {path} not found (set MMQ_DATA to the folder holding it)")
        return None
    import polars as pl

    col = pl.read_parquet(path, columns=["image"])["image"]
    if col.null_count():
        col = col.drop_nulls()
    return np.ascontiguousarray(col.to_numpy(), dtype=np.float32)


def train_sample(x: np.ndarray, seed: int = SEED) -> np.ndarray:
    n = x.shape[0]
    if n <= TRAIN_ROWS:
        return x
    idx = np.sort(np.random.default_rng([seed, 12345]).choice(n, TRAIN_ROWS, replace=False))
    return np.ascontiguousarray(x[idx])


# --------------------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------------------
def time_encode(encode, x: np.ndarray, repeats: int = ENCODE_REPEATS):
    """Best-of-``repeats`` vectors/s; returns (vectors/s, codes, per-repetition seconds)."""
    t0 = time.perf_counter()
    codes = encode(x)
    first = time.perf_counter() - t0
    loops = 1 if first >= MIN_TIMING_S else max(1, math.ceil(MIN_TIMING_S / max(first, 1e-6)))
    times = [first] if loops == 1 else []
    while len(times) < repeats:
        t0 = time.perf_counter()
        for _ in range(loops):
            codes = encode(x)
        times.append((time.perf_counter() - t0) / loops)
    return x.shape[0] / min(times), codes, times


def row_errors(decode, codes: np.ndarray, x: np.ndarray) -> np.ndarray:
    """||x_i - decode(codes_i)||^2 per row (float64)."""
    out = np.empty(x.shape[0], dtype=np.float64)
    for i in range(0, x.shape[0], MSE_CHUNK):
        j = min(x.shape[0], i + MSE_CHUNK)
        diff = x[i:j] - np.asarray(decode(codes[i:j]), dtype=np.float32)
        out[i:j] = np.einsum("ij,ij->i", diff, diff, dtype=np.float64)
    return out


def run_method(name: str, fit, encode, decode, x: np.ndarray, x_train: np.ndarray,
               encode_rows: int | None = None, fitted=None) -> dict:
    """Train (unless ``fitted`` = (model, train_s, loadavg) is given), time the encode, score."""
    if fitted is None:
        la = loadavg()
        with OtherLoad() as ol_train:
            c0, t0 = time.process_time(), time.perf_counter()
            model = fit(x_train)
            train_s = time.perf_counter() - t0
            train_cpu_s = time.process_time() - c0
        other_train = ol_train.share
    else:
        model, train_s, la, other_train = fitted
        train_cpu_s = None
    xe = x if encode_rows is None else x[:encode_rows]
    with OtherLoad() as ol_enc:
        vps, codes, times = time_encode(lambda a: encode(model, a), xe)
    err = row_errors(lambda c: decode(model, c), codes, xe)
    res = {
        "method": name,
        "train_s": train_s,
        "train_cpu_s": train_cpu_s,
        "encode_vps": vps,
        "encode_times_s": times,
        "encode_rows": int(xe.shape[0]),
        "mse": float(err.mean()),
        "loadavg_1m_start": la,
        "others_cpu_share_train": other_train,
        "others_cpu_share_encode": ol_enc.share,
        "codes_dtype": str(codes.dtype),
    }
    log(f"    {name:<9} train {train_s:7.2f} s | encode {vps:12,.0f} vec/s "
        f"(rows {xe.shape[0]:,}) | MSE {res['mse']:.5g} | others' CPU share "
        f"train {100 * other_train:.0f}% encode {100 * ol_enc.share:.0f}%")
    return res | {"_model": model, "_err": err}


def bench_nanopq(x: np.ndarray, x_train: np.ndarray, m: int, train_budget_s: float) -> dict:
    """nanopq: train on the shared sample when that fits ``train_budget_s`` (estimated from a
    short k-means probe on one sub-space), else on its first rows, with the full-sample train
    time extrapolated linearly in rows; encode on a 20k-row subset when all rows would take
    more than ~60 s."""
    import nanopq
    from scipy.cluster.vq import kmeans2

    n, d = x.shape
    nt = x_train.shape[0]
    ds = d // m
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Probe: a few k-means iterations on sub-space 0 of at most 16,384 rows.
        pr, it = min(nt, 16_384), 3
        sub = np.ascontiguousarray(x_train[:pr, :ds])
        np.random.seed(SEED)
        t0 = time.perf_counter()
        kmeans2(sub, K, iter=it, minit="points")
        est_train = (time.perf_counter() - t0) * (nt / pr) * (MAX_ITER / it) * m
        train_rows = nt if est_train <= train_budget_s else max(20 * K, int(nt * train_budget_s / est_train))
        train_rows = min(train_rows, nt)
        la = loadavg()
        with OtherLoad() as ol:
            t0 = time.perf_counter()
            model = nanopq.PQ(M=m, Ks=K, verbose=False).fit(x_train[:train_rows], iter=MAX_ITER, seed=SEED)
            train_s = time.perf_counter() - t0
    probe = x[: min(n, 2_000)]
    t0 = time.perf_counter()
    model.encode(probe)
    est_enc = (time.perf_counter() - t0) * n / probe.shape[0] * ENCODE_REPEATS
    rows = None if est_enc <= NANOPQ_ENCODE_LIMIT_S else min(n, NANOPQ_SUBSET)
    if train_rows < nt:
        log(f"    nanopq: training on all {nt:,} rows would take ~{est_train:.0f} s; trained on the first "
            f"{train_rows:,} rows of the sample ({train_s:.1f} s), full-sample time extrapolated")
    if rows is not None:
        log(f"    nanopq: encoding all {n:,} rows x{ENCODE_REPEATS} would take ~{est_enc:.0f} s; "
            f"encode and MSE on the first {rows:,} rows")
    full_train_s = train_s * nt / train_rows
    r = run_method("nanopq", None, lambda q, a: q.encode(a), lambda q, c: q.decode(c), x, x_train,
                   encode_rows=rows, fitted=(model, full_train_s, la, ol.share))
    r.update({"train_rows": train_rows, "train_s_measured": train_s, "train_estimated": train_rows < nt,
              "train_estimate_probe_s": est_train, "encode_estimate_full_s": est_enc,
              "subset": rows is not None})
    return r


def bench_case(label: str, x: np.ndarray, m: int, threads: int, with_nanopq: bool,
               nanopq_train_budget: float, wait_quiet_s: float = 0.0) -> dict:
    import faiss
    import mmq

    n, d = x.shape
    quiet = wait_quiet(wait_quiet_s) if wait_quiet_s > 0 else math.nan
    x_train = train_sample(x)
    case = {"data": label, "n": n, "d": d, "m": m, "k": K, "s_rspq": d // m,
            "train_rows": int(x_train.shape[0]), "loadavg_1m_start": loadavg(),
            "others_cpu_share_before": quiet, "methods": {}}
    log(f"  [{label}] d={d} m={m} n={n:,} train_rows={x_train.shape[0]:,} "
        f"(load avg {case['loadavg_1m_start']:.2f})")

    def faiss_fit(xt):
        pq = faiss.ProductQuantizer(d, m, 8)
        pq.cp.niter = MAX_ITER
        pq.cp.max_points_per_centroid = MAX_POINTS_PER_CENTROID
        pq.cp.seed = SEED
        # Only gates faiss's "please provide at least 39*k training points" warning (the
        # 4,000-row real set triggers it once per sub-quantizer); no effect on training.
        pq.cp.min_points_per_centroid = 1
        pq.verbose = False
        pq.train(xt)
        return pq

    faiss.omp_set_num_threads(threads)
    r_faiss = run_method("faiss", faiss_fit, lambda q, a: q.compute_codes(a),
                         lambda q, c: q.decode(c), x, x_train)

    r_pq = run_method(
        "mmq PQ",
        lambda xt: mmq.PQ(m, k=K, seed=SEED, max_iter=MAX_ITER,
                          max_points_per_centroid=MAX_POINTS_PER_CENTROID).fit(xt),
        lambda q, a: q.encode(a), lambda q, c: q.decode(c), x, x_train)
    r_rspq = run_method(
        "mmq RSPQ",
        lambda xt: mmq.RSPQ(m, s=d // m, k=K, seed=SEED, max_iter=MAX_ITER,
                            max_points_per_centroid=MAX_POINTS_PER_CENTROID).fit(xt),
        lambda q, a: q.encode(a), lambda q, c: q.decode(c), x, x_train)

    # Cross-check our MSE against mmq's own quantization_error on a slice.
    sl = x[: min(n, 20_000)]
    for r in (r_pq, r_rspq):
        own = r["_model"].quantization_error(sl)
        ours = float(r["_err"][: sl.shape[0]].mean())
        r["mse_crosscheck_rel_diff"] = abs(own - ours) / max(abs(ours), 1e-30)
        if r["mse_crosscheck_rel_diff"] > 1e-3:
            log(f"    WARNING: {r['method']} quantization_error {own:.6g} != decode-based {ours:.6g}")

    # RSPQ coverage: dimensions no sub-quantizer owns decode to the training mean.
    subs = r_rspq["_model"].subspaces
    cover = np.zeros(d, dtype=np.int64)
    for sub in subs:
        np.add.at(cover, np.asarray(sub, dtype=np.int64), 1)
    r_rspq["dims_uncovered_frac"] = float((cover == 0).mean())
    r_rspq["dims_multiply_covered_frac"] = float((cover > 1).mean())
    var = x_train.var(axis=0, dtype=np.float64)
    r_rspq["uncovered_variance"] = float(var[cover == 0].sum())
    r_rspq["uncovered_variance_frac_of_mse"] = r_rspq["uncovered_variance"] / max(r_rspq["mse"], 1e-30)
    case["total_variance"] = float(var.sum())

    results = [r_faiss, r_pq, r_rspq]

    if with_nanopq:
        r_nano = bench_nanopq(x, x_train, m, nanopq_train_budget)
        rows = r_nano["encode_rows"] if r_nano["subset"] else None
        if rows is not None:
            r_nano["faiss_mse_same_rows"] = float(r_faiss["_err"][:rows].mean())
            r_nano["mmq_pq_mse_same_rows"] = float(r_pq["_err"][:rows].mean())
        results.append(r_nano)

    fa = r_faiss
    for r in results:
        ref_mse = r.get("faiss_mse_same_rows", fa["mse"])
        r["ratio_encode_vs_faiss"] = r["encode_vps"] / fa["encode_vps"]
        r["ratio_train_vs_faiss"] = r["train_s"] / fa["train_s"]
        r["ratio_mse_vs_faiss"] = r["mse"] / ref_mse
        case["methods"][r["method"]] = {k: v for k, v in r.items() if not k.startswith("_")}
    pq = case["methods"]["mmq PQ"]
    case["pass_encode"] = pq["ratio_encode_vs_faiss"] >= TARGET_ENCODE_SPEEDUP
    case["pass_train"] = pq["ratio_train_vs_faiss"] <= 1.0 and pq["ratio_mse_vs_faiss"] <= TARGET_MSE_RATIO
    case["loadavg_1m_end"] = loadavg()
    return case


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------
NOISY_SHARE = 0.25


def _others_cell(r: dict) -> str:
    a, b = r.get("others_cpu_share_train"), r.get("others_cpu_share_encode")
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return "?"
    return f"{100 * a:.0f}/{100 * b:.0f}" + (" !" if max(a, b) > NOISY_SHARE else "")


def fmt_table(cases: list[dict]) -> str:
    head = ["data", "d", "m", "method", "train s", "encode vec/s", "MSE",
            "enc x faiss", "train / faiss", "MSE / faiss", "others %", "note"]
    rows = []
    for c in cases:
        for name, r in c["methods"].items():
            is_ref = name == "faiss"
            note = ""
            if name == "mmq RSPQ":
                note = f"s={c['s_rspq']}, {100 * r['dims_uncovered_frac']:.0f}% dims uncovered"
            train = f"{r['train_s']:.2f}"
            if name == "nanopq":
                parts = []
                if r.get("train_estimated"):
                    train = "~" + train
                    parts.append(f"trained on {r['train_rows']:,} rows ({r['train_s_measured']:.1f} s), time scaled")
                if r.get("subset"):
                    parts.append(f"encode+MSE on first {r['encode_rows']:,} rows")
                note = "; ".join(parts)
            rows.append([
                c["data"], str(c["d"]), str(c["m"]), name,
                train, f"{r['encode_vps']:,.0f}", f"{r['mse']:.4g}",
                "1" if is_ref else f"{r['ratio_encode_vs_faiss']:.2f}x",
                "1" if is_ref else f"{r['ratio_train_vs_faiss']:.2f}",
                "1" if is_ref else f"{r['ratio_mse_vs_faiss']:.3f}",
                _others_cell(r),
                note,
            ])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    right = {1, 2, 4, 5, 6, 7, 8, 9, 10}

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    out = [line(head), "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                                      for i, w in enumerate(widths)) + "|"]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def verdicts(cases: list[dict]) -> list[str]:
    lines = []
    enc = [(c["data"], c["d"], c["m"], c["methods"]["mmq PQ"]["ratio_encode_vs_faiss"]) for c in cases]
    worst = min(enc, key=lambda t: t[3])
    ok = all(t[3] >= TARGET_ENCODE_SPEEDUP for t in enc)
    lines.append(f"{'PASS' if ok else 'FAIL'}: mmq PQ encode >= {TARGET_ENCODE_SPEEDUP:g}x faiss vectors/s "
                 f"at every (d, m) -- worst {worst[3]:.2f}x ({worst[0]} d={worst[1]} m={worst[2]})")
    for c in cases:
        r = c["methods"]["mmq PQ"]
        lines.append(f"  {'PASS' if c['pass_encode'] else 'FAIL'}  encode  {c['data']} d={c['d']} m={c['m']}: "
                     f"{r['ratio_encode_vs_faiss']:.2f}x faiss")
    ok = all(c["pass_train"] for c in cases)
    lines.append(f"{'PASS' if ok else 'FAIL'}: mmq PQ train time <= faiss's with MSE <= "
                 f"{TARGET_MSE_RATIO:g}x faiss's at every (d, m)")
    for c in cases:
        r = c["methods"]["mmq PQ"]
        lines.append(f"  {'PASS' if c['pass_train'] else 'FAIL'}  train   {c['data']} d={c['d']} m={c['m']}: "
                     f"time {r['ratio_train_vs_faiss']:.2f}x faiss, MSE {r['ratio_mse_vs_faiss']:.3f}x faiss")
    rs = [c["methods"]["mmq RSPQ"]["ratio_encode_vs_faiss"] for c in cases]
    lines.append(f"info: mmq RSPQ encode vs faiss: {min(rs):.2f}x .. {max(rs):.2f}x (no target)")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"smoke run: d={QUICK_DIMS}, n={QUICK_N:,}, no real data")
    ap.add_argument("--n", type=int, default=None, help="synthetic rows (default 200k, 50k with --quick)")
    ap.add_argument("--dims", type=int, nargs="+", default=None, help="synthetic dimensions")
    ap.add_argument("--no-nanopq", action="store_true", help="skip nanopq")
    ap.add_argument("--nanopq-train-budget", type=float, default=None, metavar="S",
                    help="train nanopq on fewer rows when the full sample would take longer than S s "
                         "(estimated; default 20, 8 with --quick; 0 = always the full sample)")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="before each case, wait up to S s for other processes to use < 15%% of the cores")
    ap.add_argument("--omp-passive", action="store_true",
                    help="set OMP_WAIT_POLICY=PASSIVE for faiss (much faster for it on a busy machine, "
                         "possibly slower on an idle one)")
    ap.add_argument("--no-real", action="store_true", help="skip mvsa_tweets")
    ap.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = ap.parse_args(argv)
    if args.nanopq_train_budget is None:
        args.nanopq_train_budget = 8.0 if args.quick else 20.0
    elif args.nanopq_train_budget <= 0:
        args.nanopq_train_budget = math.inf

    if args.omp_passive:
        if "faiss" in sys.modules:
            log("WARNING: --omp-passive has no effect: faiss was imported before")
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import faiss
    import mmq

    dims = tuple(args.dims) if args.dims else (QUICK_DIMS if args.quick else FULL_DIMS)
    n = args.n or (QUICK_N if args.quick else FULL_N)
    with_real = not (args.quick or args.no_real)
    with_nanopq = not args.no_nanopq
    threads = n_cores()
    faiss.omp_set_num_threads(threads)
    out_path = args.out or RESULTS / ("pq_vs_faiss_quick.json" if args.quick else "pq_vs_faiss.json")

    la0 = loadavg()
    log(f"pq_vs_faiss: dims={dims} n={n:,} m={MS} k={K} threads={threads} "
        f"(mmq: rayon, all cores; faiss: omp {threads}) load avg at start {la0:.2f}")
    if la0 > 0.5 * threads:
        log(f"WARNING: load average {la0:.2f} on {threads} cores before starting: "
            "other work is running, timings will be noisy")
    t_start = time.perf_counter()
    cases = []
    for d in dims:
        t0 = time.perf_counter()
        x = make_synthetic(n, d)
        log(f"synthetic d={d}: generated {n:,} rows in {time.perf_counter() - t0:.1f} s")
        for m in MS:
            if d % m:
                log(f"  skip d={d} m={m}: faiss and nanopq need d % m == 0")
                continue
            cases.append(bench_case("synthetic", x, m, threads, with_nanopq, args.nanopq_train_budget, args.wait_quiet))
        del x
    if with_real:
        x = load_mvsa()
        if x is not None:
            for m in MS:
                cases.append(bench_case("mvsa_image", x, m, threads, with_nanopq, args.nanopq_train_budget, args.wait_quiet))
    elif not args.quick:
        log("mvsa_tweets skipped (--no-real)")
    total = time.perf_counter() - t_start

    table = fmt_table(cases)
    verdict = verdicts(cases)
    loads = [c["loadavg_1m_start"] for c in cases] + [c["loadavg_1m_end"] for c in cases]
    load_warn = [f"{c['data']} d={c['d']} m={c['m']}: {c['loadavg_1m_start']:.2f}"
                 for c in cases if c["loadavg_1m_start"] > threads + 0.5]
    noisy = [f"{c['data']} d={c['d']} m={c['m']} {name}" for c in cases for name, r in c["methods"].items()
             if max(r.get("others_cpu_share_train") or 0, r.get("others_cpu_share_encode") or 0) > NOISY_SHARE]
    print()
    print(f"PQ benchmark: k={K}, {MAX_ITER} iterations max, train on "
          f"{TRAIN_ROWS:,} rows (or all), encode best of {ENCODE_REPEATS}, "
          f"{threads} threads; total {total:.0f} s")
    print(table)
    print()
    for v in verdict:
        print(v)
    print()
    print(f"load average (1 min) over the run: {min(loads):.2f} .. {max(loads):.2f} on {threads} cores")
    if load_warn:
        print("WARNING: load average above the core count (+0.5) at the start of: " + "; ".join(load_warn)
              + " -- other processes competed for the CPU; timings there are noisy.")
    print("'others %' = share of the machine's cores used by other processes during the train / the "
          f"encode timing ('!' above {100 * NOISY_SHARE:.0f}%: that timing is inflated by contention; "
          "faiss's OpenMP loops suffer most from it).")
    if noisy:
        print(f"WARNING: {len(noisy)} of {sum(len(c['methods']) for c in cases)} measurements ran while other "
              "processes took over " f"{100 * NOISY_SHARE:.0f}% of the CPU: " + ", ".join(noisy))
    print("note: mmq's k-means also stops once the relative objective improvement is < 1e-4 "
          "(default tol); faiss and nanopq run all 25 iterations.")
    print("note: mmq RSPQ draws s=d/m dimensions per sub-quantizer independently, so about "
          "(1-1/m)^m of the dimensions (~34-37%) belong to no sub-quantizer and decode to the "
          "training mean: its MSE carries their whole variance and is expected to be far above PQ's.")

    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": "pq_vs_faiss",
        "when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": bool(args.quick),
        "settings": {"k": K, "max_iter": MAX_ITER, "max_points_per_centroid": MAX_POINTS_PER_CENTROID,
                     "train_rows": TRAIN_ROWS, "seed": SEED, "encode_repeats": ENCODE_REPEATS,
                     "min_timing_s": MIN_TIMING_S, "n_synthetic": n, "dims": list(dims), "ms": list(MS),
                     "threads": threads, "nanopq_encode_limit_s": NANOPQ_ENCODE_LIMIT_S,
                     "nanopq_subset_rows": NANOPQ_SUBSET,
                     "wait_quiet_s": args.wait_quiet,
                     "nanopq_train_budget_s": None if math.isinf(args.nanopq_train_budget) else args.nanopq_train_budget,
                     "mse": "mean over rows of ||x - decode(encode(x))||^2, float64 accumulation"},
        "targets": {"encode_speedup_vs_faiss": TARGET_ENCODE_SPEEDUP, "train_time_ratio_max": 1.0,
                    "mse_ratio_max": TARGET_MSE_RATIO},
        "env": {"python": platform.python_version(), "platform": platform.platform(),
                "cpu_count": os.cpu_count(), "threads": threads,
                "mmq": getattr(mmq, "__version__", dist_version("mmq")), "faiss": faiss.__version__,
                "nanopq": dist_version("nanopq"), "numpy": np.__version__, "scipy": dist_version("scipy"),
                "loadavg_1m_start": la0, "loadavg_1m_end": loadavg(),
                "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
        "total_s": total,
        "cases": cases,
        "verdicts": verdict,
        "pass_encode": all(c["pass_encode"] for c in cases),
        "pass_train": all(c["pass_train"] for c in cases),
        "table": table,
    }
    out_path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
