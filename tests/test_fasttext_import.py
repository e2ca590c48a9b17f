"""Importing fastText's own model files (.bin, and .ftz from quantize): models trained by
the official fastText package (PyPI ``fasttext``) on ag_news_small predict the same
labels with probabilities within 1e-5 in mmq, for every loss, with and without char
n-grams, with words below minCount, and compressed."""
import struct
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

import mmq
import mmq.fasttext as ft
from mmq.errors import ModelFileError

from conftest import shared_data

fasttext = pytest.importorskip("fasttext")

N_TEST = 400


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ftimport")
    df = shared_data("ag_news_small.parquet")
    paths = {}
    for split in ("train", "test"):
        part = df.filter(pl.col("split") == split)
        if split == "test":
            part = part.head(N_TEST)
        lines = (f"__label__{y} {' '.join(t.split())}\n" for t, y in zip(part["text"], part["label"]))
        p = d / f"{split}.txt"
        p.write_text("".join(lines))
        paths[split] = p
    paths["dir"] = d
    return paths


def _texts(files):
    return [line.split(" ", 1)[1].rstrip("\n") for line in files["test"].read_text().splitlines(keepends=True)]


def _train(path, quantize=None, **kw):
    """Train (and with ``quantize``, compress) a model with the official fastText, saved to
    ``path``, and load it back with fastText. Each training runs in a process of its own:
    in fastText 0.9.3 a second ``train_supervised`` in one process stops with
    "Encountered NaN" most of the time (measured here: 1 of 4 runs in one process
    succeed, 4 of 4 in fresh ones)."""
    args = {**dict(dim=16, epoch=3, lr=0.2, thread=1, verbose=0), **kw}
    script = (f"import fasttext\nm = fasttext.train_supervised(**{args!r})\n"
              + (f"m.quantize(input={kw['input']!r}, retrain=False, **{quantize!r})\n" if quantize else "")
              + f"m.save_model({str(path)!r})\n")
    subprocess.run([sys.executable, "-c", script], check=True)
    return fasttext.load_model(str(path))


# (name, training arguments): every loss, char n-grams, words only with a minCount.
VARIANTS = [
    ("softmax", dict(loss="softmax", wordNgrams=2, bucket=200_000)),
    ("ns_char", dict(loss="ns", neg=5, minn=2, maxn=4, bucket=100_000)),
    ("hs", dict(loss="hs", wordNgrams=2, bucket=200_000)),
    ("ova_char", dict(loss="ova", minn=3, maxn=5, wordNgrams=2, bucket=100_000)),
    ("words_mincount", dict(loss="softmax", minCount=3)),
]


@pytest.fixture(scope="module")
def trained(files):
    out = {}
    for name, kw in VARIANTS:
        path = files["dir"] / f"{name}.bin"
        out[name] = (_train(path, input=str(files["train"]), **kw), path)
    return out


def _same_predictions(ref, ours, texts, k=-1):
    """Same labels with probabilities within 1e-5, rank by rank. Where two labels have
    the same probability (ns and ova read fastText's sigmoid table, so ties happen)
    fastText's heap orders them its own way: a rank may then hold the other one."""
    want_labels, want_probs = ref.predict(texts, k=k)
    got_labels, got_probs = ours.predict(texts, k=k)
    every = ref.predict(texts, k=-1)
    for i, (wl, wp, gl, gp) in enumerate(zip(want_labels, want_probs, got_labels, got_probs)):
        assert len(wl) == len(gl), (i, wl, gl)
        np.testing.assert_allclose(np.asarray(gp, np.float64), np.asarray(wp, np.float64), rtol=0, atol=1e-5)
        full = dict(zip(every[0][i], every[1][i]))
        for w, g in zip(wl, gl):
            assert w == g or abs(full[w] - full[g]) <= 1e-6, (i, wl, gl, wp, gp)


@pytest.mark.parametrize("name", [v[0] for v in VARIANTS])
def test_a_fasttext_bin_predicts_identically(trained, files, name):
    ref, path = trained[name]
    ours = ft.load_model(str(path))
    texts = _texts(files)
    _same_predictions(ref, ours, texts)
    _same_predictions(ref, ours, texts, k=1)
    assert ours.get_labels() == ref.get_labels()
    assert ours.get_words() == ref.get_words()
    words, counts = ours.get_words(include_freq=True)
    np.testing.assert_array_equal(counts, ref.get_words(include_freq=True)[1])
    # Vectors: fastText's sentence and word vectors from the same rows.
    for t in texts[:20]:
        np.testing.assert_allclose(ours.get_sentence_vector(t), ref.get_sentence_vector(t), atol=1e-6)
    for w in ["the", "Iraq", "zzqxv", words[5]]:
        np.testing.assert_allclose(ours.get_word_vector(w), ref.get_word_vector(w), atol=1e-6)


def test_quantized_ftz_predicts_identically(trained, files):
    for name, kw in [("q_plain", dict(qnorm=False)), ("q_cutoff", dict(qnorm=True, cutoff=5000))]:
        path = files["dir"] / f"{name}.ftz"
        ref = _train(path, quantize=kw, input=str(files["train"]), wordNgrams=2, minn=2, maxn=3, bucket=50_000)
        ours = ft.load_model(str(path))
        _same_predictions(ref, ours, _texts(files))


def test_imported_model_is_a_classifier_everywhere(trained, files, tmp_path):
    ref, path = trained["softmax"]  # no ties (see _same_predictions)
    clf = mmq.load(path)
    texts = _texts(files)
    test = pl.DataFrame({"text": texts})
    top = clf.predict(test)["label"].to_list()
    want = [lab[0].removeprefix("__label__") for lab in ref.predict(texts, k=1)[0]]
    assert top == want
    # Saved in mmq's format (the dictionary travels with it) and pickled: same answers.
    clf.save(tmp_path / "imported.mmq")
    back = mmq.load(tmp_path / "imported.mmq")
    np.testing.assert_array_equal(back.predict_proba(test).to_numpy(), clf.predict_proba(test).to_numpy())
    import pickle

    again = pickle.loads(pickle.dumps(clf))
    assert again.predict(test)["label"].to_list() == top
    # The Polars expression reads the .bin too.
    out = test.select(mmq.predict(str(path), text="text"))
    assert out.to_series().to_list() == top
    # The CLI predicts from it.
    from mmq.cli import main

    res = tmp_path / "pred.txt"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        main(["predict", str(path), str(files["test"])])
    assert [line.strip() for line in buf.getvalue().splitlines()] == ["__label__" + v for v in top]
    assert not res.exists()


def test_broken_and_foreign_fasttext_files_are_named(trained, files, tmp_path):
    _, path = trained["softmax"]
    raw = path.read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(raw[:30])
    with pytest.raises(ModelFileError, match=r"fastText model file: the file ends inside wordNgrams \(byte 28 of 30"):
        mmq.load(cut)
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="the input matrix's rows must be in"):
        mmq.load(cut)
    newer = tmp_path / "v13.bin"
    newer.write_bytes(raw[:4] + struct.pack("<i", 13) + raw[8:])
    with pytest.raises(ModelFileError, match="format version 13 is not supported"):
        mmq.load(newer)
    longer = tmp_path / "longer.bin"
    longer.write_bytes(raw + b"\0\0")
    with pytest.raises(ModelFileError, match="2 bytes follow the output matrix"):
        mmq.load(longer)
    # A word-vector model (skipgram) is not a classifier.
    sg_path = tmp_path / "sg.bin"
    script = (f"import fasttext\nfasttext.train_unsupervised(input={str(files['test'])!r}, model='skipgram', dim=8, "
              f"epoch=1, minCount=1, thread=1, verbose=0).save_model({str(sg_path)!r})\n")
    subprocess.run([sys.executable, "-c", script], check=True)
    with pytest.raises(ModelFileError, match="skipgram model .*supervised classifiers only"):
        mmq.load(sg_path)
    # A dictionary that claims more entries than the file could hold is refused before
    # anything is allocated (dictionary size: after magic, version and the arguments).
    at = 8 + 12 * 4 + 8
    huge = tmp_path / "huge.bin"
    huge.write_bytes(raw[:at] + struct.pack("<i", 2**31 - 1) + raw[at + 4:])
    with pytest.raises(ModelFileError, match="dictionary size must be in"):
        mmq.load(huge)


def test_a_qout_ftz_with_a_quantized_output_matrix_predicts_identically(tmp_path):
    """``quantize(qout=True)`` compresses the output matrix too; fastText needs at least
    256 of its rows (labels) for that, so the rows here are synthetic: 300 labels, each
    with words of its own and words shared with its neighbours."""
    rng = np.random.default_rng(3)
    lines, texts = [], []
    for i in range(1500):
        y = i % 300
        words = [f"w{y}", f"v{y}", f"w{(y + 1) % 300}", f"common{rng.integers(20)}"]
        rng.shuffle(words)
        lines.append(f"__label__L{y} {' '.join(words)}\n")
        texts.append(" ".join(words))
    (tmp_path / "train.txt").write_text("".join(lines))
    for name, kw in [("qout", dict(qout=True)), ("qout_qnorm", dict(qout=True, qnorm=True))]:
        path = tmp_path / f"{name}.ftz"
        ref = _train(path, quantize=kw, input=str(tmp_path / "train.txt"), loss="softmax", epoch=5, lr=0.5,
                     wordNgrams=2, bucket=20_000)
        ours = ft.load_model(str(path))
        assert len(ours.get_labels()) == 300
        _same_predictions(ref, ours, texts[:300], k=5)
