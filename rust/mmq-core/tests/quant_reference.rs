//! Reference tests of the quantizers against naive f64 computations, plus
//! reproducibility, persistence and bad-input checks.
use mmq_core::quant::{kmeans, KMeansConfig, Quantizer, QuantizerKind, QuantizerParams};
use mmq_core::MmqError;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Clustered data: `n` rows around 20 random centers plus noise, shifted away
/// from the origin.
fn data(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let centers: Vec<f32> = (0..20 * d).map(|_| rng.random_range(-2.0..2.0)).collect();
    let mut x = Vec::with_capacity(n * d);
    for _ in 0..n {
        let c = rng.random_range(0..20);
        for t in 0..d {
            x.push(3.0 + centers[c * d + t] + rng.random_range(-0.5f32..0.5));
        }
    }
    x
}

fn sq_dist_f64(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum()
}

/// Checks every code against the exact f64 argmin; a different code is only
/// accepted when its distance ties the best one within f32 rounding.
fn check_codes_exact(q: &Quantizer, x: &[f32], n: usize, codes: &[u16]) -> usize {
    let (d, m, k) = (q.d(), q.m(), q.k());
    let mut near_ties = 0;
    for i in 0..n {
        let row = &x[i * d..(i + 1) * d];
        for (j, dims) in q.subspaces().iter().enumerate() {
            let s = dims.len();
            let sub: Vec<f32> = dims.iter().map(|&t| row[t as usize]).collect();
            let cents = q.sub_centroids(j);
            let dist = |c: usize| sq_dist_f64(&sub, &cents[c * s..(c + 1) * s]);
            let (best_c, best) = (0..k)
                .map(|c| (c, dist(c)))
                .fold((0, f64::INFINITY), |b, x| if x.1 < b.1 { x } else { b });
            let got = codes[i * m + j] as usize;
            if got != best_c {
                let gap = dist(got) - best;
                let scale = sub.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() + best;
                assert!(
                    gap <= 1e-5 * scale,
                    "row {i} sub {j}: code {got} (dist {}) but exact argmin {best_c} (dist {best})",
                    dist(got)
                );
                near_ties += 1;
            }
        }
    }
    near_ties
}

#[test]
fn encode_matches_bruteforce_pq_rspq() {
    let (n, d) = (1500, 24);
    let x = data(n, d, 1);
    let cases: Vec<Quantizer> = vec![
        Quantizer::pq(d, 4, 64, 3).unwrap(),
        Quantizer::pq(d, 5, 32, 3).unwrap(), // 24 = 4 * 5 + 4: last block longer
        Quantizer::rspq(d, 6, Some(7), 40, 3).unwrap(), // overlapping subsets
        Quantizer::pq(d, 3, 300, 3).unwrap(), // k > 256: u16 only
    ];
    for mut q in cases {
        q.set_max_iter(8);
        q.fit(&x, n).unwrap();
        let codes = q.encode(&x, n).unwrap();
        let ties = check_codes_exact(&q, &x, n, &codes);
        assert!(ties <= n * q.m() / 1000, "too many near-ties: {ties}");
        if q.k() <= 256 {
            let mut c8 = vec![0u8; n * q.m()];
            q.encode_u8(&x, n, &mut c8).unwrap();
            assert!(c8.iter().zip(&codes).all(|(&a, &b)| a as u16 == b));
        }
    }
}

#[test]
fn encode_with_more_centroids_than_a_gemm_chunk() {
    // k = 1100 > 1024 centroids per GEMM call: exercises the chunk merge.
    let (n, d) = (1200, 6);
    let x = data(n, d, 11);
    let mut q = Quantizer::pq(d, 2, 1100, 5).unwrap();
    q.set_max_iter(2);
    q.fit(&x, n).unwrap();
    let codes = q.encode(&x, n).unwrap();
    check_codes_exact(&q, &x, n, &codes);
    assert!(codes.iter().any(|&c| c >= 1024));
}

#[test]
fn pq_blocks_and_defaults() {
    let q = Quantizer::pq(10, 3, 16, 0).unwrap();
    assert_eq!(
        q.subspaces(),
        &[vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8, 9]]
    );
    assert_eq!(q.s(), 4);
    assert_eq!(q.kind(), QuantizerKind::Pq);
    let r = Quantizer::rspq(100, 8, None, 16, 0).unwrap();
    assert_eq!(r.s(), 12);
    for dims in r.subspaces() {
        assert_eq!(dims.len(), 12);
        assert!(dims.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
        assert!(dims.iter().all(|&t| t < 100));
    }
    // Independent draws per sub-quantizer, reproducible from the seed.
    assert_ne!(r.subspaces()[0], r.subspaces()[1]);
    let r2 = Quantizer::rspq(100, 8, None, 16, 0).unwrap();
    assert_eq!(r.subspaces(), r2.subspaces());
    let r3 = Quantizer::rspq(100, 8, None, 16, 1).unwrap();
    assert_ne!(r.subspaces(), r3.subspaces());
}

#[test]
fn error_decreases_with_m() {
    // Correlated data without cluster structure.
    let (n, d) = (2000, 32);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
    let basis: Vec<f32> = (0..4 * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut x = Vec::with_capacity(n * d);
    for _ in 0..n {
        let coef: [f32; 4] = std::array::from_fn(|_| rng.random_range(-1.0..1.0));
        for t in 0..d {
            let low: f32 = (0..4).map(|r| coef[r] * basis[r * d + t]).sum();
            x.push(low + 0.3 * rng.random_range(-1.0f32..1.0));
        }
    }
    let mut prev = f64::INFINITY;
    for m in [1, 2, 4, 8, 16] {
        let mut q = Quantizer::pq(d, m, 16, 9).unwrap();
        q.fit(&x, n).unwrap();
        let err = q.quantization_error(&x, n).unwrap();
        assert!(err < prev, "m = {m}: error {err} not below {prev}");
        prev = err;
    }
}

#[test]
fn quantization_error_is_mean_row_squared_error() {
    let (n, d) = (400, 12);
    let x = data(n, d, 4);
    let mut q = Quantizer::rspq(d, 3, Some(5), 8, 1).unwrap();
    q.fit(&x, n).unwrap();
    let codes = q.encode(&x, n).unwrap();
    let rec = q.decode(&codes, n).unwrap();
    let want: f64 = (0..n)
        .map(|i| sq_dist_f64(&x[i * d..(i + 1) * d], &rec[i * d..(i + 1) * d]))
        .sum::<f64>()
        / n as f64;
    let got = q.quantization_error(&x, n).unwrap();
    assert!(
        (got - want).abs() <= 1e-9 * want.max(1.0),
        "{got} vs {want}"
    );
}

#[test]
fn decode_averages_overlaps_and_fills_uncovered_with_mean() {
    let (n, d) = (300, 6);
    let x = data(n, d, 5);
    // dim 1 covered twice, dim 5 never.
    let subspaces = vec![vec![0, 1], vec![1, 2, 3], vec![4]];
    let mut q = Quantizer::with_subspaces(d, 4, subspaces, 2).unwrap();
    q.fit(&x, n).unwrap();
    let mean5 = x.chunks(d).map(|r| r[5] as f64).sum::<f64>() / n as f64;
    assert!((q.mean()[5] as f64 - mean5).abs() < 1e-4);
    let codes: Vec<u8> = vec![1, 2, 3];
    let rec = q.decode(&codes, 1).unwrap();
    let c0 = &q.sub_centroids(0)[2..4]; // centroid 1 of sub 0 (s = 2)
    let c1 = &q.sub_centroids(1)[6..9]; // centroid 2 of sub 1 (s = 3)
    let c2 = &q.sub_centroids(2)[3..4]; // centroid 3 of sub 2 (s = 1)
    let want = [
        c0[0],
        (c0[1] + c1[0]) / 2.0,
        c1[1],
        c1[2],
        c2[0],
        q.mean()[5],
    ];
    for (a, b) in rec.iter().zip(&want) {
        assert!((a - b).abs() < 1e-6, "{rec:?} vs {want:?}");
    }
    // u16 codes decode the same.
    let rec16 = q.decode(&[1u16, 2, 3], 1).unwrap();
    assert_eq!(rec, rec16);
}

#[test]
fn token_ids_are_disjoint_per_subquantizer() {
    let q = {
        let x = data(100, 8, 6);
        let mut q = Quantizer::pq(8, 4, 10, 0).unwrap();
        q.fit(&x, 100).unwrap();
        q
    };
    let ids = q.token_ids(&[0u8, 9, 3, 1, 2, 2, 2, 2]).unwrap();
    assert_eq!(ids, vec![0, 19, 23, 31, 2, 12, 22, 32]);
    assert_eq!(q.num_tokens(), 40);
    assert!(q.token_ids(&[0u8, 1, 2]).is_err()); // not a multiple of m
    assert!(q.token_ids(&[0u16, 1, 10, 2]).is_err()); // code 10 >= k
}

#[test]
fn with_subspaces_contiguous_equals_pq() {
    let (n, d) = (1200, 20);
    let x = data(n, d, 7);
    let mut pq = Quantizer::pq(d, 3, 32, 42).unwrap();
    let blocks = pq.subspaces().to_vec();
    let mut rs = Quantizer::with_subspaces(d, 32, blocks, 42).unwrap();
    assert_eq!(rs.kind(), QuantizerKind::Rspq);
    pq.fit(&x, n).unwrap();
    rs.fit(&x, n).unwrap();
    assert_eq!(pq.centroids_flat(), rs.centroids_flat());
    assert_eq!(pq.encode(&x, n).unwrap(), rs.encode(&x, n).unwrap());
}

#[test]
fn same_seed_same_result_for_any_thread_count() {
    let (n, d) = (3000, 16);
    let x = data(n, d, 8);
    let run = |threads: usize, kind: u8| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut q = match kind {
                0 => Quantizer::pq(d, 4, 32, 5).unwrap(),
                1 => Quantizer::pq(d, 1, 32, 5).unwrap(), // m < threads: inner parallel k-means
                _ => Quantizer::rspq(d, 3, Some(6), 32, 5).unwrap(),
            };
            // Force sampling so that the sample draw is covered too.
            q.set_max_points_per_centroid(40).unwrap();
            q.fit(&x, n).unwrap();
            let codes = q.encode(&x, n).unwrap();
            let km = kmeans(&x, n, d, &KMeansConfig::new(20).with_seed(3)).unwrap();
            (q.centroids_flat(), q.mean().to_vec(), codes, km.centroids)
        })
    };
    for kind in 0..3 {
        let one = run(1, kind);
        let two = run(2, kind);
        let three = run(3, kind);
        assert!(one == two, "kind {kind}: 1 vs 2 threads differ");
        assert!(one == three, "kind {kind}: 1 vs 3 threads differ");
    }
}

#[test]
fn from_parts_round_trip() {
    let (n, d) = (800, 10);
    let x = data(n, d, 9);
    let mut q = Quantizer::rspq(d, 4, Some(3), 16, 77).unwrap();
    q.set_max_iter(7);
    q.fit(&x, n).unwrap();
    let json = serde_json::to_string(q.params()).unwrap();
    assert!(json.contains("\"kind\":\"rspq\""), "{json}");
    let params: QuantizerParams = serde_json::from_str(&json).unwrap();
    let q2 = Quantizer::from_parts(params.clone(), q.centroids_flat(), q.mean().to_vec()).unwrap();
    assert_eq!(q2.params(), q.params());
    assert_eq!(q2.max_iter(), 7);
    let c1 = q.encode(&x, n).unwrap();
    let c2 = q2.encode(&x, n).unwrap();
    assert_eq!(c1, c2);
    assert_eq!(q.decode(&c1, n).unwrap(), q2.decode(&c2, n).unwrap());

    // Bad parts.
    let cf = q.centroids_flat();
    let mean = q.mean().to_vec();
    assert!(Quantizer::from_parts(params.clone(), cf[1..].to_vec(), mean.clone()).is_err());
    assert!(Quantizer::from_parts(params.clone(), cf.clone(), mean[1..].to_vec()).is_err());
    let mut nan = cf.clone();
    nan[3] = f32::NAN;
    assert!(Quantizer::from_parts(params.clone(), nan, mean.clone()).is_err());
    let mut p = params.clone();
    p.m = 5;
    assert!(Quantizer::from_parts(p, cf.clone(), mean.clone()).is_err());
    let mut p = params.clone();
    p.subspaces[0][0] = 10;
    assert!(Quantizer::from_parts(p, cf.clone(), mean.clone()).is_err());
    let mut p = params.clone();
    p.kind = QuantizerKind::Pq; // subspaces are not PQ blocks
    assert!(Quantizer::from_parts(p, cf.clone(), mean.clone()).is_err());
    let mut p = params.clone();
    p.k = 1;
    assert!(Quantizer::from_parts(p, cf.clone(), mean.clone()).is_err());
    // Missing optional fields take their defaults.
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v.as_object_mut().unwrap().remove("tol");
    v.as_object_mut().unwrap().remove("max_points_per_centroid");
    let p: QuantizerParams = serde_json::from_value(v).unwrap();
    assert_eq!(p.max_points_per_centroid, 256);
}

#[test]
fn progress_callback_and_interrupt() {
    let (n, d) = (500, 12);
    let x = data(n, d, 10);
    let seen = std::sync::Mutex::new(Vec::new());
    let mut q = Quantizer::pq(d, 4, 8, 0).unwrap();
    q.fit_with_progress(&x, n, &|done| {
        seen.lock().unwrap().push(done);
        true
    })
    .unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3, 4]);

    let mut q = Quantizer::pq(d, 4, 8, 0).unwrap();
    let err = q.fit_with_progress(&x, n, &|done| done < 2).unwrap_err();
    assert!(matches!(err, MmqError::Interrupted), "{err}");
    assert!(!q.is_fitted());
}

fn expect_err<T: std::fmt::Debug>(r: mmq_core::Result<T>, needle: &str) {
    match r {
        Ok(v) => panic!("expected an error mentioning {needle:?}, got Ok({v:?})"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(needle),
                "error {msg:?} does not mention {needle:?}"
            );
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    // Constructors.
    expect_err(Quantizer::pq(8, 9, 16, 0), "m must be <= d = 8, got m = 9");
    expect_err(Quantizer::pq(8, 0, 16, 0), "got 0");
    expect_err(Quantizer::pq(0, 1, 16, 0), "got 0");
    expect_err(Quantizer::pq(8, 2, 1, 0), "got 1");
    expect_err(Quantizer::pq(8, 2, 65537, 0), "got 65537");
    assert!(Quantizer::pq(8, 2, 65536, 0).is_ok());
    expect_err(Quantizer::rspq(8, 2, Some(9), 16, 0), "got 9");
    expect_err(Quantizer::rspq(8, 2, Some(0), 16, 0), "got 0");
    expect_err(Quantizer::rspq(8, 9, None, 16, 0), "m = 9");
    expect_err(Quantizer::with_subspaces(8, 16, vec![], 0), "got 0");
    expect_err(
        Quantizer::with_subspaces(8, 16, vec![vec![0], vec![]], 0),
        "subspace 1 is empty",
    );
    expect_err(
        Quantizer::with_subspaces(8, 16, vec![vec![0, 8]], 0),
        "dim 8",
    );
    expect_err(
        Quantizer::with_subspaces(8, 16, vec![vec![2, 2]], 0),
        "twice",
    );
    let mut q = Quantizer::pq(8, 2, 16, 0).unwrap();
    expect_err(q.set_tol(f64::NAN), "tol");
    expect_err(q.set_max_points_per_centroid(0), "got 0");

    // Fit.
    let (n, d) = (100, 8);
    let x = data(n, d, 12);
    expect_err(q.fit(&[], 0), "empty input");
    expect_err(
        q.fit(&x[..n * d - 1], n),
        "expected 100 rows x 8 dims = 800 values, got 799",
    );
    expect_err(q.fit(&x[..n * 4], n), "expected dimension 8, got 4");
    let mut big_k = Quantizer::pq(d, 2, 101, 0).unwrap();
    expect_err(
        big_k.fit(&x, n),
        "k = 101 centroids need at least 101 training rows, got 100",
    );
    let mut bad = x.clone();
    bad[17 * d + 3] = f32::NAN;
    expect_err(q.fit(&bad, n), "row 17 has NaN or inf at dim 3");
    bad[17 * d + 3] = 1.0;
    bad[40 * d + 7] = f32::INFINITY;
    expect_err(q.fit(&bad, n), "row 40 has NaN or inf at dim 7");

    // Not fitted.
    let mut out8 = vec![0u8; n * 2];
    expect_err(q.encode_u8(&x, n, &mut out8), "fit");
    expect_err(q.decode(&[0u8, 0], 1), "fit");
    q.fit(&x, n).unwrap();

    // Encode.
    let wrong_dim = data(10, 4, 1);
    expect_err(
        q.encode_u8(&wrong_dim, 10, &mut out8[..20]),
        "expected dimension 8, got 4",
    );
    expect_err(
        q.encode(&x, n - 1),
        "expected 99 rows x 8 dims = 792 values, got 800",
    );
    expect_err(q.encode_u8(&x, n, &mut out8[..10]), "output buffer");
    expect_err(q.encode(&bad, n), "row 40 has NaN or inf at dim 7");
    // A bad value in a late block is still reported (first bad row).
    let mut late = data(1000, d, 13);
    late[900 * d + 1] = f32::NEG_INFINITY;
    late[700 * d + 5] = f32::NAN;
    expect_err(q.encode(&late, 1000), "row 700 has NaN or inf at dim 5");
    // An empty batch is not an error for encode/decode, but is for the error.
    assert!(q.encode(&[], 0).unwrap().is_empty());
    assert!(q.decode(&[] as &[u8], 0).unwrap().is_empty());
    expect_err(q.encode(&[1.0; 8], 0), "empty input");
    expect_err(q.quantization_error(&[], 0), "empty input");
    let q300 = {
        let x = data(400, 4, 1);
        let mut q = Quantizer::pq(4, 2, 300, 0).unwrap();
        q.set_max_iter(1);
        q.fit(&x, 400).unwrap();
        q
    };
    expect_err(
        q300.encode_u8(&data(1, 4, 2), 1, &mut [0u8; 2]),
        "encode_u8 needs k <= 256",
    );

    // Decode.
    expect_err(q.decode(&[0u8, 16], 1), "code 16 at row 0, sub-quantizer 1");
    expect_err(
        q.decode(&[0u16, 1, 2], 1),
        "expected n * m = 1 * 2 = 2 codes, got 3",
    );
    expect_err(q.decode(&[0u16, 1], 2), "expected n * m");
    let mut small = vec![0f32; 3];
    expect_err(q.decode_into(&[0u8, 1], 1, &mut small), "output buffer");

    // k-means.
    expect_err(kmeans(&x, n, d, &KMeansConfig::new(0)), "k = 0");
    expect_err(kmeans(&x, n, d, &KMeansConfig::new(101)), "got 100");
    expect_err(
        kmeans(&bad, n, d, &KMeansConfig::new(4)),
        "row 40 has NaN or inf at dim 7",
    );
}

#[test]
fn encode_is_accurate_far_from_origin() {
    // Rows around 1000 with unit-scale structure: the plain expansion
    // ||c||² - 2 x·c would lose the distance gaps in f32 rounding.
    let (n, d) = (1500, 16);
    let x: Vec<f32> = data(n, d, 14).iter().map(|v| v + 1000.0).collect();
    let mut q = Quantizer::pq(d, 2, 64, 1).unwrap();
    q.set_max_iter(5);
    q.fit(&x, n).unwrap();
    let codes = q.encode(&x, n).unwrap();
    let (m, k) = (q.m(), q.k());
    let mut wrong = 0;
    for i in 0..n {
        for (j, dims) in q.subspaces().iter().enumerate() {
            let s = dims.len();
            let sub: Vec<f32> = dims.iter().map(|&t| x[i * d + t as usize]).collect();
            let cents = q.sub_centroids(j);
            let dist = |c: usize| sq_dist_f64(&sub, &cents[c * s..(c + 1) * s]);
            let best = (0..k).map(dist).fold(f64::INFINITY, f64::min);
            if dist(codes[i * m + j] as usize) > best * (1.0 + 1e-3) + 1e-3 {
                wrong += 1;
            }
        }
    }
    assert_eq!(wrong, 0);
}

#[test]
fn duplicate_rows_leave_no_broken_centroids() {
    // 5 distinct rows, k = 16: empty clusters must be repaired, not NaN.
    let d = 4;
    let x: Vec<f32> = (0..200).flat_map(|i| vec![(i % 5) as f32; d]).collect();
    let mut q = Quantizer::pq(d, 2, 16, 0).unwrap();
    q.fit(&x, 200).unwrap();
    assert!(q.centroids_flat().iter().all(|v| v.is_finite()));
    let err = q.quantization_error(&x, 200).unwrap();
    assert!(err < 1e-6, "error {err}");
}

/// A quantizer with a transform equals the plain quantizer fitted and used on the
/// transformed vectors (computed here independently, in f64); the transform survives a
/// save/load; and changing it after fitting is refused.
#[test]
fn transform_equals_plain_quantizer_on_transformed_vectors() {
    use mmq_core::io::quant::{quantizer_from_bytes, quantizer_to_bytes};
    use mmq_core::quant::Transform;
    let (n, d) = (1500, 12);
    let mut x = data(n, d, 21);
    // Signs and a zero row exercise sign(x)·sqrt(|x|) and the L2 of a zero vector.
    for (i, v) in x.iter_mut().enumerate() {
        if i % 7 == 0 {
            *v = -*v;
        }
    }
    x[..d].iter_mut().for_each(|v| *v = 0.0);
    let reference = |t: Transform, row: &[f32]| -> Vec<f32> {
        match t {
            Transform::None => row.to_vec(),
            Transform::Sqrt => row
                .iter()
                .map(|&v| ((v as f64).abs().sqrt() * (v as f64).signum()) as f32)
                .collect(),
            Transform::L2 => {
                let nrm = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                row.iter()
                    .map(|&v| {
                        if nrm > 0.0 {
                            (v as f64 / nrm) as f32
                        } else {
                            0.0
                        }
                    })
                    .collect()
            }
        }
    };
    for t in [Transform::Sqrt, Transform::L2] {
        let xt: Vec<f32> = x.chunks(d).flat_map(|r| reference(t, r)).collect();
        // The transformed rows as the quantizer computes them (f32).
        let mut applied = x.clone();
        applied.chunks_mut(d).for_each(|r| t.apply_row(r));
        for (a, b) in xt.iter().zip(&applied) {
            assert!(
                (a - b).abs() <= 1e-6 * a.abs().max(1.0),
                "{t:?}: {a} vs {b}"
            );
        }
        let mut q = Quantizer::rspq(d, 4, Some(5), 16, 3).unwrap();
        q.set_transform(t).unwrap();
        q.fit(&x, n).unwrap();
        let mut plain = Quantizer::rspq(d, 4, Some(5), 16, 3).unwrap();
        plain.fit(&applied, n).unwrap();
        assert_eq!(q.centroids_flat(), plain.centroids_flat(), "{t:?}");
        let codes = q.encode(&x, n).unwrap();
        assert_eq!(codes, plain.encode(&applied, n).unwrap(), "{t:?}");
        let e1 = q.quantization_error(&x, n).unwrap();
        let e2 = plain.quantization_error(&applied, n).unwrap();
        assert!((e1 - e2).abs() <= 1e-9 * e2.max(1.0), "{t:?}: {e1} vs {e2}");
        let back = quantizer_from_bytes(&quantizer_to_bytes(&q).unwrap(), "mem").unwrap();
        assert_eq!(back.transform(), t);
        assert_eq!(back.encode(&x, n).unwrap(), codes);
        assert!(q.set_transform(Transform::None).is_err());
        q.set_transform(t).unwrap();
    }
    // Old files (no "transform" key) read as no transform.
    let q = {
        let mut q = Quantizer::pq(d, 3, 8, 1).unwrap();
        q.fit(&x, n).unwrap();
        q
    };
    let mut v = serde_json::to_value(q.params()).unwrap();
    v.as_object_mut().unwrap().remove("transform");
    let p: QuantizerParams = serde_json::from_value(v).unwrap();
    assert_eq!(p.transform, Transform::None);
    assert!(Transform::parse(Some("cube")).is_err());
    assert_eq!(Transform::parse(None).unwrap(), Transform::None);
}
