"""Fitting from a LazyFrame (e.g. ``pl.scan_parquet``) in batches: same models as the
eager fit, a bounded quantizer sample, errors that name the column."""
import json

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import mmq
from mmq import _stream

MODES = ["batches", "slices"]  # LazyFrame.collect_batches, or slice pushdown (Polars 1.x)


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    from mmq.datasets import make_topics

    df = make_topics(n_rows=3000, dense_dim=16, seed=5)  # 10% null images
    path = tmp_path_factory.mktemp("stream") / "topics.parquet"
    df.write_parquet(path, row_group_size=700)
    return df, path


@pytest.fixture(params=MODES)
def batches(request, monkeypatch):
    """Small batches (so every fit spans several), read either way."""
    monkeypatch.setattr(_stream, "MODE", request.param)
    monkeypatch.setattr(_stream, "BATCH_ROWS", 450)
    return request.param


def params(**kw):
    p = dict(dim=8, epoch=5, lr=0.3, word_ngrams=2, threads=1, seed=0, progress=False)
    p.update(kw)
    return p


def test_iter_batches_covers_all_rows_in_order(parquet, batches):
    df, path = parquet
    parts = list(_stream.iter_batches(pl.scan_parquet(path).select("text")))
    assert len(parts) >= 3 and all(b.height <= 450 for b in parts)
    assert pl.concat(parts)["text"].to_list() == df["text"].to_list()


def test_text_only_lazy_equals_eager(parquet, batches):
    df, path = parquet
    eager = mmq.Classifier(**params()).fit(df)
    lazy = mmq.Classifier(**params()).fit(pl.scan_parquet(path))
    assert lazy.labels == eager.labels
    assert_frame_equal(lazy.predict_proba(df), eager.predict_proba(df))


@pytest.mark.parametrize("quant", [lambda: mmq.PQ(m=4, k=16), lambda: mmq.RSPQ(m=4, k=16)], ids=["PQ", "RSPQ"])
def test_discrete_lazy_equals_eager(parquet, batches, quant):
    df, path = parquet
    eager = mmq.Classifier(**params(alpha=1.5), dense={"image": quant()}).fit(df)
    lazy = mmq.Classifier(**params(alpha=1.5), dense={"image": quant()}).fit(pl.scan_parquet(path))
    # Fewer present rows (~2,700) than the sample cap (256 * 16): the quantizer is the
    # eager one, and so are the codes and the model.
    for j in range(4):
        np.testing.assert_array_equal(lazy.dense["image"].centroids(j), eager.dense["image"].centroids(j))
    assert_frame_equal(lazy.predict_proba(df), eager.predict_proba(df))


def test_discrete_lazy_with_fitted_quantizer_and_codes(parquet, batches):
    df, path = parquet
    q = mmq.PQ(m=4, k=8).fit(df["image"].drop_nulls())
    eager = mmq.Classifier(**params(), dense={"image": q}).fit(df)
    lazy = mmq.Classifier(**params(), dense={"image": q}).fit(pl.scan_parquet(path))
    assert_frame_equal(lazy.predict_proba(df), eager.predict_proba(df))
    # A codes column (with its fitted quantizer) streams too.
    codes = pl.scan_parquet(path).with_columns(pl.col("image").mmq.encode(q))
    from_codes = mmq.Classifier(**params(), dense={"image": q}).fit(codes)
    assert_frame_equal(from_codes.predict_proba(df), eager.predict_proba(df))


def test_continuous_fusion_collects(parquet):
    df, path = parquet
    eager = mmq.Classifier(**params(), fusion="gated", dense=["image"]).fit(df)
    lazy = mmq.Classifier(**params(), fusion="gated", dense=["image"]).fit(pl.scan_parquet(path))
    assert_frame_equal(lazy.predict_proba(df), eager.predict_proba(df))


def test_lazy_fit_reads_only_needed_columns(parquet, batches):
    """A column the model does not use is never computed (this one would fail)."""
    df, path = parquet
    lf = pl.scan_parquet(path).with_columns(pl.col("text").str.to_integer().alias("broken"))
    with pytest.raises(Exception):
        lf.collect()
    mmq.Classifier(**params(epoch=1)).fit(lf)
    mmq.Classifier(**params(epoch=1), dense={"image": mmq.PQ(m=4, k=8)}).fit(lf)


@pytest.mark.parametrize("kind", [mmq.PQ, mmq.RSPQ])
def test_quantizer_lazy_equals_eager(parquet, batches, kind):
    df, path = parquet
    x = df["image"].drop_nulls()  # ~2,700 rows, under the cap (256 * 16)
    eager = kind(m=4, k=16).fit(x)
    lf = pl.scan_parquet(path).filter(pl.col("image").is_not_null())
    lazy = kind(m=4, k=16).fit(lf, column="image")
    alone = kind(m=4, k=16).fit(lf.select("image"))  # the only column: no name needed
    for q in (lazy, alone):
        assert q.subspaces == eager.subspaces
        for j in range(4):
            np.testing.assert_array_equal(q.centroids(j), eager.centroids(j))
        np.testing.assert_array_equal(q.encode(x), eager.encode(x))


def test_sample_of_a_frame_larger_than_the_cap(monkeypatch):
    rng = np.random.default_rng(0)
    n, d, cap = 6000, 8, 512
    x = rng.normal(size=(n, d)).astype(np.float32)
    s = pl.Series("v", x, dtype=pl.Array(pl.Float32, d))
    null = rng.random(n) < 0.2
    lf = pl.DataFrame({"v": s}).with_columns(pl.when(pl.Series(~null)).then(pl.col("v")).alias("v")).lazy()

    def sample(batch_rows, seed=0):
        monkeypatch.setattr(_stream, "BATCH_ROWS", batch_rows)
        return _stream.sample_matrix(lf, "v", cap, seed, return_rows=True)

    got, rows = sample(700)
    assert got.shape == (cap, d) and got.dtype == np.float32
    assert (np.diff(rows) > 0).all() and not null[rows].any()  # in row order, present rows only
    np.testing.assert_array_equal(got, x[rows])
    assert rows[0] < n // 10 and rows[-1] > n - n // 10  # drawn over the whole frame
    # The same sample whatever the batch size; another seed, another sample.
    np.testing.assert_array_equal(sample(2500)[1], rows)
    assert not np.array_equal(sample(700, seed=1)[1], rows)

    # A quantizer fitted on the LazyFrame trains on exactly that sample
    # (cap = max_points_per_centroid * k).
    q = mmq.PQ(m=2, k=8, max_points_per_centroid=64)
    with pytest.raises(mmq.InvalidInputError, match=r"column 'v': row \d+ is null"):
        q.fit(lf)
    monkeypatch.setattr(_stream, "BATCH_ROWS", 700)
    full = lf.filter(pl.col("v").is_not_null())
    q.fit(full)
    ref = mmq.PQ(m=2, k=8, max_points_per_centroid=64).fit(_stream.sample_matrix(full, "v", cap, 0))
    np.testing.assert_array_equal(q.centroids(0), ref.centroids(0))
    # A classifier's quantizer: the same sample of the present rows.
    frame = lf.with_columns(pl.lit("a b").alias("text"),
                            pl.Series("label", np.where(rng.random(n) < 0.5, "x", "y")))
    clf = mmq.Classifier(**params(epoch=1), dense={"v": mmq.PQ(m=2, k=8, max_points_per_centroid=64)})
    clf.fit(frame)
    ref = mmq.PQ(m=2, k=8, max_points_per_centroid=64).fit(got)
    np.testing.assert_array_equal(clf.dense["v"].centroids(1), ref.centroids(1))


def test_lazy_fit_errors_name_the_column(parquet, batches):
    df, path = parquet
    lf = pl.scan_parquet(path)
    disc = lambda: mmq.Classifier(**params(epoch=1), dense={"image": mmq.PQ(m=4, k=8)})
    with pytest.raises(mmq.InvalidInputError, match="text column 'body' not found"):
        mmq.Classifier(**params()).fit(lf, text="body")
    with pytest.raises(mmq.InvalidInputError, match="label column 'y' not found"):
        disc().fit(lf, label="y")
    with pytest.raises(mmq.InvalidInputError, match="dense column 'photo' not found"):
        mmq.Classifier(**params(), dense={"photo": mmq.PQ(m=4, k=8)}).fit(lf)
    with pytest.raises(mmq.InvalidInputError, match="text column 'text' must be of type String, found Int64"):
        disc().fit(lf.with_columns(pl.col("text").str.len_bytes().cast(pl.Int64)))
    with pytest.raises(mmq.InvalidInputError, match="label column 'label' must be String"):
        disc().fit(lf.with_columns(pl.lit(1).alias("label")))
    with pytest.raises(mmq.InvalidInputError, match="dense column 'image' must be Array"):
        disc().fit(lf.with_columns(pl.col("text").alias("image")))
    with pytest.raises(mmq.InvalidInputError, match="column 'text' must be Array"):
        mmq.PQ(m=4, k=8).fit(lf, column="text")
    with pytest.raises(mmq.InvalidInputError, match="vector column 'photo' not found"):
        mmq.PQ(m=4, k=8).fit(lf, column="photo")
    with pytest.raises(mmq.InvalidParameterError, match="pass column="):
        mmq.PQ(m=4, k=8).fit(lf)
    # A NaN far into the frame (a later batch) is reported with its row in the frame.
    row = 2000
    assert df["image"][row] is not None
    nan = pl.col("image").arr.to_list().list.eval(pl.element() * float("nan")).list.to_array(16)
    bad = pl.scan_parquet(path).with_row_index("i").with_columns(
        pl.when(pl.col("i") == row).then(nan).otherwise(pl.col("image")).alias("image")).drop("i")
    with pytest.raises(mmq.InvalidInputError, match=f"dense column 'image': row {row} has NaN or inf"):
        disc().fit(bad)
    with pytest.raises(mmq.InvalidInputError, match="empty frame"):
        disc().fit(lf.head(0))


def test_text_only_lazy_tokenizes_batch_by_batch(parquet, batches, monkeypatch):
    """The text column is never collected whole: every batch goes to Rust as it arrives."""
    df, path = parquet
    calls = []

    real = mmq._mmq.RustTokenRows

    def rows(*a):
        r = real(*a)

        class Spy:
            def add(self, text, name, dense=()):
                calls.append(len(text))
                return r.add(text, name, list(dense))

        spy = Spy()
        fit = mmq._mmq.RustClassifier.fit
        monkeypatch.setattr(mmq._mmq.RustClassifier, "fit", lambda *a, rows=None, **k: fit(*a, rows=r, **k))
        return spy

    monkeypatch.setattr(_stream._mmq, "RustTokenRows", rows)
    monkeypatch.setattr(_stream, "collect", lambda *a, **k: pytest.fail("the frame was collected"))
    lazy = mmq.Classifier(**params()).fit(pl.scan_parquet(path))
    assert len(calls) >= 3 and max(calls) <= 450 and sum(calls) == df.height
    monkeypatch.undo()
    eager = mmq.Classifier(**params()).fit(df)
    assert_frame_equal(lazy.predict_proba(df), eager.predict_proba(df))


def test_lazy_min_count_keeps_the_text_and_equals_eager(parquet, batches):
    df, path = parquet
    eager = mmq.Classifier(**params(min_count=3)).fit(df)
    lazy = mmq.Classifier(**params(min_count=3)).fit(pl.scan_parquet(path))
    assert_frame_equal(lazy.predict_proba(df), eager.predict_proba(df))


def test_token_rows_refuse_min_count_and_mixed_input():
    cfg = mmq.Classifier(min_count=2)._config()
    with pytest.raises(mmq.InvalidParameterError, match="min_count 2"):
        mmq._mmq.RustTokenRows(json.dumps(cfg))
    rows = mmq._mmq.RustTokenRows(json.dumps(mmq.Classifier()._config()))
    rows.add(pl.Series(["a b", "c"]), "text")
    assert len(rows) == 2
    with pytest.raises(mmq.InvalidInputError, match="'text' has 2 rows but 'label' has 1"):
        mmq._mmq.RustClassifier.fit(json.dumps(mmq.Classifier()._config()), pl.Series("text", [], dtype=pl.String),
                                    pl.Series(["x"]), "text", "label", rows=rows)
    with pytest.raises(mmq.InvalidInputError, match="column 'text' must be of type String"):
        rows.add(pl.Series([1, 2]), "text")
