"""Incremental training (partial_fit), row embeddings (embed) and nearest words: against
training on all rows at once, a NumPy forward pass, and the official fastText's
get_sentence_vector / get_nearest_neighbors on an imported model."""
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

import mmq
import mmq.fasttext as ft
from mmq.errors import InvalidInputError, InvalidParameterError

from conftest import shared_data

PARAMS = dict(dim=20, word_ngrams=2, epoch=5, lr=0.5, threads=2, seed=0, progress=False)


@pytest.fixture(scope="module")
def ag():
    df = shared_data("ag_news_small.parquet")
    return df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "test")


def test_two_halves_reach_what_the_whole_set_reaches(ag):
    tr, te = ag
    whole = mmq.Classifier(**PARAMS).fit(tr).test(te).precision
    half = len(tr) // 2
    clf = mmq.Classifier(**PARAMS).fit(tr[:half])
    first = clf.test(te).precision
    rows_before = clf._model.n_rows
    clf.partial_fit(tr[half:])
    both = clf.test(te).precision
    assert clf._model.n_rows > rows_before  # the second half's new tokens got rows
    assert both > first and both >= whole - 0.015, (first, both, whole)


def test_new_labels_are_appended_and_learned(ag):
    tr, te = ag
    first_labels = sorted(tr["label"].unique().to_list())[:3]
    old = tr.filter(pl.col("label").is_in(first_labels))
    new = tr.filter(~pl.col("label").is_in(first_labels))
    for loss in ("softmax", "ns", "ova"):
        clf = mmq.Classifier(**{**PARAMS, "loss": loss}).fit(old)
        labels = clf.labels
        clf.partial_fit(pl.concat([new, old.sample(len(new), seed=0)]))
        assert clf.labels[:3] == labels and set(clf.labels) == set(tr["label"].unique())
        r = clf.test(te)
        recall = dict(zip(r.per_label["label"], r.per_label["recall"]))[new["label"][0]]
        assert r.precision > 0.7 and recall > 0.5, (loss, r.precision, recall)


def test_hs_refuses_new_labels_and_bad_calls_are_named(ag, topics):
    tr, _ = ag
    labels = sorted(tr["label"].unique().to_list())
    clf = mmq.Classifier(**{**PARAMS, "loss": "hs"}).fit(tr.filter(pl.col("label") != labels[0]))
    with pytest.raises(InvalidParameterError, match="cannot add labels"):
        clf.partial_fit(tr)
    clf.partial_fit(tr.filter(pl.col("label") != labels[0]).head(300), epoch=1)  # known labels: fine
    for kw, says in ((dict(epoch=0), "epoch must"), (dict(lr=-1.0), "lr must"), (dict(lr=float("nan")), "lr must")):
        with pytest.raises(InvalidParameterError, match=says):
            clf.partial_fit(tr.head(10), **kw)
    sk = mmq.Classifier(**PARAMS).fit(tr["text"].to_list()[:500], tr["label"].to_list()[:500])
    with pytest.raises(InvalidParameterError, match="fit\\(X, y\\)"):
        sk.partial_fit(tr.head(10))
    fresh = mmq.Classifier(**PARAMS).partial_fit(tr.head(500))  # unfitted: a fit
    assert fresh.labels
    with pytest.raises(InvalidParameterError, match="needs a fitted model"):
        mmq.Classifier(**PARAMS).partial_fit(tr.head(10), frozen=True)
    train = topics.filter(pl.col("split") == "train")
    deep = mmq.Classifier(dim=8, epoch=1, fusion="deepset", dense={"image": mmq.PQ(m=4, k=8)}, progress=False)
    with pytest.raises(InvalidParameterError, match="not yet with fusion='deepset'"):
        deep.fit(train).partial_fit(train)


def test_partial_fit_keeps_the_dense_columns_of_discrete_fusion(topics):
    train, test = topics.filter(pl.col("split") == "train"), topics.filter(pl.col("split") == "test")
    clf = mmq.Classifier(dim=16, epoch=5, lr=0.5, dense={"image": mmq.PQ(m=8, k=16)}, progress=False)
    clf.fit(train[:1000])
    q = clf.dense["image"]
    clf.partial_fit(train[1000:])
    assert clf.dense["image"] is q or np.array_equal(clf._model.dense_quantizer(0).centroids, q._q.centroids)
    assert clf.test(test).precision > 0.8


def test_embed_is_the_models_forward_pass(ag):
    tr, te = ag
    clf = mmq.Classifier(**PARAMS).fit(tr)
    texts = te["text"].head(50).to_list()
    got = clf.embed(texts)
    assert got.shape == (50, 20) and got.dtype == np.float32
    m = clf._model
    for row, ids in zip(got, clf.tokenize(texts).to_list()):
        rows = m.embeddings([int(i) for i in ids])
        rows = rows[~np.isnan(rows).any(axis=1)]
        np.testing.assert_allclose(row, rows.mean(axis=0), rtol=1e-5, atol=1e-6)
    # the frame API gives the same
    np.testing.assert_array_equal(clf.embed(te.head(50)), got)
    # the hidden vector is what the output layer reads: softmax of it gives predict_proba
    scores = got @ m.output_matrix().T
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p, clf.predict_proba(texts).to_numpy(), atol=1e-5)


def test_nearest_matches_a_numpy_search(ag):
    tr, _ = ag
    clf = mmq.Classifier(**PARAMS).fit(tr)
    words = list(dict.fromkeys(w for t in tr["text"].head(300).to_list() for w in t.split()))
    got = clf.nearest("oil", k=5, words=words)
    vecs = clf.word_vectors(words)
    q = clf.word_vectors(["oil"])[0]
    norms = np.linalg.norm(vecs, axis=1)
    sims = np.where(norms > 0, vecs @ q / (np.where(norms > 0, norms, 1) * np.linalg.norm(q)), -np.inf)
    order = [i for i in np.argsort(-sims, kind="stable") if words[i] != "oil"][:5]
    assert [w for _, w in got] == [words[i] for i in order]
    np.testing.assert_allclose([s for s, _ in got], sims[order], rtol=1e-5)
    with pytest.raises(InvalidParameterError, match="candidate words"):
        clf.nearest("oil")
    with pytest.raises(InvalidParameterError, match="list of words"):
        clf.word_vectors("oil")
    with pytest.raises(InvalidInputError, match="word 1"):
        clf.word_vectors(["a", 3])


def test_embed_and_nearest_agree_with_the_official_fasttext(ag, tmp_path):
    fasttext = pytest.importorskip("fasttext")
    tr, te = ag
    train_txt = tmp_path / "train.txt"
    train_txt.write_text("".join(f"__label__{y} {' '.join(t.split())}\n" for t, y in zip(tr["text"], tr["label"])))
    path = tmp_path / "m.bin"
    # a fresh process: fastText 0.9.3 fails with NaN on a second training in one process
    script = (f"import fasttext\nm = fasttext.train_supervised(input={str(train_txt)!r}, dim=16, epoch=3, lr=0.2, "
              f"minn=3, maxn=5, bucket=100000, thread=1, verbose=0)\nm.save_model({str(path)!r})\n")
    subprocess.run([sys.executable, "-c", script], check=True)
    ref = fasttext.load_model(str(path))
    ours = ft.load_model(str(path))
    texts = [" ".join(t.split()) for t in te["text"].head(40).to_list()]
    want = np.stack([ref.get_sentence_vector(t) for t in texts])
    np.testing.assert_allclose(ours.classifier.embed(texts), want, atol=1e-6)
    for query in ("oil", "market", "football"):
        r = ref.get_nearest_neighbors(query, k=5)
        o = ours.get_nearest_neighbors(query, k=5)
        assert [w for _, w in o] == [w for _, w in r], (query, o, r)
        np.testing.assert_allclose([s for s, _ in o], [s for s, _ in r], atol=1e-5)
