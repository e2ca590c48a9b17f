"""The Polars expressions (encode, predict, predict_proba) against the Python API."""
import time

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal, assert_series_equal

import mmq


@pytest.fixture(scope="module")
def data():
    from mmq.datasets import make_topics

    df = make_topics(n_rows=3000, dense_dim=16, seed=4)  # 10% null images
    return df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "test")


ENGINES = ["in-memory", "streaming"]


def _small_model(train, kind, quantizer):
    """A quickly trained text / discrete (with ``quantizer``) / gated model on ``train``."""
    p = dict(dim=8, epoch=5, lr=0.2, threads=1, progress=False)
    if kind == "discrete":
        p["dense"] = {"image": quantizer(m=4, k=8)}
    elif kind == "gated":
        p.update(fusion="gated", dense=["image"])
    return mmq.Classifier(**p).fit(train)


@pytest.mark.parametrize("engine", ENGINES)
def test_encode_expression_equals_api(data, engine):
    train, test = data
    q = mmq.RSPQ(m=4, k=8).fit(train["image"].drop_nulls())
    out = test.lazy().select(pl.col("image").mmq.encode(q)).collect(engine=engine)["image"]
    assert out.dtype == pl.Array(pl.UInt8, 4)
    assert out.is_null().to_list() == test["image"].is_null().to_list()
    present = test["image"].drop_nulls()
    np.testing.assert_array_equal(out.drop_nulls().to_numpy(), q.encode(present))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["text", "discrete", "gated"])
def test_predict_expressions_equal_api(data, kind, engine, tmp_path):
    train, test = data
    clf = _small_model(train, kind, mmq.PQ)
    got = test.lazy().select(mmq.predict(clf).alias("label")).collect(engine=engine)["label"]
    assert_series_equal(got, clf.predict(test)["label"])
    proba = test.lazy().select(mmq.predict_proba(clf)).collect(engine=engine).to_series().to_numpy()
    np.testing.assert_allclose(proba, clf.predict_proba(test).to_numpy(), atol=1e-6)
    # By path, too.
    clf.save(tmp_path / "m.mmq")
    by_path = test.select(mmq.predict(tmp_path / "m.mmq").alias("label"))["label"]
    assert_series_equal(by_path, clf.predict(test)["label"])


def test_predict_in_group_by(data):
    train, test = data
    clf = mmq.Classifier(dim=8, epoch=5, threads=1, progress=False).fit(train)
    out = test.group_by("split").agg(mmq.predict(clf).alias("p"))
    assert out["p"].list.len().sum() == test.height


def test_plugin_reloads_changed_file(data, tmp_path):
    train, test = data
    path = tmp_path / "m.mmq"
    a = mmq.Classifier(dim=8, epoch=1, seed=0, threads=1, progress=False).fit(train)
    a.save(path)
    first = test.select(mmq.predict_proba(path)).to_series().to_numpy()
    time.sleep(0.05)
    b = mmq.Classifier(dim=8, epoch=8, lr=0.5, seed=1, threads=1, progress=False).fit(train)
    b.save(path)
    second = test.select(mmq.predict_proba(path)).to_series().to_numpy()
    np.testing.assert_allclose(second, b.predict_proba(test).to_numpy(), atol=1e-6)
    assert not np.allclose(first, second)


def test_expression_errors(data, tmp_path):
    train, test = data
    q = mmq.PQ(m=4, k=8).fit(train["image"].drop_nulls())
    with pytest.raises(Exception, match="mmq.encode.*Array"):
        test.select(pl.col("text").mmq.encode(q))
    wrong = test.with_columns(pl.Series("image", np.zeros((len(test), 8), np.float32), dtype=pl.Array(pl.Float32, 8)))
    with pytest.raises(Exception, match="dimension 8, the model expects 16"):
        wrong.select(pl.col("image").mmq.encode(q))
    with pytest.raises(mmq.InvalidInputError, match="does not exist"):
        mmq.predict(tmp_path / "nope.mmq")
    bad = tmp_path / "bad.mmq"
    bad.write_bytes(b"garbage")
    with pytest.raises(mmq.ModelFileError, match="not a safetensors"):
        mmq.predict(str(bad))
    clf = mmq.Classifier(dim=8, epoch=1, threads=1, progress=False).fit(train)
    with pytest.raises(Exception, match="must be String"):
        test.select(mmq.predict(clf, text="image"))


@pytest.mark.parametrize("kind", ["text", "discrete", "gated"])
def test_serial_path_equals_parallel(data, kind):
    """The single-threaded path taken under a parallel caller gives the same output."""
    from polars.plugins import register_plugin_function

    from mmq import namespace

    train, test = data
    test = pl.concat([test] * 3)  # more than one 256-row encode block
    clf = _small_model(train, kind, mmq.RSPQ)
    path = namespace._path_of(clf)
    args = [pl.col("text")] + [pl.col(n) for n in clf.dense]

    def call(name, **kw):
        return register_plugin_function(plugin_path=namespace._LIB, function_name=name, args=args,
                                        kwargs={"path": path, **kw}, is_elementwise=True)

    for serial in (False, True):
        got = test.select(call("mmq_predict", threshold=0.0, serial=serial).alias("label"))["label"]
        assert_series_equal(got, clf.predict(test)["label"])
        proba = test.select(call("mmq_predict_proba", n_labels=len(clf.labels), serial=serial))
        np.testing.assert_allclose(proba.to_series().to_numpy(), clf.predict_proba(test).to_numpy(), atol=1e-6)
    if kind == "discrete":
        q = clf.dense["image"]
        qpath = namespace._path_of(q)
        enc = test.select(register_plugin_function(
            plugin_path=namespace._LIB, function_name="mmq_encode", args=[pl.col("image")],
            kwargs={"path": qpath, "m": q.m, "k": q.k, "serial": True}, is_elementwise=True))["image"]
        assert enc.is_null().to_list() == test["image"].is_null().to_list()
        np.testing.assert_array_equal(enc.drop_nulls().to_numpy(), q.encode(test["image"].drop_nulls()))
    tok = test.select(register_plugin_function(
        plugin_path=namespace._LIB, function_name="mmq_tokenize", args=[pl.col("text")],
        kwargs={"word_ngrams": 2, "minn": 0, "maxn": 0, "bucket": 1000, "split_cjk": True, "serial": True},
        is_elementwise=True))["text"]
    assert_series_equal(tok, mmq.tokenize(test, word_ngrams=2, bucket=1000), check_names=False)
