//! Throughput measurements (release mode, ignored by default):
//! `cargo test -p mmq-core --release --test quant_bench -- --ignored --nocapture`
//! Environment: `MMQ_BENCH_N` (rows, default 200000), `MMQ_BENCH_CASES`
//! (e.g. `512x8,512x32`).
use std::time::Instant;

use mmq_core::quant::Quantizer;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

fn data(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    // Correlated-ish data: a random low-rank part plus noise.
    let r = 16;
    let basis: Vec<f32> = (0..r * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut x = vec![0f32; n * d];
    for row in x.chunks_exact_mut(d) {
        let coef: Vec<f32> = (0..r).map(|_| rng.random_range(-1.0..1.0)).collect();
        for (t, v) in row.iter_mut().enumerate() {
            let mut acc = 0.3 * rng.random_range(-1.0f32..1.0);
            for (q, c) in coef.iter().enumerate() {
                acc += c * basis[q * d + t];
            }
            *v = acc;
        }
    }
    x
}

fn cases() -> Vec<(usize, usize)> {
    match std::env::var("MMQ_BENCH_CASES") {
        Ok(s) => s
            .split(',')
            .map(|c| {
                let (d, m) = c.split_once('x').expect("DxM");
                (d.parse().unwrap(), m.parse().unwrap())
            })
            .collect(),
        Err(_) => vec![
            (512, 8),
            (512, 32),
            (1280, 8),
            (1280, 32),
            (2048, 8),
            (2048, 32),
        ],
    }
}

#[test]
#[ignore]
fn bench_encode() {
    let n: usize = std::env::var("MMQ_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let rspq = std::env::var("MMQ_BENCH_RSPQ").is_ok();
    println!("threads: {}", rayon::current_num_threads());
    for (d, m) in cases() {
        let x = data(n, d, 1);
        let mut q = if rspq {
            Quantizer::rspq(d, m, None, 256, 7).unwrap()
        } else {
            Quantizer::pq(d, m, 256, 7).unwrap()
        };
        q.set_max_iter(3);
        q.set_max_points_per_centroid(40).unwrap();
        let t = Instant::now();
        q.fit(&x, n).unwrap();
        let fit_s = t.elapsed().as_secs_f64();
        let mut codes = vec![0u8; n * m];
        q.encode_u8(&x[..2000 * d], 2000, &mut codes[..2000 * m])
            .unwrap();
        // Best of 3: the machine may be shared.
        let s = (0..3)
            .map(|_| {
                let t = Instant::now();
                q.encode_u8(&x, n, &mut codes).unwrap();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        let gflops =
            2.0 * n as f64 * 256.0 * q.subspaces().iter().map(|v| v.len()).sum::<usize>() as f64
                / s
                / 1e9;
        println!(
            "{} d={d} m={m} k=256 n={n}: encode {:.0} vectors/s ({s:.3} s, {gflops:.1} GFLOP/s); \
             quick fit (3 iters, 40 pts/centroid) {fit_s:.2} s",
            if rspq { "rspq" } else { "pq" },
            n as f64 / s
        );
    }
}

#[test]
#[ignore]
fn bench_fit() {
    let n: usize = std::env::var("MMQ_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    for (d, m) in cases() {
        let x = data(n, d, 2);
        let mut q = Quantizer::pq(d, m, 256, 7).unwrap();
        q.set_tol(0.0).unwrap();
        let t = Instant::now();
        q.fit(&x, n).unwrap();
        let fit_s = t.elapsed().as_secs_f64();
        let err = q.quantization_error(&x[..20000 * d], 20000).unwrap();
        let mut q2 = Quantizer::pq(d, m, 256, 7).unwrap();
        let t = Instant::now();
        q2.fit(&x, n).unwrap();
        let fit2_s = t.elapsed().as_secs_f64();
        let err2 = q2.quantization_error(&x[..20000 * d], 20000).unwrap();
        println!(
            "fit d={d} m={m} k=256 n={n} (65536-row sample): 25 iters {fit_s:.2} s (mse {err:.4}); \
             default tol {fit2_s:.2} s (mse {err2:.4})"
        );
    }
}
