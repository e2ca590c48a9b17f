import subprocess
import sys

import polars as pl
import pytest

from mmq.cli import main, read_fasttext


def write_ft(path, df):
    with open(path, "w") as f:
        for t, l in zip(df["text"], df["label"]):
            f.write(f"__label__{l} {t}\n")


def test_read_fasttext_format(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("__label__x hello world\nfoo __label__y __label__z bar\n")
    df = read_fasttext(str(p))
    assert df["text"].to_list() == ["hello world", "foo bar"]
    assert df["label"].to_list() == [["x"], ["y", "z"]]


def test_train_test_predict(tmp_path, topics, capsys):
    train = topics.filter(pl.col("split") == "train")
    test = topics.filter(pl.col("split") == "test")
    write_ft(tmp_path / "train.txt", train)
    write_ft(tmp_path / "test.txt", test)
    model = str(tmp_path / "model")
    assert main(["supervised", "-input", str(tmp_path / "train.txt"), "-output", model, "-dim", "10",
                 "-epoch", "10", "-lr", "0.5", "-wordNgrams", "2", "-thread", "1", "-quiet"]) == 0
    assert main(["test", model + ".mmq", str(tmp_path / "test.txt")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("N\t400\nP@1\t")
    assert float(out.split("\n")[1].split("\t")[1]) > 0.6
    assert main(["predict", model + ".mmq", str(tmp_path / "test.txt"), "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 400 and all(len(l.split()) == 2 and l.startswith("__label__") for l in lines)
    assert main(["predict-prob", model + ".mmq", str(tmp_path / "test.txt")]) == 0
    lab, p = capsys.readouterr().out.splitlines()[0].split()
    assert 0 < float(p) <= 1
    # Parquet input works too.
    test.write_parquet(tmp_path / "test.parquet")
    assert main(["test", model + ".mmq", str(tmp_path / "test.parquet")]) == 0


def test_cli_errors(tmp_path, capsys):
    assert main(["test", str(tmp_path / "nope.mmq"), str(tmp_path / "nope.txt")]) == 2
    err = capsys.readouterr().err
    assert "nope.mmq" in err and "No such file" in err
    bad = tmp_path / "bad.mmq"
    bad.write_bytes(b"garbage")
    (tmp_path / "t.txt").write_text("__label__a x\n")
    assert main(["test", str(bad), str(tmp_path / "t.txt")]) == 2
    assert "not a safetensors" in capsys.readouterr().err


def test_demo_runs():
    r = subprocess.run([sys.executable, "-m", "mmq.cli", "demo", "--rows", "3000", "-quiet"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout and "identical predictions: True" in r.stdout


def test_multimodal_models_read_their_columns_from_parquet(tmp_path, topics, capsys):
    """test/predict on Parquet keep the columns a multimodal model reads (dense, set
    models' other columns), and agree with the Python API."""
    import mmq

    train = topics.filter(pl.col("split") == "train").rename({"text": "body"})
    test = topics.filter(pl.col("split") == "test").rename({"text": "body"})
    test.write_parquet(tmp_path / "test.parquet")
    for kw in (dict(dense={"image": mmq.PQ(m=4, k=16)}),
               dict(dense={"image": mmq.PQ(m=4, k=16)}, fusion="deepset")):
        clf = mmq.Classifier(dim=10, epoch=5, lr=0.5, threads=1, progress=False, **kw)
        clf = clf.fit(train.rename({"body": "text"}), text=["text"] if "fusion" in kw else "text")
        clf.save(tmp_path / "m.mmq")
        assert main(["predict", str(tmp_path / "m.mmq"), str(tmp_path / "test.parquet"), "-textColumn", "body"]) == 0
        lines = capsys.readouterr().out.splitlines()
        want = clf.predict(test.rename({"body": "text"}))["label"].to_list()
        assert [l.removeprefix("__label__") for l in lines] == want


def test_train_tokenizer_flags(tmp_path, capsys):
    """-lowercase, -splitPunct and -dropPunct reach the saved model: 'GREAT!!' at prediction is the
    word 'great' seen in training."""
    import mmq

    (tmp_path / "t.txt").write_text("".join(["__label__pos great film\n", "__label__neg awful film\n"] * 30))
    model = str(tmp_path / "m")
    assert main(["supervised", "-input", str(tmp_path / "t.txt"), "-output", model, "-dim", "8", "-epoch", "20",
                 "-lr", "0.5", "-thread", "1", "-quiet", "-lowercase", "-splitPunct"]) == 0
    clf = mmq.load(model + ".mmq")
    assert clf.lowercase and clf.split_punct
    assert clf.predict(["GREAT!!", "(Awful)"])["label"].to_list() == ["pos", "neg"]
    assert main(["supervised", "-input", str(tmp_path / "t.txt"), "-output", model + "2", "-quiet"]) == 0
    plain = mmq.load(model + "2.mmq")
    assert not plain.lowercase and not plain.split_punct and not plain.drop_punct
    assert main(["supervised", "-input", str(tmp_path / "t.txt"), "-output", model + "3", "-dim", "8", "-epoch",
                 "20", "-lr", "0.5", "-thread", "1", "-quiet", "-dropPunct"]) == 0
    dropped = mmq.load(model + "3.mmq")
    assert dropped.drop_punct and not dropped.split_punct
    assert dropped.tokenize(["#great!!"]).to_list() == dropped.tokenize(["great"]).to_list()


def _model(tmp_path, topics):
    write_ft(tmp_path / "train.txt", topics.filter(pl.col("split") == "train"))
    model = str(tmp_path / "model.mmq")
    assert main(["supervised", "-input", str(tmp_path / "train.txt"), "-output", model, "-dim", "10",
                 "-epoch", "5", "-lr", "0.5", "-thread", "1", "-quiet"]) == 0
    return model


def test_predict_from_stdin_answers_each_line_as_it_arrives(tmp_path, topics):
    import mmq

    model = _model(tmp_path, topics)
    texts = topics.filter(pl.col("split") == "test")["text"].head(3).to_list()
    want = mmq.load(model).predict(texts)["label"].to_list()
    proc = subprocess.Popen([sys.executable, "-m", "mmq.cli", "predict", model, "-"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    try:
        for text, label in zip(texts, want):
            proc.stdin.write(text + "\n")
            proc.stdin.flush()
            # The answer comes before the next line is sent (fastText's interactive use):
            # a reader of all of stdin would block here.
            assert proc.stdout.readline() == f"__label__{label}\n"
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        assert proc.stdout.read() == "" and proc.stderr.read() == ""
    finally:
        proc.kill()


def test_predict_into_a_closed_pipe_is_quiet_and_k_minus_one_is_every_label(tmp_path, topics):
    import mmq

    model = _model(tmp_path, topics)
    test = topics.filter(pl.col("split") == "test")
    write_ft(tmp_path / "test.txt", test)
    # `| head -1`: the reader goes away after one line; no BrokenPipeError traceback.
    r = subprocess.run(f"{sys.executable} -m mmq.cli predict-prob {model} {tmp_path / 'test.txt'} -1 | head -1",
                       shell=True, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    fields = r.stdout.split()
    clf = mmq.load(model)
    assert len(fields) == 2 * len(clf.labels)
    probs = clf.predict_proba(test.head(1))
    got = {fields[i].removeprefix("__label__"): float(fields[i + 1]) for i in range(0, len(fields), 2)}
    for name, p in got.items():
        assert abs(probs[name][0] - p) < 1e-5
    assert list(got.values()) == sorted(got.values(), reverse=True)
    assert main(["predict", model, str(tmp_path / "test.txt"), "0"]) == 2


def test_train_reports_the_rows_read_before_training(tmp_path, topics, capsys):
    write_ft(tmp_path / "train.txt", topics.filter(pl.col("split") == "train"))
    assert main(["supervised", "-input", str(tmp_path / "train.txt"), "-output", str(tmp_path / "m"),
                 "-dim", "10", "-epoch", "2", "-thread", "1"]) == 0
    err = capsys.readouterr().err
    n = topics.filter(pl.col("split") == "train").height
    assert err.startswith(f"Read {n:,} rows, 5 labels\n"), err[:200]
    assert err.rstrip().splitlines()[-1].startswith("Trained in")


def test_fasttexts_other_verbs(tmp_path, topics, capsys):
    """test-label, print-sentence-vectors, print-word-vectors, nn and dump give what the
    Python API gives (itself checked against the official fastText)."""
    import numpy as np

    import mmq
    import mmq.fasttext as ft

    train = topics.filter(pl.col("split") == "train")
    test = topics.filter(pl.col("split") == "test")
    write_ft(tmp_path / "train.txt", train)
    write_ft(tmp_path / "test.txt", test)
    model = str(tmp_path / "model")
    assert main(["supervised", "-input", str(tmp_path / "train.txt"), "-output", model, "-dim", "8",
                 "-epoch", "5", "-lr", "0.5", "-thread", "1", "-quiet"]) == 0
    capsys.readouterr()
    path = model + ".mmq"
    clf = mmq.load(path)

    assert main(["test-label", path, str(tmp_path / "test.txt")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("F1-Score")]
    want = ft.load_model(path).test_label(str(tmp_path / "test.txt"))
    assert len(lines) == len(want)
    for line in lines:
        parts = line.split()
        assert float(parts[2]) == pytest.approx(want[parts[-1]]["f1score"], abs=1e-6)
        assert float(parts[5]) == pytest.approx(want[parts[-1]]["precision"], abs=1e-6)

    def run(*args, stdin):
        r = subprocess.run([sys.executable, "-m", "mmq.cli", *args], input=stdin, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    texts = test["text"].head(5).to_list()
    vecs = np.array([[float(v) for v in line.split()] for line in run("print-sentence-vectors", path,
                                                                       stdin="\n".join(texts) + "\n")])
    np.testing.assert_allclose(vecs, clf.embed(texts), rtol=1e-4, atol=1e-5)
    words = texts[0].split()[:3]
    out = run("print-word-vectors", path, stdin=" ".join(words) + "\n")
    assert [line.split()[0] for line in out] == words
    np.testing.assert_allclose(np.array([[float(v) for v in line.split()[1:]] for line in out]),
                               clf.word_vectors(words), rtol=1e-4, atol=1e-5)
    cand = list(dict.fromkeys(w for t in train["text"].to_list() for w in t.split()))
    out = run("nn", path, "3", "-words", str(tmp_path / "train.txt"), stdin=words[0] + "\n")
    assert [line.split()[0] for line in out] == [w for _, w in clf.nearest(words[0], 3, words=cand)]
    out = run("dump", path, "input", stdin="")
    assert out[0] == f"{clf._model.n_rows} 8" and len(out) == clf._model.n_rows + 1
    out = run("dump", path, "output", stdin="")
    assert out[0] == f"{len(clf.labels)} 8"
    out = run("dump", path, "dict", stdin="")
    assert int(out[0]) == len(clf.labels) and all(line.endswith(" label") for line in out[1:])
    assert any(line.startswith("dim 8") for line in run("dump", path, "args", stdin=""))


def test_a_label_prefix_is_stored_with_the_model(tmp_path, topics, capsys):
    """fastText's -label: train with another prefix, and test / predict read and write it
    without being told again; the shim and the Python API see it too."""
    train = topics.filter(pl.col("split") == "train").head(1500)
    test = topics.filter(pl.col("split") == "test")
    for name, df in (("train", train), ("test", test)):
        with open(tmp_path / f"{name}.txt", "w") as f:
            for t, l in zip(df["text"], df["label"]):
                f.write(f"#lbl#{l} {t}\n")
    model = str(tmp_path / "m")
    assert main(["supervised", "-input", str(tmp_path / "train.txt"), "-output", model, "-label", "#lbl#",
                 "-dim", "10", "-epoch", "5", "-lr", "0.5", "-thread", "1", "-quiet"]) == 0
    capsys.readouterr()
    import mmq
    import mmq.fasttext as ft
    clf = mmq.load(model + ".mmq")
    assert clf.label_prefix == "#lbl#"
    assert set(clf.labels) == set(train["label"].unique())  # the labels themselves have no prefix
    assert main(["test", model + ".mmq", str(tmp_path / "test.txt")]) == 0
    assert float(capsys.readouterr().out.split("\n")[1].split("\t")[1]) > 0.5
    assert main(["predict", model + ".mmq", str(tmp_path / "test.txt")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == test.height and all(l.startswith("#lbl#") for l in lines)
    # -label still wins when given
    assert main(["predict", model + ".mmq", str(tmp_path / "test.txt"), "-label", "__label__"]) == 0
    assert capsys.readouterr().out.startswith("__label__")
    labels, _ = ft.load_model(model + ".mmq").predict("some text")
    assert labels[0].startswith("#lbl#")
    # a default model's file has no prefix key and reads as fastText's
    plain = mmq.Classifier(dim=5, epoch=1, threads=1, progress=False).fit(train)
    assert plain.label_prefix == "__label__"
    assert '"label_prefix"' not in plain._fitted().config_json
    with pytest.raises(mmq.InvalidParameterError, match="label_prefix"):
        mmq.Classifier(label_prefix="a b")
    # and the shim stores what train_supervised was given
    m = ft.train_supervised(input=str(tmp_path / "train.txt"), label="#lbl#", epoch=2, thread=1, verbose=0)
    assert mmq.Classifier._from_rust(m.classifier._fitted()).label_prefix == "#lbl#"
