"""explain_words: the drop in the label's log-probability when a word (with its char
n-grams and word n-grams) is left out — against a NumPy forward pass of the model's own
matrices, and for every loss and model kind of one text column."""
import numpy as np
import polars as pl
import pytest

import mmq
from mmq.datasets import make_topics


@pytest.fixture(scope="module")
def data():
    df = make_topics(n_rows=3000, dense_dim=16, seed=5)
    return df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "test")


def params(**kw):
    p = dict(dim=12, epoch=5, lr=0.5, word_ngrams=2, minn=2, maxn=4, threads=1, seed=0, progress=False)
    p.update(kw)
    return p


def numpy_logp(clf, text):
    """log softmax(W_out · mean of the input rows of the text's tokens known to the model)."""
    m = clf._model
    ids = clf.tokenize([text]).to_list()[0]
    rows = m.embeddings([int(i) for i in ids])
    h = rows[~np.isnan(rows).any(axis=1)].astype(np.float64).mean(axis=0)
    z = m.output_matrix().astype(np.float64) @ h
    return z - np.log(np.exp(z - z.max()).sum()) - z.max()


def test_word_scores_match_a_numpy_forward_pass(data):
    train, test = data
    clf = mmq.Classifier(**params()).fit(train)
    text = test["text"][0]
    label = clf.labels[2]
    got = clf.explain_words(text, label=label).sort("position")
    words = text.split()
    assert got["word"].to_list() == words
    j = clf.labels.index(label)
    full = numpy_logp(clf, text)[j]
    want = [full - numpy_logp(clf, " ".join(words[:i] + words[i + 1:]))[j] for i in range(len(words))]
    np.testing.assert_allclose(got["score"].to_numpy(), want, atol=2e-4)
    # Default label: the most probable one; largest scores first.
    top = clf.predict([text])["label"][0]
    e = clf.explain_words(text)
    assert e["score"].is_sorted(descending=True)
    j = clf.labels.index(top)
    assert e.filter(pl.col("position") == 0)["score"][0] == pytest.approx(
        numpy_logp(clf, text)[j] - numpy_logp(clf, " ".join(words[1:]))[j], abs=2e-4)


@pytest.mark.parametrize("kw", [dict(loss="hs"), dict(loss="ns"), dict(loss="ova"), dict(head="linear", idf=True)])
def test_every_loss_and_head_gets_real_scores(data, kw):
    train, test = data
    clf = mmq.Classifier(**params(**kw)).fit(train)
    text = test["text"][1]
    e = clf.explain_words(text)
    assert e.height == len(text.split()) and e["score"].is_finite().all()
    assert e["score"].abs().max() > 1e-3  # not all zeros (token-level explain is, for hs)
    # Leaving out the words that support the label most lowers its probability.
    label = clf.labels[int(np.argmax(clf._proba(pl.DataFrame({"text": [text]}), "text")[0]))]
    kept = " ".join(w for i, w in enumerate(text.split()) if i not in set(e.head(3)["position"].to_list()))
    p = clf.predict_proba([text, kept])
    assert p[label][1] < p[label][0]


def test_multimodal_models_keep_the_vector_in_every_variant(data):
    train, test = data
    row = test.row(0, named=True)
    disc = mmq.Classifier(**params(), dense={"image": mmq.PQ(m=4, k=8)}).fit(train)
    e = disc.explain_words(row["text"], image=row["image"])
    assert e.height == len(row["text"].split()) and e["score"].is_finite().all()
    assert disc.explain_words(row["text"], image=None).height == e.height  # a missing image
    gated = mmq.Classifier(**params(lr=0.1), fusion="gated", dense=["image"]).fit(train)
    assert gated.explain_words(row["text"], image=row["image"])["score"].is_finite().all()
    with pytest.raises(mmq.InvalidInputError, match="dense value of 'image'"):
        gated.explain_words(row["text"])
    with pytest.raises(mmq.InvalidInputError, match="vector of 'image'"):
        gated.explain_words(row["text"], image=None)
    with pytest.raises(mmq.InvalidParameterError, match="unknown label"):
        disc.explain_words(row["text"], label="nope", image=row["image"])
