"""Many modalities: deepset, attention, G-Blend, several text and categorical columns."""
import pickle

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import mmq
from mmq.errors import InvalidInputError, InvalidParameterError, MmqError


def make_data():
    """make_topics plus a second text column and a categorical column that each carry
    part of the label, with nulls in every modality."""
    from mmq.datasets import make_topics

    df = make_topics(n_rows=4000, dense_dim=16, seed=5)
    rng = np.random.default_rng(0)
    n = df.height
    lab = df["label"].to_numpy()
    brand = np.where(rng.random(n) < 0.5, lab, rng.choice(np.unique(lab), n))
    df = df.with_columns(
        pl.Series("brand", brand).cast(pl.Categorical),
        pl.Series("title", [f"t{l} x{rng.integers(50)}" if rng.random() < 0.5 else None for l in lab]),
    )
    # Nulls in the text, brand and image columns.
    df = df.with_columns(
        pl.when(pl.Series(rng.random(n) < 0.1)).then(None).otherwise(pl.col("brand")).alias("brand"),
        pl.when(pl.Series(rng.random(n) < 0.1)).then(None).otherwise(pl.col("text")).alias("text"),
    )
    return df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "test")


@pytest.fixture(scope="module")
def data():
    return make_data()


def model(**kw):
    p = dict(dim=16, epoch=10, lr=0.5, word_ngrams=1, threads=1, seed=0, progress=False,
             dense={"image": mmq.PQ(m=4, k=16, seed=0)})
    p.update(kw)
    return mmq.Classifier(**p)


def fit(clf, train):
    return clf.fit(train, text=["text", "title"], categorical=["brand"])


CASES = [
    dict(fusion="discrete"),
    dict(fusion="deepset"),
    dict(fusion="deepset", pool="max", outer_pool="max", lr=0.1),
    dict(fusion="deepset", pool="sum", outer_pool="sum", lr=0.05),
    dict(fusion="attention"),
    dict(fusion="deepset", blend="gblend", blend_window=2),
    dict(fusion="discrete", blend="gblend"),
    dict(fusion="discrete", blend="gblend_offline"),
]


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_modes_learn_and_round_trip(data, kw, tmp_path):
    train, test = data
    clf = fit(model(**kw), train)
    text_only = mmq.Classifier(dim=16, epoch=10, lr=0.5, threads=1, seed=0, progress=False).fit(
        train.with_columns(pl.col("text").fill_null("")))
    acc = clf.test(test).precision
    assert acc > text_only.test(test.with_columns(pl.col("text").fill_null(""))).precision + 0.05, (kw, acc)
    clf.save(tmp_path / "s.mmq")
    again = mmq.load(tmp_path / "s.mmq")
    keep = ("fusion", "pool", "outer_pool", "blend", "blend_window")
    assert [getattr(again, k) for k in keep] == [getattr(clf, k) for k in keep]
    assert pickle.loads(pickle.dumps(clf)).blend_window == clf.blend_window
    assert_frame_equal(clf.predict_proba(test), again.predict_proba(test))
    assert_frame_equal(clf.predict(test, k=2), pickle.loads(pickle.dumps(clf)).predict(test, k=2))
    assert_frame_equal(clf.history, again.history)


def test_modality_scores_explain_the_log_odds(data):
    """Scores + bias are each label's logit: their differences equal the log-odds of
    predict_proba (an independent path through the model)."""
    train, test = data
    for kw in CASES[:5]:
        clf = fit(model(**kw), train)
        for i in range(5):
            row = test[i:i + 1]
            p = clf.predict_proba(row).row(0)
            logit = []
            for lab in clf.labels:
                e = clf.explain_modalities(row, label=lab)
                logit.append(float(e["score"].sum()))
            lp = np.log(np.asarray(p, dtype=np.float64))
            np.testing.assert_allclose(np.subtract.outer(logit, logit), np.subtract.outer(lp, lp), atol=2e-3)


def test_missing_modality_is_an_empty_set(data):
    """Outer mean pooling averages the present modalities only: dropping the image makes
    the text's share of the fused vector grow from 1/4 to 1/3 (a zero placeholder would
    keep 1/4) and the image scores exactly 0."""
    train, test = data
    clf = fit(model(fusion="deepset"), train)
    row = test.filter(pl.col("image").is_not_null() & pl.col("brand").is_not_null()
                      & pl.col("title").is_not_null() & pl.col("text").is_not_null())[:1]
    full = clf.explain_modalities(row, label=clf.labels[0])
    gone = clf.explain_modalities(row.with_columns(pl.lit(None).cast(row["image"].dtype).alias("image")),
                                  label=clf.labels[0])
    s_full = dict(zip(full["modality"], full["score"]))
    s_gone = dict(zip(gone["modality"], gone["score"]))
    assert s_gone["image"] == 0 and not gone.filter(pl.col("modality") == "image")["present"][0]
    for m in ("text", "title", "brand"):
        assert s_gone[m] == pytest.approx(s_full[m] * 4 / 3, rel=1e-4, abs=1e-6)


def test_all_null_row_predicts_the_label_prior(data):
    train, test = data
    clf = fit(model(fusion="deepset"), train)
    empty = test[:1].with_columns(
        pl.lit(None, pl.String).alias("text"), pl.lit(None, pl.String).alias("title"),
        pl.lit(None).cast(test["brand"].dtype).alias("brand"), pl.lit(None).cast(test["image"].dtype).alias("image"))
    e = clf.explain_modalities(empty)
    assert (e.filter(pl.col("kind") != "bias")["score"] == 0).all()
    p = np.asarray(clf.predict_proba(empty).row(0))
    # The bias row alone gives the probabilities: softmax(bias).
    bias = np.array([clf.explain_modalities(empty, label=l)["score"][-1] for l in clf.labels])
    np.testing.assert_allclose(p, np.exp(bias) / np.exp(bias).sum(), rtol=1e-4)


def test_max_pooling_reports_the_winning_modality(data):
    train, test = data
    clf = fit(model(fusion="deepset", pool="max", outer_pool="max", lr=0.1), train)
    e = clf.explain_modalities(test[:1])
    assert e["dims_won"].drop_nulls().sum() == clf.dim


def test_gblend_weights_follow_the_papers_estimate(data):
    """Recompute each super-epoch's weights with NumPy from the gain G and overfitting O
    its trials recorded: w ∝ max(G, 0) / (O² + 1e-4), the previous weights when no head
    gained (1/5 each before the first)."""
    train, _ = data
    clf = fit(model(fusion="deepset", blend="gblend", epoch=6, lr=0.2, blend_window=2), train)
    h = clf.history
    heads = ["fused", "text", "title", "brand", "image"]
    assert h["head"].to_list()[:5] == heads
    assert h["epoch"].unique().sort().to_list() == [0, 2, 4] and set(h["epochs"]) == {2}
    w = h["weight"].to_numpy().reshape(3, 5)
    g = h["gain"].to_numpy().reshape(3, 5).astype(np.float64)
    o = h["overfit"].to_numpy().reshape(3, 5).astype(np.float64)
    np.testing.assert_allclose(w.sum(axis=1), 1, rtol=1e-5)
    prev = np.full(5, 0.2)
    for e in range(3):
        raw = np.where(g[e] > 0, g[e] / (o[e] * o[e] + 1e-4), 0)
        want = raw / raw.sum() if raw.sum() > 0 else prev
        np.testing.assert_allclose(w[e], want, rtol=2e-3, atol=1e-5)
        prev = w[e]
    # From the untrained model every head, trained alone, gains on held-out rows.
    assert (g[0] > 0).all()


def test_bad_input(data):
    train, test = data
    with pytest.raises(InvalidParameterError, match="collide.*text"):
        model(fusion="deepset").fit(train, text=["text", "text"])
    with pytest.raises(InvalidParameterError, match="collide.*'image'"):
        model(fusion="deepset").fit(train, text=["text"], categorical=["image"])
    with pytest.raises(InvalidParameterError, match="collide.*label"):
        model(fusion="deepset").fit(train, text=["text"], categorical=["label"])
    with pytest.raises(InvalidInputError, match="categorical column 'score'.*Float64"):
        model(fusion="deepset").fit(train.with_columns(score=pl.lit(1.5)), categorical=["score"])
    with pytest.raises(InvalidInputError, match="'nope' not found"):
        model(fusion="deepset").fit(train, categorical=["nope"])
    with pytest.raises(InvalidParameterError, match="G-Blend holds out 5 of 50 rows"):
        model(fusion="deepset", blend="gblend").fit(train[:50])
    with pytest.raises(InvalidParameterError, match="blend"):
        mmq.Classifier(fusion="gated", dense=["image"], blend="gblend")
    for bad in (0, 1.5, True):
        with pytest.raises(InvalidParameterError, match="blend_window must be an int >= 1"):
            model(fusion="deepset", blend="gblend", blend_window=bad)
    with pytest.raises(InvalidParameterError, match="pool"):
        model(fusion="deepset", pool="median")
    with pytest.raises(InvalidParameterError, match="attention"):
        mmq.Classifier(fusion="attention").fit(train.with_columns(pl.col("text").fill_null("")))
    clf = fit(model(fusion="attention"), train)
    with pytest.raises(InvalidInputError, match="'image' not found"):
        clf.predict(test.drop("image"))
    with pytest.raises(InvalidInputError, match="'brand' not found"):
        clf.predict(test.drop("brand"))
    with pytest.raises(MmqError, match="explain_modalities"):
        clf.explain("some text")


@pytest.mark.parametrize("kw", [CASES[1], CASES[4]], ids=["deepset", "attention"])
def test_plugin_expressions_equal_the_api(data, kw, tmp_path):
    """mmq.predict / predict_proba take set models: the same output as the Python API in
    eager, lazy and streaming queries, and on the single-threaded path."""
    train, test = data
    clf = fit(model(**kw), train)
    want = clf.predict(test)["label"]
    got = test.select(mmq.predict(clf).alias("label")).to_series()
    assert_frame_equal(got.to_frame(), want.to_frame())
    lazy = test.lazy().select(mmq.predict(clf).alias("label")).collect(engine="streaming").to_series()
    assert_frame_equal(lazy.to_frame(), want.to_frame())
    proba = test.select(mmq.predict_proba(clf).alias("p")).to_series().to_numpy()
    np.testing.assert_array_equal(proba, clf.predict_proba(test).to_numpy())
    clf.save(tmp_path / "s.mmq")
    from mmq.namespace import _LIB, _model_args
    from polars.plugins import register_plugin_function

    path, _, args = _model_args(str(tmp_path / "s.mmq"), "text", None)
    serial = register_plugin_function(plugin_path=_LIB, function_name="mmq_predict", args=args,
                                      kwargs={"path": path, "threshold": 0.0, "serial": True},
                                      is_elementwise=True)
    assert test.select(serial.alias("label")).to_series().to_list() == want.to_list()
    with pytest.raises(pl.exceptions.PolarsError, match="brand"):
        test.drop("brand").select(mmq.predict(clf))


LOSS_CASES = [dict(fusion=f, loss=l) for f in ("discrete", "deepset", "attention") for l in ("ns", "hs", "ova")]


@pytest.mark.parametrize("kw", LOSS_CASES, ids=lambda kw: f"{kw['fusion']}-{kw['loss']}")
def test_every_set_fusion_trains_with_every_loss(data, kw, tmp_path):
    """Several columns (bag of the discrete fusion, deepset, attention) with ns, hs and
    ova: they learn (beyond text alone, as the softmax cases above), keep the loss in
    the file and in a pickle, and the Polars expressions answer as the API does."""
    train, test = data
    clf = fit(model(**kw), train)
    text_only = mmq.Classifier(dim=16, epoch=10, lr=0.5, threads=1, seed=0, progress=False).fit(
        train.with_columns(pl.col("text").fill_null("")))
    acc = clf.test(test).precision
    assert acc > text_only.test(test.with_columns(pl.col("text").fill_null(""))).precision + 0.05, (kw, acc)
    clf.save(tmp_path / "s.mmq")
    again = mmq.load(tmp_path / "s.mmq")
    assert again.loss == kw["loss"]
    assert_frame_equal(clf.predict_proba(test), again.predict_proba(test))
    assert_frame_equal(clf.predict(test, k=2), pickle.loads(pickle.dumps(clf)).predict(test, k=2))
    p = clf.predict_proba(test).to_numpy()
    if kw["loss"] == "hs":
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-4)
    assert test.select(mmq.predict(clf).alias("label")).to_series().to_list() == clf.predict(test)["label"].to_list()
    # With a validation split: the best epoch, and a temperature that keeps the ranking.
    cal = model(**kw).fit(train, text=["text", "title"], categorical=["brand"], valid=test, patience=2)
    assert cal.history.height >= 1 and cal.temperature > 0
    if kw["loss"] == "hs":
        with pytest.raises(InvalidParameterError, match="hs"):
            clf.explain_modalities(test[:1])


def test_gblend_trains_with_softmax_only(data):
    train, _ = data
    with pytest.raises(InvalidParameterError, match="softmax"):
        fit(model(fusion="deepset", blend="gblend", loss="ns"), train)
