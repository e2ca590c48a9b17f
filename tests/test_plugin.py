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


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["text", "discrete", "gated", "deepset"])
def test_predict_with_k_gives_named_structs_equal_to_the_api(data, kind, engine):
    train, test = data
    if kind == "deepset":
        clf = mmq.Classifier(dim=8, epoch=3, fusion="deepset", dense={"image": mmq.PQ(m=4, k=8)}, threads=1,
                             progress=False).fit(train)
    else:
        clf = _small_model(train, kind, mmq.PQ)
    for k, threshold in ((3, 0.0), (-1, 0.0), (2, 0.3)):
        out = test.lazy().select(mmq.predict(clf, k=k, threshold=threshold)).collect(engine=engine)
        assert out.columns == ["prediction"]
        assert out.schema["prediction"] == pl.Struct({"label": pl.List(pl.String), "prob": pl.List(pl.Float32)})
        got = out.unnest("prediction")
        want = clf.predict(test, k=len(clf.labels) if k == -1 else k, threshold=threshold)
        assert got["label"].to_list() == [[x for x in r if x is not None] for r in want["label"].to_list()]
        for g, w in zip(got["prob"].to_list(), want["prob"].to_list()):
            np.testing.assert_allclose(g, [x for x in w if x == x], atol=1e-6)
    named = test.select(mmq.predict_proba(clf, named=True)).unnest("proba")
    assert named.columns == clf.labels
    np.testing.assert_allclose(named.to_numpy(), clf.predict_proba(test).to_numpy(), atol=1e-6)
    assert test.select(mmq.predict(clf)).columns == ["prediction"]
    with pytest.raises(mmq.InvalidParameterError, match="k must"):
        mmq.predict(clf, k=0)


def test_dense_vectors_as_lists_are_read_like_arrays(data):
    train, test = data
    clf = _small_model(train, "discrete", mmq.PQ)
    as_list = test.with_columns(pl.col("image").cast(pl.List(pl.Float32)))
    got = as_list.select(mmq.predict(clf))["prediction"]
    assert_series_equal(got, test.select(mmq.predict(clf))["prediction"])
    short = as_list.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(pl.lit([1.0, 2.0]))
                                 .otherwise(pl.col("image")).alias("image"))
    with pytest.raises(Exception, match="row 5 holds 2 values, the model expects 16"):
        short.select(mmq.predict(clf))
