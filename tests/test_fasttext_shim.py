"""mmq.fasttext: fastText's Python API over mmq models, checked against the official
fastText package (PyPI ``fasttext``) on the same files."""
import numpy as np
import polars as pl
import pytest

import mmq
import mmq.fasttext as ft
from mmq.errors import InvalidParameterError


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from mmq.datasets import make_topics

    d = tmp_path_factory.mktemp("ft")
    df = make_topics(n_rows=3000, dense_dim=8, seed=11)
    paths = {}
    for split in ("train", "test"):
        part = df.filter(pl.col("split") == split)
        p = d / f"{split}.txt"
        p.write_text("".join(f"__label__{y} {t}\n" for t, y in zip(part["text"], part["label"])))
        paths[split] = p
    return paths


@pytest.fixture(scope="module")
def model(files):
    return ft.train_supervised(input=str(files["train"]), lr=0.5, epoch=5, wordNgrams=2, dim=20, thread=1,
                               verbose=0)


def test_predict_has_fasttexts_shapes(model, files):
    labels, probs = model.predict("alpha beta gamma", k=2)
    assert isinstance(labels, tuple) and len(labels) == 2 and all(v.startswith("__label__") for v in labels)
    assert isinstance(probs, np.ndarray) and probs.dtype == np.float32 and probs[0] >= probs[1]
    many_labels, many_probs = model.predict(["alpha beta", "gamma delta"], k=3)
    assert isinstance(many_labels, list) and all(isinstance(r, list) and len(r) == 3 for r in many_labels)
    assert all(isinstance(p, np.ndarray) and p.shape == (3,) for p in many_probs)
    every, p = model.predict("alpha", k=-1)
    assert len(every) == len(model.labels) and p.sum() == pytest.approx(1.0, abs=1e-4)
    none, p = model.predict("alpha", threshold=1.01)
    assert none == () and p.shape == (0,)
    with pytest.raises(ValueError, match="one line at a time"):
        model.predict("two\nlines")
    with pytest.raises(InvalidParameterError, match="k must"):
        model.predict("x", k=0)


def test_scores_meet_the_official_fasttext(model, files):
    fasttext = pytest.importorskip("fasttext")
    ref = fasttext.train_supervised(input=str(files["train"]), lr=0.5, epoch=5, wordNgrams=2, dim=20, thread=1,
                                    verbose=0, seed=0)
    n, p, r = model.test(str(files["test"]))
    n_ref, p_ref, _ = ref.test(str(files["test"]))
    assert n == n_ref and p == r  # one label per line: precision@1 == recall@1
    assert p > 0.7 and abs(p - p_ref) < 0.03, (p, p_ref)
    per = model.test_label(str(files["test"]))
    per_ref = ref.test_label(str(files["test"]))
    assert set(per) == set(per_ref)
    for lab, v in per.items():
        assert set(v) == {"precision", "recall", "f1score"}
        assert abs(v["f1score"] - per_ref[lab]["f1score"]) < 0.06, (lab, v, per_ref[lab])
    assert sorted(model.get_labels()) == sorted(ref.get_labels())
    labs, freq = model.get_labels(include_freq=True)
    ref_labs, ref_freq = ref.get_labels(include_freq=True)
    assert dict(zip(labs, freq.tolist())) == dict(zip(ref_labs, ref_freq.tolist()))
    # the same words with the same counts as fastText's dictionary (minCount 1)
    words, counts = model.get_words(include_freq=True)
    ref_words, ref_counts = ref.get_words(include_freq=True)
    assert dict(zip(words, counts.tolist())) == dict(zip(ref_words, ref_counts.tolist()))
    assert model.get_dimension() == ref.get_dimension() == 20


def test_vectors_are_means_of_the_models_rows(model):
    clf = model.classifier
    ids = clf.tokenize(["alpha beta"]).to_list()[0]
    rows = clf._model.embeddings(ids)
    want = rows[~np.isnan(rows).any(axis=1)].mean(axis=0)
    np.testing.assert_allclose(model.get_sentence_vector("alpha beta"), want, rtol=1e-6)
    assert model.get_word_vector("zzz-never-seen").shape == (20,)
    inp, out = model.get_input_matrix(), model.get_output_matrix()
    assert inp.shape == (len(model.token_ids), 20) and out.shape == (len(model.labels), 20)
    np.testing.assert_array_equal(inp[:3], clf._model.embeddings(model.token_ids[:3].tolist()))


def test_save_load_round_trip_and_fasttext_files_are_imported(model, files, tmp_path):
    model.save_model(str(tmp_path / "m.mmq"))
    back = ft.load_model(str(tmp_path / "m.mmq"))
    texts = ["alpha beta gamma", "delta epsilon"]
    a, pa = model.predict(texts, k=2)
    b, pb = back.predict(texts, k=2)
    assert a == b and all(np.array_equal(x, y) for x, y in zip(pa, pb))
    with pytest.raises(mmq.errors.MmqError, match="loaded from a file"):
        back.get_words()
    fasttext = pytest.importorskip("fasttext")
    ref = fasttext.train_supervised(input=str(files["train"]), lr=0.5, epoch=5, wordNgrams=2, dim=20, thread=1,
                                    verbose=0, seed=0)
    ref.save_model(str(tmp_path / "ref.bin"))
    # A fastText file is imported (tests/test_fasttext_import.py checks it in depth).
    texts = ["alpha beta gamma", "delta epsilon"]
    imported = ft.load_model(str(tmp_path / "ref.bin"))
    assert imported.predict(texts, k=2)[0] == ref.predict(texts, k=2)[0]
    assert mmq.load(str(tmp_path / "ref.bin")).labels == [v.removeprefix("__label__") for v in ref.labels]


def test_unsupported_options_are_named(files):
    for kw in (dict(minCountLabel=1), dict(autotuneModelSize="2M"), dict(autotunePredictions=2),
               dict(minCount=2, autotuneValidationFile=str(files["test"])),
               dict(pretrainedVectors="v.vec", autotuneValidationFile=str(files["test"]))):
        with pytest.raises(InvalidParameterError, match=next(iter(kw))):
            ft.train_supervised(input=str(files["train"]), verbose=0, **kw)
    with pytest.raises(InvalidParameterError, match="input"):
        ft.train_supervised()


def test_autotune_through_the_shim(files):
    m = ft.train_supervised(input=str(files["train"]), autotuneValidationFile=str(files["test"]),
                            autotuneDuration=3, autotuneMetric="accuracy", thread=1, verbose=0)
    n, p, _ = m.test(str(files["test"]))
    assert n > 0 and p > 0.7
    with pytest.raises(InvalidParameterError, match="autotuneMetric"):
        ft.train_supervised(input=str(files["train"]), autotuneValidationFile=str(files["test"]),
                            autotuneMetric="precisionAtRecall:30", verbose=0)
