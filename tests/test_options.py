"""Grouped options: Classifier(tokenizer=Tokenizer(...), fusion=Fusion(...), blend=GBlend(...))
train the same model as the flat keywords, and conflicts between the two are errors."""
import pickle

import numpy as np
import polars as pl
import pytest

import mmq
from mmq.errors import InvalidParameterError


@pytest.fixture(scope="module")
def data():
    from mmq.datasets import make_topics

    df = make_topics(n_rows=1500, dense_dim=8, seed=3)
    return df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "test")


BASE = dict(dim=8, epoch=3, threads=1, seed=1, progress=False)


def proba(clf, test):
    return clf.predict_proba(test).drop("text", strict=False).to_numpy()


@pytest.mark.parametrize("grouped, flat", [
    (dict(tokenizer=mmq.Tokenizer(word_ngrams=2, minn=2, maxn=4, lowercase=True, bucket=50_000)),
     dict(word_ngrams=2, minn=2, maxn=4, lowercase=True, bucket=50_000)),
    (dict(dense={"image": mmq.PQ(m=4, k=8)}, fusion=mmq.Fusion("discrete", alpha=0.5)),
     dict(dense={"image": mmq.PQ(m=4, k=8)}, fusion="discrete", alpha=0.5)),
    (dict(dense={"image": mmq.PQ(m=4, k=8)}, fusion=mmq.Fusion("deepset", pool="max", outer_pool="max")),
     dict(dense={"image": mmq.PQ(m=4, k=8)}, fusion="deepset", pool="max", outer_pool="max")),
    (dict(dense=["image"], fusion=mmq.Fusion("gated", rank=4)), dict(dense=["image"], fusion="gated", rank=4)),
    (dict(dense={"image": mmq.PQ(m=4, k=8)}, fusion="deepset", blend=mmq.GBlend(holdout=0.2, window=2)),
     dict(dense={"image": mmq.PQ(m=4, k=8)}, fusion="deepset", blend="gblend", holdout=0.2, blend_window=2)),
    (dict(dense={"image": mmq.PQ(m=4, k=8)}, fusion="deepset", blend=mmq.GBlend(offline=True)),
     dict(dense={"image": mmq.PQ(m=4, k=8)}, fusion="deepset", blend="gblend_offline")),
])
def test_grouped_options_train_the_flat_model(data, grouped, flat, tmp_path):
    train, test = data
    a = mmq.Classifier(**BASE, **grouped).fit(train)
    b = mmq.Classifier(**BASE, **flat).fit(train)
    np.testing.assert_allclose(proba(a, test), proba(b, test), rtol=1e-5, atol=1e-6)
    # the file and the pickle hold the same model (loaded back with flat keywords)
    a.save(tmp_path / "a.mmq")
    np.testing.assert_allclose(proba(mmq.load(tmp_path / "a.mmq"), test), proba(b, test), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(proba(pickle.loads(pickle.dumps(a)), test), proba(b, test), rtol=1e-5, atol=1e-6)


def test_a_group_field_and_a_flat_keyword_that_disagree_are_an_error():
    with pytest.raises(InvalidParameterError, match=r"word_ngrams=3 and tokenizer=Tokenizer\(word_ngrams=2\)"):
        mmq.Classifier(word_ngrams=3, tokenizer=mmq.Tokenizer(word_ngrams=2))
    with pytest.raises(InvalidParameterError, match=r"pool='sum' and fusion=Fusion\(pool='max'\)"):
        mmq.Classifier(pool="sum", fusion=mmq.Fusion("deepset", pool="max"))
    with pytest.raises(InvalidParameterError, match=r"holdout=0.3 and blend=GBlend\(holdout=0.2\)"):
        mmq.Classifier(holdout=0.3, fusion="deepset", blend=mmq.GBlend(holdout=0.2))
    # the same value twice, or a flat keyword at its default, is fine
    mmq.Classifier(word_ngrams=2, tokenizer=mmq.Tokenizer(word_ngrams=2))
    mmq.Classifier(pool="mean", fusion=mmq.Fusion("deepset", pool="max"))


def test_groups_are_checked_like_the_flat_keywords():
    with pytest.raises(InvalidParameterError, match="minn"):
        mmq.Classifier(tokenizer=mmq.Tokenizer(minn=-1))
    with pytest.raises(InvalidParameterError, match="fusion must be one of"):
        mmq.Classifier(fusion=mmq.Fusion("nope"))
    with pytest.raises(InvalidParameterError, match="tokenizer must be an mmq.Tokenizer"):
        mmq.Classifier(tokenizer={"word_ngrams": 2})
    with pytest.raises(InvalidParameterError, match="offline"):
        mmq.Classifier(fusion="deepset", blend=mmq.GBlend(offline="yes"))
    with pytest.raises(TypeError, match="ngrams"):
        mmq.Tokenizer(ngrams=2)
    # a combination that cannot work names both options, grouped or flat
    with pytest.raises(InvalidParameterError, match="blend=.*fusion="):
        mmq.Classifier(dense=["image"], fusion=mmq.Fusion("gated"), blend=mmq.GBlend())


def test_scikit_learn_sees_nested_parameters():
    sklearn_base = pytest.importorskip("sklearn.base")
    clf = mmq.Classifier(tokenizer=mmq.Tokenizer(word_ngrams=2), fusion=mmq.Fusion("deepset"), **BASE)
    p = clf.get_params()
    assert p["tokenizer__word_ngrams"] == 2 and p["fusion__mode"] == "deepset"
    assert "tokenizer__word_ngrams" not in clf.get_params(deep=False)
    c = sklearn_base.clone(clf)
    assert c.tokenizer == clf.tokenizer and c.tokenizer is not clf.tokenizer
    c.set_params(tokenizer__minn=2, tokenizer__maxn=4, fusion__pool="max")
    assert (c._o.minn, c._o.maxn, c._o.pool, clf._o.minn) == (2, 4, "max", 0)
    with pytest.raises(InvalidParameterError, match="not an option group"):
        mmq.Classifier().set_params(blend__holdout=0.2)
    with pytest.raises(InvalidParameterError, match="no option"):
        c.set_params(tokenizer__ngrams=3)
    assert repr(mmq.Tokenizer(minn=2)) == "Tokenizer(minn=2)"
