import pickle

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import mmq


def split(df):
    return df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "test")


def fit(train, **kw):
    params = dict(dim=16, epoch=10, lr=0.5, word_ngrams=2, threads=1, seed=1, progress=False)
    params.update(kw)
    return mmq.Classifier(**params).fit(train)


@pytest.mark.parametrize("loss", ["softmax", "ns", "hs", "ova"])
def test_every_loss_learns(topics, loss):
    train, test = split(topics)
    clf = fit(train, loss=loss)
    acc = clf.test(test).precision
    # Chance is 0.2; the generated set is learnable to ~0.8 from text.
    assert acc > 0.6, (loss, acc)
    p = clf.predict_proba(test.head(20)).to_numpy()
    assert p.shape == (20, 5)
    if loss in ("softmax", "hs"):
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-4)


def test_deterministic_with_one_thread(topics):
    train, test = split(topics)
    a = fit(train, threads=1, seed=3).predict_proba(test)
    b = fit(train, threads=1, seed=3).predict_proba(test)
    assert_frame_equal(a, b)
    c = fit(train, threads=1, seed=4).predict_proba(test)
    assert not a.equals(c)


def test_two_threads_train_well(topics):
    train, test = split(topics)
    assert fit(train, threads=2).test(test).precision > 0.6


def test_lazyframe_list_series_inputs(topics):
    train, test = split(topics)
    clf = fit(train.lazy())
    by_df = clf.predict(test)
    by_list = clf.predict(test["text"].to_list())
    by_series = clf.predict(test["text"])
    assert_frame_equal(by_df, by_list)
    assert_frame_equal(by_df, by_series)
    assert clf.predict("single string").height == 1


def test_predict_k_and_threshold(topics):
    train, test = split(topics)
    clf = fit(train)
    top3 = clf.predict(test.head(50), k=3)
    assert top3.schema == pl.Schema({"label": pl.List(pl.String), "prob": pl.List(pl.Float32)})
    assert (top3["label"].list.len() == 3).all()
    probs = top3["prob"].to_list()
    assert all(p[0] >= p[1] >= p[2] for p in probs)
    # predict's top-1 equals argmax of predict_proba.
    pp = clf.predict_proba(test.head(50)).to_numpy()
    assert top3["label"].list.first().to_list() == [clf.labels[i] for i in pp.argmax(axis=1)]
    high = clf.predict(test.head(50), k=5, threshold=0.5)
    assert (high["label"].list.len() <= 1).all()
    none = clf.predict(test.head(5), threshold=1.01)
    assert none["label"].null_count() == 5


def test_multilabel_ova():
    rng = np.random.default_rng(0)
    texts, labels = [], []
    for _ in range(3000):
        has_a, has_b = rng.random() < 0.5, rng.random() < 0.5
        words = list(rng.choice(["x", "y", "z", "w"], size=4))
        lab = []
        if has_a:
            words.append("alpha")
            lab.append("A")
        if has_b:
            words.append("beta")
            lab.append("B")
        if not lab:
            lab.append("none")
        texts.append(" ".join(words))
        labels.append(lab)
    df = pl.DataFrame({"text": texts, "label": labels})
    clf = mmq.Classifier(dim=8, epoch=5, lr=0.5, loss="ova", threads=1, progress=False).fit(df)
    pred = clf.predict(["x alpha beta"], k=3, threshold=0.5)
    assert sorted(pred["label"][0].to_list()) == ["A", "B"]
    r = clf.test(df, k=2, threshold=0.5)
    assert r.precision > 0.95 and r.recall > 0.95
    assert set(r.per_label["label"]) == {"A", "B", "none"}


def test_test_metrics_match_manual_computation(topics):
    train, test = split(topics)
    clf = fit(train)
    r = clf.test(test, k=1)
    pred = clf.predict(test)["label"]
    acc = (pred == test["label"]).mean()
    assert r.precision == pytest.approx(acc)
    assert r.recall == pytest.approx(acc)
    per = r.per_label.filter(pl.col("label") == "topic_0")
    tp = ((pred == "topic_0") & (test["label"] == "topic_0")).sum()
    assert per["tp"][0] == tp
    assert per["precision"][0] == pytest.approx(tp / (pred == "topic_0").sum())
    assert per["recall"][0] == pytest.approx(tp / (test["label"] == "topic_0").sum())


def test_save_load_pickle_round_trip(topics, tmp_path):
    train, test = split(topics)
    clf = fit(train)
    path = tmp_path / "m.mmq"
    clf.save(path)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves no temp file
    again = mmq.load(path)
    assert_frame_equal(clf.predict_proba(test), again.predict_proba(test))
    assert again.get_params()["word_ngrams"] == 2
    pick = pickle.loads(pickle.dumps(clf))
    assert_frame_equal(clf.predict_proba(test), pick.predict_proba(test))
    unfitted = pickle.loads(pickle.dumps(mmq.Classifier()))
    with pytest.raises(mmq.NotFittedError):
        unfitted.predict(["x"])


def test_explain_lists_tokens(topics):
    train, _ = split(topics)
    clf = fit(train, minn=2, maxn=3)
    e = clf.explain(train["text"][0])
    assert set(e["kind"]) <= {"Word", "WordNgram", "CharNgram"}
    assert e["score"].is_sorted(descending=True)
    assert "CharNgram" in set(e["kind"])


def test_cjk_text_classifies():
    rng = np.random.default_rng(0)
    a, b = "猫狗鱼鸟马", "车船飞机路"
    rows = [("".join(rng.choice(list(a if i % 2 else b), 6)), "animal" if i % 2 else "vehicle") for i in range(400)]
    df = pl.DataFrame(rows, schema=["text", "label"], orient="row")
    clf = mmq.Classifier(dim=8, epoch=10, lr=0.5, word_ngrams=2, threads=1, progress=False).fit(df)
    assert clf.predict(["猫鱼马狗"])["label"][0] == "animal"
    assert clf.predict(["飞机车船"])["label"][0] == "vehicle"
