"""mmq.ensemble and autotune(..., ensemble=k): the mean of the members' probabilities,
checked against a NumPy mean of theirs; files, pickles and refusals."""
import pickle

import numpy as np
import polars as pl
import pytest

import mmq
from mmq.errors import InvalidParameterError, ModelFileError


@pytest.fixture(scope="module")
def data():
    from mmq.datasets import make_topics

    df = make_topics(n_rows=1500, dense_dim=8, seed=4)
    tr, te = df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "test")
    return tr, te.head(100), te.tail(te.height - 100)


@pytest.fixture(scope="module")
def members(data):
    tr, va, _ = data
    kw = dict(threads=1, seed=2, progress=False)
    text = mmq.Classifier(dim=8, epoch=3, lr=0.5, **kw).fit(tr.drop("image"))
    linear = mmq.Classifier(head="linear", epoch=3, minn=2, maxn=4, **kw).fit(tr.drop("image"))
    late = mmq.Classifier(head="linear", epoch=3, fusion="late", dense=["image"], **kw).fit(tr, valid=va)
    concat = mmq.Classifier(head="linear", epoch=3, fusion="concat", dense=["image"], **kw).fit(tr)
    return [text, linear, late, concat]


def named(clf, df, labels):
    return clf.predict_proba(df).select(labels).to_numpy()


def test_probabilities_are_the_members_mean(data, members, tmp_path):
    _, _, te = data
    e = mmq.ensemble(members)
    labels = e.labels
    ref = np.mean([named(m, te, labels) for m in members], axis=0)
    got = named(e, te, labels)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    top = np.array(labels)[ref.argmax(axis=1)]
    assert (e.predict(te)["label"].to_numpy() == top).all()
    assert e.test(te).precision == pytest.approx(float((top == te["label"].to_numpy()).mean()))
    e.save(tmp_path / "e.mmq")
    np.testing.assert_allclose(named(mmq.load(tmp_path / "e.mmq"), te, labels), got, rtol=1e-6)
    np.testing.assert_allclose(named(pickle.loads(pickle.dumps(e)), te, labels), got, rtol=1e-6)
    # an ensemble of ensembles is the flat ensemble of their members
    np.testing.assert_allclose(named(mmq.ensemble([mmq.ensemble(members[:2]), mmq.ensemble(members[2:])]), te,
                                     labels), got, rtol=1e-5, atol=1e-6)


def test_refusals(data, members, tmp_path):
    tr, _, te = data
    e = mmq.ensemble(members[:2])
    with pytest.raises(InvalidParameterError, match="non-empty list"):
        mmq.ensemble([])
    with pytest.raises(InvalidParameterError, match=r"models\[1\] is a str"):
        mmq.ensemble([members[0], "x"])
    gated = mmq.Classifier(dim=8, epoch=1, fusion="gated", dense=["image"], threads=1, progress=False).fit(tr)
    with pytest.raises(InvalidParameterError, match="cannot join an ensemble"):
        mmq.ensemble([members[0], gated])
    with pytest.raises(InvalidParameterError, match="not trained by fit"):
        e.fit(tr)
    with pytest.raises(InvalidParameterError, match="quantize its members"):
        e.quantize()
    with pytest.raises(InvalidParameterError, match="not served by the Polars expressions"):
        te.select(mmq.predict(e))
    # a file whose member list is damaged names it
    from mmq import _mmq
    import json
    h, parts = _mmq.unpack(e._model.to_bytes())
    bad = json.loads(h)
    bad["members"] = ["classifier", "nope"]
    (tmp_path / "bad.mmq").write_bytes(bytes(_mmq.pack(json.dumps(bad), [(n, bytes(b)) for n, b in parts])))
    with pytest.raises(ModelFileError, match="bad ensemble members"):
        mmq.load(tmp_path / "bad.mmq")


def test_autotune_ensemble(data):
    tr, va, te = data
    r = mmq.autotune(tr.drop("image"), va.drop("image"), budget_s=30, max_trials=4, ensemble=3, threads=1,
                     progress=False)
    assert r.classifier._o.fusion == "ensemble" and r.single is not r.classifier
    row = r.trials.filter(pl.col("stage") == "ensemble")
    assert row.height == 1 and row["accuracy"][0] == pytest.approx(r.classifier.test(va).precision)
    # the members are the 3 best trials; the single best is the best trial
    tried = r.trials.filter(pl.col("stage") != "ensemble")
    assert r.single.test(va).precision == pytest.approx(tried["accuracy"].max(), abs=1e-6)
    assert len(r.classifier._model.members) == 3
    with pytest.raises(InvalidParameterError, match="ensemble must be an integer"):
        mmq.autotune(tr, va, ensemble=0)
    one = mmq.autotune(tr.drop("image"), va.drop("image"), budget_s=30, max_trials=2, threads=1, progress=False)
    assert one.single is one.classifier
