"""Model compression (fastText's quantize): the size and accuracy target on ag_news_small,
the rows' reconstruction error against faiss's product quantizer, the cutoff against a
NumPy reference, and the quantized file through every way of loading it."""
import pickle
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

import mmq
import mmq.fasttext as ft
from mmq.errors import InvalidParameterError

from conftest import shared_data


@pytest.fixture(scope="module")
def ag():
    df = shared_data("ag_news_small.parquet")
    return df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "test")


@pytest.fixture(scope="module")
def trained(ag, tmp_path_factory):
    tr, _ = ag
    clf = mmq.Classifier(dim=50, word_ngrams=2, epoch=5, lr=0.5, threads=2, seed=0, progress=False).fit(tr)
    path = tmp_path_factory.mktemp("q") / "model.mmq"
    clf.save(path)
    return path


def _rows(clf) -> dict:
    m = clf._model
    ids = m.token_ids()
    return dict(zip(ids.tolist(), m.embeddings([int(i) for i in ids])))


def test_a_fifth_of_the_file_at_half_a_point(ag, trained, tmp_path):
    """The issue's target: at most 1/5 of the model's file, at most 0.5 point lost."""
    tr, te = ag
    clf = mmq.load(trained)
    before = clf.test(te).precision
    clf.quantize()
    assert clf.quantized == dict(cutoff=0, dsub=2, qnorm=False, qout=False, seed=1234)
    out = tmp_path / "model.ftz"
    clf.save(out)
    ratio = out.stat().st_size / trained.stat().st_size
    after = mmq.load(out).test(te).precision
    assert ratio <= 1 / 5, ratio
    assert after >= before - 0.005, (before, after)


def test_rows_are_quantized_as_well_as_faiss_does(trained):
    """Reconstruction error of the input rows against faiss's ProductQuantizer with the
    same sub-vectors (M = dim / 2) and 256 centroids each."""
    faiss = pytest.importorskip("faiss")
    clf = mmq.load(trained)
    dense = _rows(clf)
    q = mmq.load(trained).quantize()
    qrows = _rows(q)
    assert set(qrows) == set(dense)
    ids = sorted(dense)
    x = np.stack([dense[i] for i in ids]).astype(np.float32)
    y = np.stack([qrows[i] for i in ids])
    ours = float(((x - y) ** 2).sum(axis=1).mean())
    pq = faiss.ProductQuantizer(x.shape[1], x.shape[1] // 2, 8)
    pq.train(x)
    ref = pq.decode(pq.compute_codes(x))
    theirs = float(((x - ref) ** 2).sum(axis=1).mean())
    assert ours <= 1.1 * theirs, (ours, theirs)


def test_cutoff_keeps_the_rows_of_largest_norm_and_qnorm_quantizes_norms(trained):
    clf = mmq.load(trained)
    dense = _rows(clf)
    ids = np.array(sorted(dense))
    norms = np.array([np.linalg.norm(dense[i]) for i in ids])
    keep = set(ids[np.argsort(-norms, kind="stable")[:5000]].tolist())
    q = mmq.load(trained).quantize(cutoff=5000, qnorm=True)
    qrows = _rows(q)
    assert set(qrows) == keep
    x = np.stack([dense[i] for i in sorted(keep)])
    y = np.stack([qrows[i] for i in sorted(keep)])
    cos = (x * y).sum(axis=1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    ratio = np.linalg.norm(y, axis=1) / np.linalg.norm(x, axis=1)
    assert cos.mean() > 0.9 and abs(np.median(ratio) - 1) < 0.1, (cos.mean(), np.median(ratio))


def test_retrain_after_a_cutoff_and_every_way_to_load(ag, trained, tmp_path):
    tr, te = ag
    clf = mmq.load(trained)
    before = clf.test(te).precision
    clf.quantize(tr, cutoff=20000, retrain=True, qnorm=True, qout=True)
    assert clf._model.n_rows == 20000
    assert clf.test(te).precision >= before - 0.015
    path = tmp_path / "q.ftz"
    clf.save(path)
    want = clf.predict(te)
    assert mmq.load(path).predict(te).equals(want)
    assert pickle.loads(pickle.dumps(clf)).predict(te).equals(want)
    got = te.select(mmq.predict(str(path)).alias("p"))["p"]
    assert got.to_list() == want["label"].to_list()
    # The quantized model keeps working as a model: it continues training (dense again).
    more = mmq.load(path).partial_fit(tr.head(500), epoch=1)
    assert more.quantized is None and more._model.n_rows > 20000


def test_the_cli_quantizes_as_fasttext_does(ag, trained, tmp_path):
    tr, te = ag
    stem = tmp_path / "model"
    (tmp_path / "model.mmq").write_bytes(trained.read_bytes())
    train_txt, test_txt = tmp_path / "train.txt", tmp_path / "test.txt"
    for df, p in ((tr, train_txt), (te.head(500), test_txt)):
        p.write_text("".join(f"__label__{y} {' '.join(t.split())}\n" for t, y in zip(df["text"], df["label"])))
    cli = [sys.executable, "-m", "mmq.cli"]
    r = subprocess.run(cli + ["quantize", "-output", str(stem), "-input", str(train_txt), "-cutoff", "10000",
                              "-retrain", "-qnorm", "-quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ftz = tmp_path / "model.ftz"
    assert mmq.load(ftz).quantized["cutoff"] == 10000
    r = subprocess.run(cli + ["test", str(ftz), str(test_txt)], capture_output=True, text=True)
    assert r.returncode == 0 and "P@1" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(cli + ["quantize", "-output", str(tmp_path / "absent")], capture_output=True, text=True)
    assert r.returncode == 2 and "no model to quantize" in r.stderr


def test_fasttexts_tutorial_flow_runs_on_the_shim(ag, tmp_path):
    """fastText's tutorial: train_supervised, test, quantize(input, qnorm, retrain,
    cutoff), test, save_model, load_model."""
    tr, te = ag
    train_txt, test_txt = tmp_path / "train.txt", tmp_path / "test.txt"
    for df, p in ((tr, train_txt), (te.head(1000), test_txt)):
        p.write_text("".join(f"__label__{y} {' '.join(t.split())}\n" for t, y in zip(df["text"], df["label"])))
    # one thread: Hogwild with two is not reproducible, and this flow's cost varies by run
    model = ft.train_supervised(input=str(train_txt), epoch=5, lr=0.5, wordNgrams=2, dim=20, verbose=0, thread=1)
    n, p, _ = model.test(str(test_txt))
    assert not model.is_quantized()
    model.quantize(input=str(train_txt), qnorm=True, retrain=True, cutoff=20000)
    assert model.is_quantized()
    n2, p2, _ = model.test(str(test_txt))
    # A cutoff to 20k rows with retraining costs 1.1 points on ag_news_small's 7,600 test
    # rows (benches/quantize.py; fastText's own: 1.0); on these 1,000 rows the 95% noise of
    # a difference is about 1.5 points more. (The ≤ 0.5-point target of plain quantize is
    # test_a_fifth_of_the_file_at_half_a_point.)
    assert n2 == n and p2 >= p - 0.035, (p, p2)
    model.save_model(str(tmp_path / "model.ftz"))
    again = ft.load_model(str(tmp_path / "model.ftz"))
    assert again.is_quantized() and again.test(str(test_txt)) == (n2, p2, p2)


def test_bad_options_are_named(trained, topics):
    clf = mmq.load(trained)
    for kw, says in ((dict(dsub=0), "dsub"), (dict(cutoff=-1), "cutoff"), (dict(qnorm=1), "qnorm"),
                     (dict(retrain=True), "retrain=True trains again"), (dict(dsub=51), "dsub = 51")):
        with pytest.raises(mmq.MmqError, match=says):
            clf.quantize(**kw)
    clf.quantize()
    with pytest.raises(InvalidParameterError, match="quantized already"):
        clf.quantize()
    with pytest.raises(mmq.NotFittedError):
        mmq.Classifier().quantize()
    train = topics.filter(pl.col("split") == "train")
    deep = mmq.Classifier(dim=8, epoch=1, fusion="gated", dense=["image"], progress=False).fit(train)
    with pytest.raises(InvalidParameterError, match="cutoff works with text"):
        deep.quantize(cutoff=5)


KINDS = {
    "gated": dict(fusion="gated", dense=["image"]),
    "deepset": dict(fusion="deepset", dense={"image": ("PQ", 8, 16)}),
    "attention": dict(fusion="attention", dense={"image": ("PQ", 8, 16)}),
    "gblend": dict(fusion="discrete", blend="gblend", dense={"image": ("PQ", 8, 16)}),
    "late": dict(fusion="late", dense=["image"], head="linear"),
    "concat": dict(fusion="concat", dense=["image"], head="linear"),
}


@pytest.fixture(scope="module")
def mm():
    from mmq.datasets import make_topics

    df = make_topics(n_rows=4000, dense_dim=16, seed=3)
    return df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "test")


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_model_kind_quantizes(mm, kind, tmp_path):
    """quantize for continuous fusion, the set models, late and concat fusion: a smaller
    file, the same predictions after save/load and pickle, accuracy kept."""
    train, test = mm
    kw = dict(KINDS[kind])
    if isinstance(kw["dense"], dict):
        kw["dense"] = {n: mmq.PQ(m=m, k=k, seed=0) for n, (_, m, k) in kw["dense"].items()}
    clf = mmq.Classifier(dim=32, epoch=5, lr=0.2, word_ngrams=2, threads=1, seed=0, progress=False, **kw)
    clf.fit(train, valid=test if kind == "late" else None)
    before = clf.test(test).precision
    clf.save(tmp_path / "plain.mmq")
    with pytest.raises(InvalidParameterError, match="retrain"):
        clf.quantize(train, cutoff=100, retrain=True) if kind not in ("late", "concat") else \
            clf.quantize(train, retrain=True)
    clf.quantize(qout=kind not in ("late", "concat"))
    assert clf.quantized is not None and clf.quantized["dsub"] == 2
    with pytest.raises(InvalidParameterError, match="quantized already"):
        clf.quantize()
    after = clf.test(test).precision
    assert after >= before - 0.03, (before, after)
    clf.save(tmp_path / "q.mmq")
    assert (tmp_path / "q.mmq").stat().st_size < (tmp_path / "plain.mmq").stat().st_size
    p = clf.predict_proba(test).to_numpy()
    back = mmq.load(tmp_path / "q.mmq")
    assert back.quantized == clf.quantized
    np.testing.assert_array_equal(back.predict_proba(test).to_numpy(), p)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).predict_proba(test).to_numpy(), p)
    if kind in ("gated", "deepset", "attention", "gblend", "concat"):
        with pytest.raises(InvalidParameterError, match="cutoff"):
            mmq.load(tmp_path / "plain.mmq").quantize(cutoff=10)
