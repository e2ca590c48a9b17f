"""The linear head, validation-driven training, calibration and late fusion."""
import pickle

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import mmq
from mmq.errors import InvalidInputError, InvalidParameterError


@pytest.fixture(scope="module")
def topics():
    from mmq.datasets import make_topics

    df = make_topics(n_rows=3000, dense_dim=16, seed=5)
    return tuple(df.filter(pl.col("split") == s) for s in ("train", "valid", "test"))


def params(**kw):
    p = dict(epoch=5, lr=0.5, word_ngrams=2, threads=1, seed=0, progress=False, head="linear")
    p.update(kw)
    return p


def reference_features(ids, idf=None):
    """NumPy reference of the linear head's features: merged duplicates, 1 + ln count,
    optional IDF, L2 norm."""
    uniq, counts = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
    v = 1.0 + np.log(counts)
    if idf is not None:
        v = v * np.array([idf[u] for u in uniq])
    return uniq, v / np.linalg.norm(v)


@pytest.mark.parametrize("use_idf", [False, True])
def test_linear_head_matches_numpy_forward(topics, use_idf):
    train, _, test = topics
    clf = mmq.Classifier(**params(idf=use_idf)).fit(train.drop("image"))
    texts = test["text"].head(40).to_list() + ["good good good news news"]
    got = clf.predict_proba(texts).to_numpy()
    ids_rows = clf.tokenize(texts).to_list()
    m = clf._model
    b = m.output_matrix()[0]
    idf = None
    if use_idf:
        # IDF recomputed from the training rows (scikit-learn's smooth formula)
        rows = [set(r) for r in clf.tokenize(train["text"]).to_list()]
        n = len(rows)
        df_count = {}
        for r in rows:
            for t in r:
                df_count[t] = df_count.get(t, 0) + 1
        idf = {t: np.log((1 + n) / (1 + c)) + 1 for t, c in df_count.items()}
    for row, ids in zip(got, ids_rows):
        known = [t for t in ids if t in (idf or {}) or not np.isnan(m.embeddings([t])).any()]
        uniq, v = reference_features(known, idf)
        w = m.embeddings(uniq.astype(np.uint32).tolist()) if len(uniq) else np.zeros((0, len(clf.labels)))
        z = b + v @ w
        p = np.exp(z - z.max())
        np.testing.assert_allclose(row, p / p.sum(), rtol=2e-4, atol=2e-6)


def test_linear_head_learns_and_round_trips(topics, tmp_path):
    train, _, test = topics
    clf = mmq.Classifier(**params()).fit(train.drop("image"))
    assert clf.test(test).precision > 0.6  # 5 classes: chance is 0.2
    clf.save(tmp_path / "lin.mmq")
    back = mmq.load(tmp_path / "lin.mmq")
    assert back.head == "linear" and back.get_params()["head"] == "linear"
    assert_frame_equal(back.predict_proba(test), clf.predict_proba(test))
    assert_frame_equal(pickle.loads(pickle.dumps(clf)).predict(test), clf.predict(test))
    ex = clf.explain(test["text"][0])
    assert ex.height > 0 and ex["score"].is_finite().all()


@pytest.mark.parametrize("loss", ["ns", "ova"])
def test_linear_head_other_losses(topics, loss):
    train, _, test = topics
    clf = mmq.Classifier(**params(loss=loss, epoch=10)).fit(train.drop("image"))
    assert clf.test(test).precision > 0.6


def test_linear_head_with_code_tokens(topics):
    train, _, test = topics
    text = mmq.Classifier(**params()).fit(train.drop("image")).test(test).precision
    clf = mmq.Classifier(**params(), dense={"image": mmq.PQ(m=4, k=16)}).fit(train)
    assert clf.test(test).precision > text + 0.03


def test_valid_keeps_best_epoch_and_records_history(topics):
    train, valid, _ = topics
    for kw in (params(epoch=8), params(head="bottleneck", dim=10, epoch=8)):
        clf = mmq.Classifier(**kw).fit(train, valid=valid)
        h = clf.history
        assert h.columns == ["epoch", "train_loss", "valid_loss", "valid_accuracy", "best"]
        assert h.height == 8 and h["epoch"].to_list() == list(range(8))
        best = h.filter(pl.col("best"))["valid_accuracy"].max()
        assert best == h["valid_accuracy"].max()
        # the kept weights are the best epoch's: their valid accuracy is that epoch's
        assert clf.test(valid).precision == pytest.approx(best, abs=1e-6)


def test_patience_stops_early(topics):
    train, valid, _ = topics
    clf = mmq.Classifier(**params(epoch=200, lr=1.0)).fit(train, valid=valid, patience=2)
    h = clf.history
    assert h.height < 200
    assert not h["best"].tail(2).any()
    assert mmq.Classifier(**params()).fit(train).history.height == 0


def test_calibration_lowers_valid_loss_and_is_a_power_of_the_probabilities(topics):
    train, valid, _ = topics
    kw = params(head="bottleneck", dim=10, epoch=20, lr=1.0)
    raw = mmq.Classifier(**kw).fit(train, valid=valid, calibrate=False)
    cal = mmq.Classifier(**kw).fit(train, valid=valid)
    assert raw.temperature == 1.0 and cal.temperature != 1.0
    gold = np.array([raw.labels.index(v) for v in valid["label"]])
    p1 = raw.predict_proba(valid).to_numpy().astype(np.float64)
    pt = cal.predict_proba(valid).to_numpy().astype(np.float64)
    ref = p1 ** (1 / cal.temperature)
    ref /= ref.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(pt, ref, rtol=1e-3, atol=1e-6)
    nll = lambda p: -np.log(np.maximum(p[np.arange(len(gold)), gold], 1e-12)).mean()  # noqa: E731
    assert nll(pt) < nll(p1)
    assert (pt.argmax(1) == p1.argmax(1)).all()


def test_valid_bad_input(topics):
    train, valid, _ = topics
    clf = mmq.Classifier(**params())
    with pytest.raises(InvalidParameterError, match="patience"):
        clf.fit(train, valid=valid, patience=0)
    with pytest.raises(InvalidParameterError, match="patience"):
        clf.fit(train, patience=3)
    with pytest.raises(InvalidInputError, match="'text'"):
        clf.fit(train, valid=valid.drop("text"))
    with pytest.raises(InvalidInputError, match="empty"):
        clf.fit(train, valid=valid.head(0))
    odd = valid.with_columns(pl.when(pl.int_range(pl.len()) < 7).then(pl.lit("never_seen"))
                             .otherwise(pl.col("label")).alias("label"))
    with pytest.warns(UserWarning, match="7 label"):
        clf.fit(train, valid=odd)
    assert clf.history["valid_accuracy"].max() <= 1 - 7 / valid.height + 1e-6
    for bad in (dict(head="wide"), dict(l2=-1.0), dict(loss="hs"), dict(idf=1), dict(fusion="gated", dense=["image"])):
        with pytest.raises(InvalidParameterError):
            mmq.Classifier(**params(**bad))


def test_late_fusion(topics, tmp_path):
    train, valid, test = topics
    text_only = mmq.Classifier(**params()).fit(train.drop("image"), valid=valid.drop("image"))
    late = mmq.Classifier(**params(), fusion="late", dense=["image"]).fit(train, valid=valid)
    w = late._model.weights
    assert len(w) == 1 and 0 <= w[0] <= 2
    # the weights minimise the valid loss over the grid, text alone (w = 0) included
    stack = pl.DataFrame(late._model.stacking)
    assert stack.filter(pl.col("weight") == w[0])["valid_loss"][0] == pytest.approx(stack["valid_loss"].min())
    assert late.test(valid).precision >= text_only.test(valid).precision - 0.01
    p = late.predict_proba(test)
    np.testing.assert_allclose(p.to_numpy().sum(axis=1), 1.0, rtol=1e-4)
    # a row without its image is predicted from the text head alone (weights, temperature)
    row = test.head(1).with_columns(pl.lit(None, dtype=test["image"].dtype).alias("image"))
    assert late.predict(row)["label"][0] is not None
    late.save(tmp_path / "late.mmq")
    back = mmq.load(tmp_path / "late.mmq")
    assert back.fusion == "late"
    assert_frame_equal(back.predict_proba(test), p)
    assert_frame_equal(pickle.loads(pickle.dumps(late)).predict(test, k=2), late.predict(test, k=2))
    with pytest.raises(InvalidParameterError, match="validation"):
        mmq.Classifier(**params(), fusion="late", dense=["image"]).fit(train)
    with pytest.raises(InvalidParameterError, match="dense"):
        mmq.Classifier(**params(), fusion="late")
