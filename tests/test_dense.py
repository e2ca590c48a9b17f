"""Discrete fusion: dense columns quantized into visual tokens."""
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import mmq


@pytest.fixture(scope="module")
def data():
    from mmq.datasets import make_topics

    df = make_topics(n_rows=6000, dense_dim=32, seed=2)
    return df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "test")


def params(**kw):
    p = dict(dim=16, epoch=10, lr=0.3, word_ngrams=2, threads=1, seed=0, progress=False)
    p.update(kw)
    return p


def test_image_tokens_help_on_generated_data(data):
    train, test = data
    text = mmq.Classifier(**params()).fit(train).test(test).precision
    disc = mmq.Classifier(**params(), dense={"image": mmq.PQ(m=8, k=16)}).fit(train)
    assert disc.dense["image"].is_fitted
    assert disc.test(test).precision > text + 0.02


def test_image_only_signal_is_used(data):
    """Text is pure noise here; only the vector carries the label."""
    train, test = data
    noise = lambda df: df.with_columns(pl.lit("same words for all").alias("text"))
    clf = mmq.Classifier(**params(), dense={"image": mmq.RSPQ(m=8, k=16)}).fit(noise(train))
    assert clf.test(noise(test)).precision > 0.35  # chance is 0.2


def test_missing_image_predicts_from_text(data, tmp_path):
    train, test = data
    clf = mmq.Classifier(**params(), dense={"image": mmq.PQ(m=8, k=16)}).fit(train)
    no_img = test.with_columns(pl.lit(None).cast(test["image"].dtype).alias("image"))
    p1 = clf.predict_proba(no_img)
    np.testing.assert_allclose(p1.to_numpy().sum(axis=1), 1.0, atol=1e-4)
    # Without its image a row has no visual token: its prediction comes from text alone,
    # and differs from the prediction with the image for most rows.
    assert (clf.explain(test["text"][0], image=None)["kind"] != "Dense").all()
    with_img = clf.predict_proba(test).to_numpy()
    assert (np.abs(with_img - p1.to_numpy()).max(axis=1) > 1e-6).mean() > 0.5
    # Save / load keeps the quantizer: predictions identical, from raw vectors.
    clf.save(tmp_path / "m.mmq")
    again = mmq.load(tmp_path / "m.mmq")
    assert set(again.dense) == {"image"}
    assert_frame_equal(clf.predict_proba(test), again.predict_proba(test))
    assert_frame_equal(p1, again.predict_proba(no_img))


def test_train_on_codes(data):
    train, test = data
    q = mmq.PQ(m=8, k=16).fit(train["image"].drop_nulls())
    enc = lambda df: df.with_columns(
        pl.when(pl.col("image").is_null()).then(None).otherwise(
            pl.Series(np.zeros((len(df), 8), dtype=np.uint8), dtype=pl.Array(pl.UInt8, 8))).alias("codes"))
    def with_codes(df):
        present = df["image"].is_not_null()
        codes = np.zeros((len(df), 8), dtype=np.uint8)
        codes[present.to_numpy()] = q.encode(df["image"].filter(present))
        s = pl.Series("codes", codes, dtype=pl.Array(pl.UInt8, 8))
        return df.with_columns(pl.when(present).then(s).otherwise(None).alias("codes")).drop("image")
    a = mmq.Classifier(**params(), dense={"codes": q}).fit(with_codes(train))
    b = mmq.Classifier(**params(), dense={"image": q}).fit(train)
    np.testing.assert_allclose(a.predict_proba(with_codes(test)).to_numpy(), b.predict_proba(test).to_numpy(), atol=1e-6)


def test_explain_lists_visual_tokens(data):
    train, test = data
    clf = mmq.Classifier(**params(), dense={"image": mmq.PQ(m=4, k=8)}).fit(train)
    row = test.filter(pl.col("image").is_not_null()).row(0, named=True)
    e = clf.explain(row["text"], image=row["image"])
    assert (e["kind"] == "Dense").sum() == 4
    assert e.filter(pl.col("kind") == "Dense")["token"].str.starts_with("image[").all()


def test_bad_dense_input(data):
    train, test = data
    with pytest.raises(mmq.InvalidParameterError, match="alpha"):
        mmq.Classifier(alpha=-1)
    with pytest.raises(mmq.InvalidParameterError, match="fusion"):
        mmq.Classifier(fusion="concat")
    with pytest.raises(mmq.InvalidParameterError, match="PQ or mmq.RSPQ"):
        mmq.Classifier(dense={"image": "pq"})
    clf = mmq.Classifier(**params(), dense={"image": mmq.PQ(m=4, k=8)}).fit(train)
    with pytest.raises(mmq.InvalidInputError, match="dense column 'image' not found"):
        clf.predict(test.drop("image"))
    with pytest.raises(mmq.InvalidInputError, match="dense column"):
        clf.predict(test["text"].to_list())
    wrong = test.with_columns(pl.Series("image", np.zeros((len(test), 16), np.float32), dtype=pl.Array(pl.Float32, 16)))
    with pytest.raises(mmq.InvalidInputError, match="image"):
        clf.predict(wrong)
    nan = np.ones((len(test), 32), np.float32)
    nan[5, 0] = np.nan
    with pytest.raises(mmq.InvalidInputError, match="row 5 has NaN"):
        clf.predict(test.with_columns(pl.Series("image", nan, dtype=pl.Array(pl.Float32, 32))))
    with pytest.raises(mmq.InvalidInputError, match="image"):
        mmq.Classifier(**params(), dense={"image": mmq.PQ(m=4)}).fit(train.with_columns(pl.lit("x").alias("image")))


def test_visual_token_neighbors_and_rows(data):
    train, _ = data
    q = mmq.PQ(m=4, k=8)
    clf = mmq.Classifier(**params(), dense={"image": q}).fit(train)
    near = clf.rows_near_centroid(train, "image", 1, 5, n=4)
    present = train.with_row_index("row").filter(pl.col("image").is_not_null())
    x = present["image"].to_numpy()
    d2 = ((x[:, q.subspaces[1]] - q.centroids(1)[5]) ** 2).sum(1)
    np.testing.assert_allclose(near["distance"].to_numpy(), np.sort(d2)[:4], rtol=1e-5)
    assert near["row"].to_list() == present["row"].to_numpy()[np.argsort(d2, kind="stable")[:4]].tolist()
    nb = clf.visual_neighbors("image", 1, 5, n=3, words=["alpha"])
    assert nb.height == 3 and nb["similarity"].is_sorted(descending=True)
    assert (nb["similarity"] <= 1.0 + 1e-6).all()
    with pytest.raises(mmq.InvalidParameterError, match="not a dense column"):
        clf.visual_neighbors("text", 0, 0)


@pytest.mark.parametrize("transform", ["sqrt", "l2"])
def test_quantizer_transform_in_a_classifier(data, transform, tmp_path):
    """A transform inside a discrete-fusion model: the model's visual tokens are the codes
    of the transformed vectors (a quantizer fitted on NumPy-transformed vectors gives the
    same codes), predict takes raw vectors, the file keeps it, and the plugin agrees."""
    from mmq.quant import apply_transform

    train, test = data
    clf = mmq.Classifier(**params(), dense={"image": mmq.PQ(m=4, k=8, transform=transform)}).fit(train)
    q = clf.dense["image"]
    assert q.transform == transform
    x = test.filter(pl.col("image").is_not_null())["image"].to_numpy()
    if transform == "sqrt":
        xt = (np.sign(x) * np.sqrt(np.abs(x))).astype(np.float32)
    else:
        xt = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    np.testing.assert_allclose(apply_transform(x, transform), xt, rtol=1e-6, atol=1e-7)
    plain = mmq.PQ(m=4, k=8).fit(apply_transform(
        train.filter(pl.col("image").is_not_null())["image"].to_numpy(), transform))
    np.testing.assert_array_equal(q.encode(x), plain.encode(xt))
    clf.save(tmp_path / "m.mmq")
    back = mmq.load(tmp_path / "m.mmq")
    assert back.dense["image"].transform == transform
    assert back.predict(test).equals(clf.predict(test))
    enc = test.select(pl.col("image").mmq.encode(q))["image"]
    np.testing.assert_array_equal(enc.drop_nulls().to_numpy(), q.encode(x))
    near = clf.rows_near_centroid(train, "image", 1, 5, n=3)
    xtr = apply_transform(train.filter(pl.col("image").is_not_null())["image"].to_numpy(), transform)
    d2 = ((xtr[:, q.subspaces[1]] - q.centroids(1)[5]) ** 2).sum(1)
    np.testing.assert_allclose(near["distance"].to_numpy(), np.sort(d2)[:3], rtol=1e-5)
