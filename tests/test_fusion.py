"""Continuous fusion modes through the Python API."""
import pickle

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import mmq

MODES = ["image", "add", "max", "gated", "bilinear", "bilinear_gated"]


@pytest.fixture(scope="module")
def data():
    from mmq.datasets import make_topics

    df = make_topics(n_rows=4000, dense_dim=16, seed=3)
    return df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "test")


def model(mode, **kw):
    p = dict(dim=16, epoch=10, lr=0.1, word_ngrams=2, threads=1, seed=0, progress=False, fusion=mode, dense=["image"])
    p.update(kw)
    return mmq.Classifier(**p)


@pytest.mark.parametrize("mode", MODES)
def test_modes_learn_and_round_trip(data, mode, tmp_path):
    train, test = data
    clf = model(mode).fit(train)
    acc = clf.test(test).precision
    assert acc > 0.3, (mode, acc)  # chance 0.2
    clf.save(tmp_path / "f.mmq")
    again = mmq.load(tmp_path / "f.mmq")
    assert again.fusion == mode
    assert_frame_equal(clf.predict_proba(test), again.predict_proba(test))
    assert_frame_equal(clf.predict(test, k=2), pickle.loads(pickle.dumps(clf)).predict(test, k=2))


def test_fusion_uses_the_image(data):
    train, test = data
    noise = lambda df: df.with_columns(pl.lit("same words").alias("text"))
    assert model("gated").fit(noise(train)).test(noise(test)).precision > 0.35


def test_missing_image_rows(data):
    train, test = data
    clf = model("add").fit(train)  # the generated set has 10% null images
    p = clf.predict_proba(test.with_columns(pl.lit(None).cast(test["image"].dtype).alias("image")))
    np.testing.assert_allclose(p.to_numpy().sum(1), 1, atol=1e-4)
    img = model("image").fit(train)
    none = img.predict_proba(test.head(3).with_columns(pl.lit(None).cast(test["image"].dtype).alias("image")))
    np.testing.assert_allclose(none.to_numpy(), 1 / 5, atol=1e-6)  # image-only without image: uniform


def test_fusion_bad_input(data):
    train, test = data
    with pytest.raises(mmq.InvalidParameterError, match="exactly one dense column"):
        mmq.Classifier(fusion="gated", dense=["a", "b"])
    with pytest.raises(mmq.InvalidParameterError, match="exactly one dense column"):
        mmq.Classifier(fusion="add")
    with pytest.raises(mmq.InvalidParameterError, match="loss must be one of"):
        mmq.Classifier(fusion="add", dense=["image"], loss="hinge")
    clf = model("add").fit(train)
    with pytest.raises(mmq.InvalidInputError, match="image"):
        clf.predict(test.drop("image"))
    wrong = test.with_columns(pl.Series("image", np.zeros((len(test), 8), np.float32), dtype=pl.Array(pl.Float32, 8)))
    with pytest.raises(mmq.InvalidInputError, match="dimension"):
        clf.predict(wrong)
    with pytest.raises(mmq.MmqError, match="explain"):
        clf.explain("x", image=np.zeros(16))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("loss", ["ns", "hs", "ova"])
def test_every_mode_trains_with_every_loss(data, mode, loss, tmp_path):
    """The continuous modes with ns, hs and ova: they learn as with softmax (the same bar
    as test_modes_learn_and_round_trip), keep the loss in the file and the pickle, and
    the Polars expression answers as the API does."""
    train, test = data
    clf = model(mode, loss=loss, lr=0.05).fit(train)
    acc = clf.test(test).precision
    assert acc > 0.3, (mode, loss, acc)  # chance 0.2
    clf.save(tmp_path / "f.mmq")
    again = mmq.load(tmp_path / "f.mmq")
    assert (again.fusion, again.loss) == (mode, loss)
    assert_frame_equal(clf.predict_proba(test), again.predict_proba(test))
    assert_frame_equal(clf.predict(test, k=2), pickle.loads(pickle.dumps(clf)).predict(test, k=2))
    if loss == "hs":
        np.testing.assert_allclose(clf.predict_proba(test).to_numpy().sum(axis=1), 1.0, atol=1e-4)
    assert test.select(mmq.predict(clf).alias("label")).to_series().to_list() == clf.predict(test)["label"].to_list()
