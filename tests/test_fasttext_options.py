"""fastText's training options -minCount, -pretrainedVectors, -saveOutput and -verbose:
in the Python API, the fastText shim and the CLI, checked against a Python reference of
their definitions and against the official fastText where it has the same thing."""
from collections import Counter

import numpy as np
import polars as pl
import pytest

import mmq
import mmq.fasttext as ft
from mmq.cli import main
from mmq.errors import InvalidInputError, InvalidParameterError


@pytest.fixture(scope="module")
def data():
    from mmq.datasets import make_topics

    df = make_topics(n_rows=3000, seed=5)
    return df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "test")


def write_ft(path, df):
    path.write_text("".join(f"__label__{y} {t}\n" for t, y in zip(df["text"], df["label"])))


def ids_of(texts, **cfg):
    return {i for row in mmq.tokenize(pl.Series(texts), **cfg).to_list() for i in row}


@pytest.mark.parametrize("minn,maxn", [(0, 0), (2, 4)])
def test_min_count_drops_exactly_the_rare_words_own_rows(data, minn, maxn):
    train, _ = data
    texts = train["text"].to_list()
    # a few rare words of our own, in otherwise common rows
    texts = texts[:-3] + [t + " zzrare1" for t in texts[-3:-1]] + [texts[-1] + " zzrare2"]
    df = train.with_columns(pl.Series("text", texts))
    cfg = dict(word_ngrams=2, minn=minn, maxn=maxn, bucket=1 << 20)
    clf = mmq.Classifier(dim=8, epoch=1, threads=1, min_count=3, progress=False, **cfg).fit(df)
    # The reference: every id the texts give, less the own ids of words seen < 3 times
    # (counted on whitespace words, EOS once per row), as fastText's dictionary does.
    counts = Counter(w for t in texts for w in t.split())
    rare = [w for w, c in counts.items() if c < 3]
    assert "zzrare1" in rare and "zzrare2" in rare
    word_id = {w: mmq.tokenize(pl.Series([w]), bucket=1 << 20)[0][0] for w in rare}
    expect = ids_of(texts, **cfg) - set(word_id.values())
    # (unless an n-gram of the same id is kept: a hash collision, absent here)
    got = set(int(i) for i in clf._fitted().token_ids())
    assert got == expect
    # char n-grams of a rare word are still there
    if maxn:
        assert ids_of(["zzrare1"], bucket=1 << 20, minn=2, maxn=4) - ids_of(["zzrare1"], bucket=1 << 20) <= got
    # saved with the model
    assert mmq.Classifier._from_rust(clf._fitted()).min_count == 3
    with pytest.raises(InvalidParameterError, match="min_count"):
        mmq.Classifier(min_count=0)
    with pytest.raises(InvalidParameterError, match="min_count"):
        mmq.Classifier(min_count=2, fusion="gated", dense=["image"])


def test_min_count_words_match_the_official_fasttext(data, tmp_path):
    fasttext = pytest.importorskip("fasttext")
    train, test = data
    write_ft(tmp_path / "train.txt", train)
    write_ft(tmp_path / "test.txt", test)
    kw = dict(input=str(tmp_path / "train.txt"), lr=0.5, epoch=5, wordNgrams=2, dim=20, thread=1, minCount=5)
    ref = fasttext.train_supervised(**kw, verbose=0)
    ours = ft.train_supervised(**kw, verbose=0)
    assert set(ours.get_words()) == set(ref.get_words())
    n, p_ref, _ = ref.test(str(tmp_path / "test.txt"))
    _, p_ours, _ = ours.test(str(tmp_path / "test.txt"))
    assert abs(p_ours - p_ref) < 0.03, (p_ours, p_ref)


def test_pretrained_vectors_are_the_starting_rows(data, tmp_path):
    train, test = data
    first = mmq.Classifier(dim=16, epoch=10, lr=0.5, threads=1, progress=False).fit(train)
    words = sorted({w for t in train["text"].to_list() for w in t.split()})
    vecs = first.word_vectors(words)
    vec = tmp_path / "w.vec"
    vec.write_text(f"{len(words)} 16\n" + "".join(
        w + " " + " ".join(f"{x:.6f}" for x in v) + " \n" for w, v in zip(words, vecs)))
    # a tiny learning rate leaves them where they start
    still = mmq.Classifier(dim=16, epoch=1, lr=1e-7, threads=1, progress=False,
                           pretrained_vectors=str(vec)).fit(train)
    np.testing.assert_allclose(still.word_vectors(words), vecs, atol=1e-4)
    # the same from a dict
    same = mmq.Classifier(dim=16, epoch=1, lr=1e-7, threads=1, progress=False,
                          pretrained_vectors=dict(zip(words, vecs))).fit(train)
    np.testing.assert_allclose(same.word_vectors(words), vecs, atol=1e-4)
    # and they help: one epoch from them beats one epoch from random rows
    warm = mmq.Classifier(dim=16, epoch=1, lr=0.1, threads=1, progress=False, pretrained_vectors=str(vec)).fit(train)
    cold = mmq.Classifier(dim=16, epoch=1, lr=0.1, threads=1, progress=False).fit(train)
    assert warm.test(test).precision > cold.test(test).precision + 0.05
    # errors name the file, the line, the dimension
    with pytest.raises(InvalidInputError, match="dimension 16; the model's dim is 8"):
        mmq.Classifier(dim=8, epoch=1, progress=False, pretrained_vectors=str(vec)).fit(train)
    bad = tmp_path / "bad.vec"
    bad.write_text("2 3\na 1 2 3\nb 1 2\n")
    with pytest.raises(InvalidInputError, match=r"bad.vec, line 3: expected a word and 3 numbers"):
        mmq.Classifier(dim=3, epoch=1, progress=False, pretrained_vectors=str(bad)).fit(train)
    bad.write_text("2 3\na 1 2 x\nb 1 2 3\n")
    with pytest.raises(InvalidInputError, match="line 2: the vector of 'a' is not numbers"):
        mmq.Classifier(dim=3, epoch=1, progress=False, pretrained_vectors=str(bad)).fit(train)
    with pytest.raises(InvalidParameterError, match="bottleneck"):
        mmq.Classifier(head="linear", pretrained_vectors=str(vec))


def test_cli_min_count_pretrained_save_output_and_verbose(data, tmp_path, capsys):
    train, test = data
    write_ft(tmp_path / "train.txt", train)
    words = sorted({w for t in train["text"].to_list() for w in t.split()})
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(len(words), 10)).astype(np.float32)
    (tmp_path / "w.vec").write_text(f"{len(words)} 10\n" + "".join(
        w + " " + " ".join(f"{x:.6f}" for x in v) + "\n" for w, v in zip(words, vecs)))
    out = str(tmp_path / "m")
    assert main(["supervised", "-input", str(tmp_path / "train.txt"), "-output", out, "-dim", "10", "-epoch", "1",
                 "-lr", "1e-7", "-thread", "1", "-minCount", "2", "-pretrainedVectors", str(tmp_path / "w.vec"),
                 "-saveOutput", "-verbose", "0"]) == 0
    cap = capsys.readouterr()
    assert cap.err == "" and cap.out == ""  # -verbose 0: nothing
    clf = mmq.load(out + ".mmq")
    assert clf.min_count == 2
    common = [w for w, c in Counter(w for t in train["text"] for w in t.split()).items() if c >= 2]
    idx = [words.index(w) for w in common]
    np.testing.assert_allclose(clf.word_vectors(common), vecs[idx], atol=1e-4)
    lines = (tmp_path / "m.output").read_text().splitlines()
    n, d = map(int, lines[0].split())
    mat = clf._text_model("t").output_matrix()
    assert (n, d) == mat.shape == (len(clf.labels), 10)
    for lab, line in zip(clf.labels, lines[1:]):
        name, *vals = line.split()
        assert name == "__label__" + lab
        np.testing.assert_allclose(np.array(vals, dtype=np.float32), mat[clf.labels.index(lab)], rtol=1e-4,
                                   atol=1e-6)
    # -verbose 1: the messages, no progress bar
    assert main(["supervised", "-input", str(tmp_path / "train.txt"), "-output", out, "-dim", "5", "-epoch", "1",
                 "-thread", "1", "-verbose", "1"]) == 0
    err = capsys.readouterr().err
    assert "Read 1,500 rows" in err or "Read" in err
    assert "\r" not in err and "%" not in err
