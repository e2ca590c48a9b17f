"""PQ / RSPQ against a NumPy reference."""
import pickle

import numpy as np
import polars as pl
import pytest

import mmq


@pytest.fixture(scope="module")
def x():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 48)).astype(np.float32)
    return (centers[rng.integers(0, 20, 3000)] + 0.3 * rng.normal(size=(3000, 48))).astype(np.float32)


def ref_encode(q, x):
    """Exact nearest centroid per sub-quantizer, in float64."""
    codes = np.empty((len(x), q.m), dtype=np.int64)
    dist_gap = np.empty((len(x), q.m))
    for j, dims in enumerate(q.subspaces):
        c = q.centroids(j).astype(np.float64)
        xs = x[:, dims].astype(np.float64)
        d = ((xs[:, None, :] - c[None, :, :]) ** 2).sum(-1)
        codes[:, j] = d.argmin(1)
        part = np.partition(d, 1, axis=1)
        dist_gap[:, j] = part[:, 1] - part[:, 0]
    return codes, dist_gap


@pytest.mark.parametrize("make", [lambda: mmq.PQ(m=8, k=32), lambda: mmq.PQ(m=5, k=16),
                                  lambda: mmq.RSPQ(m=8, s=10, k=32)])
def test_encode_is_exact_argmin(x, make):
    q = make().fit(x)
    codes = q.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == (len(x), q.m)
    ref, gap = ref_encode(q, x)
    clear = gap > 1e-3  # ignore near-ties (float32 vs float64 rounding)
    assert (codes[clear] == ref[clear]).all()


def test_pq_blocks_cover_d_with_remainder(x):
    q = mmq.PQ(m=5, k=8).fit(x)
    sub = q.subspaces
    assert [len(s) for s in sub] == [9, 9, 9, 9, 12]
    assert sorted(sum(sub, [])) == list(range(48))


def test_error_falls_as_m_grows(x):
    g = np.random.default_rng(1).normal(size=(3000, 48)).astype(np.float32)
    errs = [mmq.PQ(m=m, k=32, seed=1).fit(g).quantization_error(g) for m in (2, 4, 8, 16)]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    # quantization_error is the mean squared reconstruction error per row.
    q = mmq.PQ(m=8, k=32).fit(x)
    rec = q.decode(q.encode(x))
    assert q.quantization_error(x) == pytest.approx(((x - rec) ** 2).sum(1).mean(), rel=1e-4)


def test_rspq_with_pq_blocks_equals_pq(x):
    pq = mmq.PQ(m=6, k=16, seed=3).fit(x)
    rs = mmq.RSPQ(m=6, k=16, seed=3, subspaces=pq.subspaces).fit(x)
    for j in range(6):
        np.testing.assert_array_equal(pq.centroids(j), rs.centroids(j))
    np.testing.assert_array_equal(pq.encode(x), rs.encode(x))


def test_rspq_subsets_random_overlapping_and_stored(x, tmp_path):
    q = mmq.RSPQ(m=12, s=8, k=16, seed=5).fit(x)
    sub = q.subspaces
    assert all(len(s) == 8 and len(set(s)) == 8 for s in sub)
    flat = sum(sub, [])
    assert len(set(flat)) < len(flat)  # 96 draws from 48 dims must overlap
    q.save(tmp_path / "q.mmq")
    again = mmq.load(tmp_path / "q.mmq")
    assert isinstance(again, mmq.RSPQ) and again.subspaces == sub
    np.testing.assert_array_equal(again.encode(x), q.encode(x))
    pick = pickle.loads(pickle.dumps(q))
    np.testing.assert_array_equal(pick.encode(x), q.encode(x))


def test_same_seed_same_codebooks(x):
    a = mmq.RSPQ(m=4, k=16, seed=9).fit(x)
    b = mmq.RSPQ(m=4, k=16, seed=9).fit(x)
    for j in range(4):
        np.testing.assert_array_equal(a.centroids(j), b.centroids(j))


def test_tokens_and_k_above_256(x):
    q = mmq.PQ(m=4, k=8).fit(x)
    codes = q.encode(x[:5])
    np.testing.assert_array_equal(q.tokens(codes), codes.astype(np.uint32) + 8 * np.arange(4, dtype=np.uint32))
    big = mmq.PQ(m=2, k=300, max_iter=3).fit(x)
    assert big.encode(x[:3]).dtype == np.uint16


def test_inputs_numpy_polars(x):
    q = mmq.PQ(m=4, k=8).fit(x)
    want = q.encode(x[:50])
    arr = pl.Series("v", x[:50], dtype=pl.Array(pl.Float32, 48))
    np.testing.assert_array_equal(q.encode(arr), want)
    lst = pl.Series("v", [list(r) for r in x[:50]], dtype=pl.List(pl.Float32))
    np.testing.assert_array_equal(q.encode(lst), want)
    np.testing.assert_array_equal(q.encode(x[:50].astype(np.float64)), want)
    np.testing.assert_array_equal(q.encode(np.asfortranarray(x[:50])), want)


def test_bad_input(x):
    q = mmq.PQ(m=4, k=8).fit(x)
    bad = x[:10].copy()
    bad[7, 3] = np.nan
    with pytest.raises(mmq.InvalidInputError, match="row 7"):
        q.encode(bad)
    with pytest.raises(mmq.InvalidInputError, match="row 7"):
        mmq.PQ(m=4, k=8).fit(bad)
    with pytest.raises(mmq.InvalidInputError, match="48"):
        q.encode(x[:5, :40])
    with pytest.raises(mmq.InvalidParameterError, match="m"):
        mmq.PQ(m=100, k=8).fit(x)
    with pytest.raises(mmq.MmqError, match="k"):
        mmq.PQ(m=2, k=64).fit(x[:10])
    with pytest.raises(mmq.InvalidInputError, match="empty"):
        mmq.PQ(m=2, k=4).fit(x[:0])
    with pytest.raises(mmq.InvalidInputError, match="range"):
        q.decode(np.full((2, 4), 300))
    with pytest.raises(mmq.MmqError, match="range"):
        q.decode(np.full((2, 4), 9))
    with pytest.raises(mmq.InvalidInputError, match="dtype"):
        q.encode(np.array([["a"] * 48]))
    with pytest.raises(mmq.InvalidInputError, match="null"):
        q.encode(pl.Series("v", [list(x[0]), None], dtype=pl.List(pl.Float32)))
    with pytest.raises(mmq.NotFittedError):
        mmq.PQ(m=2).encode(x)


@pytest.mark.parametrize("transform", ["sqrt", "l2"])
@pytest.mark.parametrize("make", [mmq.PQ, lambda **kw: mmq.RSPQ(s=10, **kw)])
def test_transform_codes_are_argmin_of_transformed_vectors(x, make, transform, tmp_path):
    """With a transform the codes are the exact nearest centroids of the transformed
    vectors (transformed here with NumPy, independently), and the error is measured there."""
    xs = x.copy()
    xs[::5] *= -1.0            # signs for the signed square root
    xs[0] = 0.0                # a zero vector stays zero under l2
    q = make(m=8, k=32, transform=transform).fit(xs)
    if transform == "sqrt":
        xt = np.sign(xs) * np.sqrt(np.abs(xs.astype(np.float64)))
    else:
        nrm = np.linalg.norm(xs.astype(np.float64), axis=1, keepdims=True)
        xt = xs / np.where(nrm > 0, nrm, 1.0)
    codes = q.encode(xs)
    ref, gap = ref_encode(q, xt)
    clear = gap > 1e-4 * (1 if transform == "sqrt" else 0.01)
    assert clear.mean() > 0.95 and (codes[clear] == ref[clear]).all()
    rec = q.decode(codes).astype(np.float64)
    assert q.quantization_error(xs) == pytest.approx(((xt - rec) ** 2).sum(1).mean(), rel=1e-4)
    # The transform is part of the quantizer: repr, save/load and pickle keep it.
    assert f"transform={transform!r}" in repr(q)
    q.save(tmp_path / "q.mmq")
    for back in (mmq.load(tmp_path / "q.mmq"), pickle.loads(pickle.dumps(q))):
        assert back.transform == transform
        np.testing.assert_array_equal(back.encode(xs), codes)
    # It differs from the untransformed quantizer (the test would pass vacuously otherwise).
    assert (make(m=8, k=32).fit(xs).encode(xs) != codes).any()


def test_transform_bad_value():
    with pytest.raises(mmq.InvalidParameterError, match="transform must be one of"):
        mmq.PQ(m=4, transform="log")
