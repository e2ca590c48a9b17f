"""The ``mmq`` command line: fastText's verbs for supervised models, plus ``demo``.

    mmq supervised -input train.txt -output model [-dim 10 -epoch 5 -lr 0.1 -wordNgrams 2 ...]
    mmq test model.mmq test.txt [k] [threshold]
    mmq predict model.mmq test.txt [k] [threshold]      (test.txt "-": stdin, answered as lines arrive)
    mmq predict-prob model.mmq test.txt [k] [threshold] (k -1: every label)
    mmq test-label model.mmq test.txt [k] [threshold]   (per-label F1, precision, recall)
    mmq quantize -output model [-input train.txt -cutoff N -retrain -qnorm -qout -dsub 2]
                                                        (model.mmq or model.bin -> model.ftz)
    mmq print-sentence-vectors model.mmq < text         (one vector per line of stdin)
    mmq print-word-vectors model.mmq < words            (one vector per word of stdin)
    mmq nn model.mmq [k] -words train.txt               (nearest words of each query on stdin)
    mmq dump model.mmq args|dict|input|output
    mmq demo

Inputs are fastText text files (``__label__x some text`` per line; ``-`` is stdin) or
Parquet files (columns ``text`` and ``label``; choose others with -textColumn/-labelColumn).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Optional

import polars as pl

import mmq
from mmq._options import LABEL_PREFIX
from mmq.classifier import load_classifier as _load_classifier
from mmq.datasets import make_topics
from mmq.errors import InvalidInputError, MmqError

def parse_fasttext(lines, prefix: str = LABEL_PREFIX) -> pl.DataFrame:
    """fastText-format lines as a frame: tokens starting with ``prefix`` are labels,
    the rest of the line is the text."""
    texts, labels = [], []
    for line in lines:
        toks = line.split()
        labels.append([t[len(prefix):] for t in toks if t.startswith(prefix)])
        texts.append(" ".join(t for t in toks if not t.startswith(prefix)))
    return pl.DataFrame({"text": texts, "label": labels},
                        schema={"text": pl.String, "label": pl.List(pl.String)})


def read_fasttext(path: str, prefix: str = LABEL_PREFIX) -> pl.DataFrame:
    """Parse a fastText-format file (``-``: all of stdin)."""
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8", errors="replace")
    with stream:
        text = stream.read().removeprefix("\ufeff")  # a UTF-8 byte-order mark
    return parse_fasttext(text.splitlines(), prefix)


def read_input(path: str, text: str, label: str, prefix: str, need_label: bool = True) -> pl.DataFrame:
    if path != "-" and not Path(path).exists():
        raise InvalidInputError(f"input file '{path}' does not exist")
    if path.endswith(".parquet"):
        df = pl.read_parquet(path)
        cols = [text] + ([label] if need_label and label in df.columns else [])
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise InvalidInputError(f"{path}: missing column(s) {missing}; found {df.columns}")
        # Other columns stay: a multimodal model reads its dense, categorical and extra
        # text columns by name.
        renamed = [pl.col(text).alias("text")] + ([pl.col(label).alias("label")] if len(cols) > 1 else [])
        return df.with_columns(renamed)
    df = read_fasttext(path, prefix)
    if need_label:
        # Single-label rows become a plain String column (fastText samples one label
        # per update anyway; ova uses the full list).
        if df["label"].list.len().max() == 1 and df["label"].list.len().min() == 1:
            df = df.with_columns(pl.col("label").list.first())
        n_empty = int((df["label"].list.len() == 0).sum()) if df["label"].dtype == pl.List(pl.String) else 0
        if n_empty:
            raise InvalidInputError(f"{path}: {n_empty} line(s) have no '{prefix}' label")
    return df


def _prefix(a: argparse.Namespace, clf=None) -> str:
    """The label prefix: -label if given, else the model's (stored when it was trained),
    else fastText's."""
    if a.label is not None:
        return a.label
    return getattr(getattr(clf, "_o", None), "label_prefix", None) or LABEL_PREFIX


def _train(a: argparse.Namespace) -> int:
    a.label = _prefix(a)
    if a.verbose < 0:
        raise InvalidInputError(f"-verbose must be 0, 1 or 2, got {a.verbose}")
    if a.autotune_validation and (a.minCount != 1 or a.pretrainedVectors):
        raise InvalidInputError("-minCount and -pretrainedVectors are not used by autotune; leave them out with "
                                "-autotune-validation")
    # fastText's verbosity: 0 nothing, 1 messages, 2 (default) messages and progress
    a.quiet = a.quiet or a.verbose < 1
    progress = not a.quiet and a.verbose >= 2
    df = read_input(a.input, a.textColumn, a.labelColumn, a.label)
    if not a.quiet:
        labels = df["label"].explode() if df["label"].dtype == pl.List(pl.String) else df["label"]
        print(f"Read {len(df):,} rows, {labels.n_unique():,} labels", file=sys.stderr)
    t = time.perf_counter()
    if a.autotune_validation:
        valid = read_input(a.autotune_validation, a.textColumn, a.labelColumn, a.label)
        r = mmq.autotune(df, valid, budget_s=a.autotune_duration, metric=a.autotune_metric, seed=a.seed,
                         threads=a.thread, progress=progress, label_prefix=a.label, ensemble=a.autotune_ensemble)
        clf = r.classifier
        if not a.quiet:
            best = (f"mean of {len(r.params['ensemble'])} trials" if "ensemble" in r.params
                    else " ".join(f"{k}={v}" for k, v in r.params.items()))
            print(f"autotune: {r.trials.height} trial(s); best: {best}", file=sys.stderr)
    else:
        clf = mmq.Classifier(dim=a.dim, epoch=a.epoch, lr=a.lr, word_ngrams=a.wordNgrams, minn=a.minn,
                             maxn=a.maxn, bucket=a.bucket, loss=a.loss, neg=a.neg, threads=a.thread,
                             seed=a.seed, progress=progress, lowercase=a.lowercase, split_punct=a.split_punct,
                             drop_punct=a.drop_punct, head=a.head, l2=a.l2, l2_mode=a.l2_mode, idf=a.idf,
                             label_prefix=a.label, min_count=a.minCount,
                             pretrained_vectors=a.pretrainedVectors or None)
        valid = read_input(a.validation, a.textColumn, a.labelColumn, a.label) if a.validation else None
        clf.fit(df, valid=valid, patience=a.patience)
    out = a.output if a.output.endswith(".mmq") else a.output + ".mmq"
    clf.save(out)
    if not a.quiet:
        print(f"Trained in {time.perf_counter() - t:.2f}s; saved {out}", file=sys.stderr)
    if a.saveOutput:
        path = out[:-len(".mmq")] + ".output"
        save_output(clf, path, a.label)
        if not a.quiet:
            print(f"saved the output matrix to {path}", file=sys.stderr)
    return 0


def save_output(clf, path: str, prefix: str) -> None:
    """fastText's -saveOutput: the output matrix as a .vec text file, a first line
    ``rows dim``, then a row per label (``__label__x v1 ... vd``) in the model's label
    order. An hs model's rows are its tree's inner nodes (one fewer than the labels);
    as in fastText, row i is written under label i."""
    x = clf._text_model("-saveOutput")
    mat = x.output_matrix()
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{mat.shape[0]} {mat.shape[1]}\n")
        for lab, row in zip(clf.labels, mat):
            f.write(f"{prefix}{lab} {_vector_line(row)}\n")


def load_classifier(path: str, a: Optional[argparse.Namespace] = None):
    """The model at ``path``; with ``a``, ``a.label`` becomes the prefix to use with it."""
    clf = _load_classifier(path)
    if a is not None:
        a.label = _prefix(a, clf)
    return clf


def _test(a: argparse.Namespace) -> int:
    clf = load_classifier(a.model, a)
    df = read_input(a.input, a.textColumn, a.labelColumn, a.label)
    r = clf.test(df, k=a.k, threshold=a.threshold)
    print(r)
    if a.per_label:
        print(r.per_label)
    return 0


def _write_predictions(clf, df: pl.DataFrame, a: argparse.Namespace, probs: bool, out) -> None:
    k = len(clf.labels) if a.k == -1 else a.k
    pred = clf.predict(df, k=k, threshold=a.threshold)
    lines = []
    for lab, p in zip(pred["label"].to_list(), pred["prob"].to_list()):
        if k == 1:
            lab, p = ([lab], [p]) if lab is not None else ([], [])
        if probs:
            lines.append(" ".join(f"{a.label}{x} {q:.6g}" for x, q in zip(lab, p)))
        else:
            lines.append(" ".join(f"{a.label}{x}" for x in lab))
    if lines:
        out.write("\n".join(lines) + "\n")
    out.flush()


def stdin_batches(prefix: str, fd: int = 0, size: int = 1 << 16):
    """fastText-format rows of stdin as frames, one per read: each read returns what the
    pipe holds (at least one byte, waiting only when it is empty), so a line typed or
    sent alone is answered at once and a file piped in goes by 64 KB batches. Bytes that
    are not UTF-8 become U+FFFD, as in files."""
    tail, first = b"", True
    while True:
        chunk = os.read(fd, size)
        if not chunk:
            break
        if first:
            tail, first = chunk[:3].removeprefix(b"\xef\xbb\xbf"), False  # a UTF-8 byte-order mark
            chunk = chunk[3:]
        data = tail + chunk
        cut = data.rfind(b"\n") + 1
        data, tail = data[:cut], data[cut:]
        if data:
            yield parse_fasttext(data.decode("utf-8", errors="replace").splitlines(), prefix)
    if tail:
        yield parse_fasttext([tail.decode("utf-8", errors="replace")], prefix)


def _predict(a: argparse.Namespace, probs: bool) -> int:
    if a.k == 0 or a.k < -1:
        raise InvalidInputError(f"k must be >= 1, or -1 for every label; got {a.k}")
    clf = load_classifier(a.model, a)
    if a.input == "-":
        for df in stdin_batches(a.label):
            _write_predictions(clf, df, a, probs, sys.stdout)
        return 0
    df = read_input(a.input, a.textColumn, a.labelColumn, a.label, need_label=False)
    _write_predictions(clf, df, a, probs, sys.stdout)
    return 0


def _test_label(a: argparse.Namespace) -> int:
    clf = load_classifier(a.model, a)
    df = read_input(a.input, a.textColumn, a.labelColumn, a.label)
    r = clf.test(df, k=a.k, threshold=a.threshold)
    for row in r.per_label.iter_rows(named=True):
        print(f"F1-Score : {row['f1']:.6f}  Precision : {row['precision']:.6f}  "
              f"Recall : {row['recall']:.6f}   {a.label}{row['label']}")
    print(r)
    return 0


def _model_path(output: str) -> str:
    """fastText's quantize names the model by -output without suffix: model.mmq, else
    model.bin (a fastText model, imported), else the path as given."""
    for p in (output + ".mmq", output + ".bin", output):
        if Path(p).exists():
            return p
    raise InvalidInputError(f"no model to quantize: none of {output}.mmq, {output}.bin, {output} exists")


def _quantize(a: argparse.Namespace) -> int:
    src = _model_path(a.output)
    clf = load_classifier(src, a)
    clf.progress = not a.quiet
    if a.thread is not None:
        clf.threads = a.thread
    if a.retrain and not a.input:
        raise InvalidInputError("-retrain needs -input (the training file)")
    data = read_input(a.input, a.textColumn, a.labelColumn, a.label) if a.retrain and a.cutoff else None
    clf.quantize(data, cutoff=a.cutoff, dsub=a.dsub, qnorm=a.qnorm, qout=a.qout, retrain=data is not None,
                 epoch=a.epoch, lr=a.lr)
    out = a.output[:-len(".mmq")] if a.output.endswith(".mmq") else a.output
    out += ".ftz"
    clf.save(out)
    if not a.quiet:
        print(f"Quantized {src} ({Path(src).stat().st_size / 1e6:.2f} MB) -> {out} "
              f"({Path(out).stat().st_size / 1e6:.2f} MB, mmq's file format)", file=sys.stderr)
    return 0


def _vector_line(v) -> str:
    return " ".join(f"{x:.5g}" for x in v.tolist())


def _print_sentence_vectors(a: argparse.Namespace) -> int:
    clf = load_classifier(a.model, a)
    for df in stdin_batches(a.label):
        vecs = clf.embed(df)
        if len(vecs):
            sys.stdout.write("\n".join(_vector_line(v) for v in vecs) + "\n")
        sys.stdout.flush()
    return 0


def _print_word_vectors(a: argparse.Namespace) -> int:
    clf = load_classifier(a.model, a)
    for df in stdin_batches(a.label):
        words = [w for t in df["text"].to_list() for w in t.split()]
        if words:
            vecs = clf.word_vectors(words)
            sys.stdout.write("\n".join(f"{w} {_vector_line(v)}" for w, v in zip(words, vecs)) + "\n")
        sys.stdout.flush()
    return 0


def _nn(a: argparse.Namespace) -> int:
    clf = load_classifier(a.model, a)
    words = None
    if a.words:
        text = read_input(a.words, "text", "label", a.label, need_label=False)["text"]
        words = list(dict.fromkeys(w for t in text.to_list() for w in t.split()))
    for df in stdin_batches(a.label):
        for query in (w for t in df["text"].to_list() for w in t.split()):
            for sim, w in clf.nearest(query, a.k, words=words):
                print(f"{w} {sim:.6g}")
        sys.stdout.flush()
    return 0


def _dump(a: argparse.Namespace) -> int:
    clf = load_classifier(a.model, a)
    m = clf._fitted()
    if a.option == "args":
        for k, v in clf.get_params().items():
            print(f"{k} {v}")
    elif a.option == "dict":
        vocab = m.vocab() if hasattr(m, "vocab") else None
        labels = list(zip(clf.labels, m.label_counts)) if hasattr(m, "label_counts") else [(x, 0) for x in clf.labels]
        print(len(labels) + (len(vocab[0]) if vocab else 0))
        for w, c in zip(*vocab) if vocab else ():
            print(f"{w} {c} word")
        for lab, c in labels:
            print(f"{a.label}{lab} {c} label")
    else:
        x = clf._text_model("dump input/output")
        mat = x.embeddings([int(t) for t in x.token_ids()]) if a.option == "input" else x.output_matrix()
        print(f"{mat.shape[0]} {mat.shape[1]}")
        for row in mat:
            print(_vector_line(row))
    return 0


def _demo(a: argparse.Namespace) -> int:
    import tempfile


    print("mmq demo: a generated 5-topic data set (mmq.datasets.make_topics, seed 0)")
    df = make_topics(n_rows=a.rows, seed=0)
    train, test = df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "test")
    print(f"  rows: {len(train):,} train / {len(test):,} test; e.g. {train['text'][0]!r} -> {train['label'][0]}")
    params = dict(dim=20, epoch=10, lr=0.5, word_ngrams=2, threads=2, seed=0)
    print(f"  training mmq.Classifier({', '.join(f'{k}={v}' for k, v in params.items())}) on the text column")
    t = time.perf_counter()
    clf = mmq.Classifier(**params, progress=not a.quiet).fit(train)
    fit_s = time.perf_counter() - t
    r = clf.test(test)
    print(f"  trained in {fit_s:.2f}s; test accuracy (P@1) {r.precision:.3f} on {r.rows:,} rows")
    print("  per-label scores:")
    print(r.per_label.select("label", "precision", "recall", "f1"))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "demo.mmq"
        clf.save(path)
        size = path.stat().st_size
        again = mmq.load(path)
        same = again.predict(test)["label"].equals(clf.predict(test)["label"])
    print(f"  saved and reloaded the model ({size / 1e6:.2f} MB): identical predictions: {same}")
    print("  now with the rows' dense 'image' vectors too (10% of rows have none):")
    for name, extra in [("discrete fusion, mmq.PQ(m=8, k=16) codes as tokens", dict(dense={"image": mmq.PQ(m=8, k=16)})),
                        ("continuous fusion, fusion='gated'", dict(fusion="gated", dense=["image"], lr=0.1)),
                        ("Deep Multi-Modal Sets, fusion='deepset'", dict(fusion="deepset", dense={"image": mmq.PQ(m=8, k=16)})),
                        ("MI2P-style attention, fusion='attention'", dict(fusion="attention", dense={"image": mmq.PQ(m=8, k=16)})),
                        ("Gradient-Blending over the bag, blend='gblend'", dict(blend="gblend", dense={"image": mmq.PQ(m=8, k=16)}))]:
        p = {**params, **extra}
        t = time.perf_counter()
        mm = mmq.Classifier(**p, progress=False).fit(train)
        acc = mm.test(test).precision
        print(f"    {name}: test accuracy {acc:.3f} ({acc - r.precision:+.3f} vs text only), "
              f"trained in {time.perf_counter() - t:.2f}s")
    sample = test["text"][0]
    pred = clf.predict([sample], k=2)
    print(f"  top-2 for {sample!r}: {pred['label'][0].to_list()} {[round(p, 3) for p in pred['prob'][0].to_list()]}")
    print("  tokens that push the prediction most:")
    print(clf.explain(sample).head(5))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mmq", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)

    def io_opts(sp):
        sp.add_argument("-label", "--label", default=None,
                        help="label prefix [the model's; __label__ for a new one]; saved with a trained model")
        sp.add_argument("-textColumn", "--text-column", dest="textColumn", default="text")
        sp.add_argument("-labelColumn", "--label-column", dest="labelColumn", default="label")

    for verb in ("supervised", "train"):
        sp = sub.add_parser(verb, help="train a classifier")
        sp.add_argument("-input", "--input", required=True)
        sp.add_argument("-output", "--output", required=True)
        sp.add_argument("-lr", "--lr", type=float, default=None, help="[0.1; 0.2 with -head linear]")
        sp.add_argument("-dim", "--dim", type=int, default=100)
        sp.add_argument("-epoch", "--epoch", type=int, default=5)
        sp.add_argument("-wordNgrams", "--word-ngrams", dest="wordNgrams", type=int, default=None,
                        help="[1; 2 with -head linear]")
        sp.add_argument("-minn", "--minn", type=int, default=0)
        sp.add_argument("-maxn", "--maxn", type=int, default=0)
        sp.add_argument("-bucket", "--bucket", type=int, default=2_000_000)
        sp.add_argument("-loss", "--loss", default="softmax", choices=["softmax", "ns", "hs", "ova"])
        sp.add_argument("-neg", "--neg", type=int, default=5)
        sp.add_argument("-thread", "--thread", type=int, default=None)
        sp.add_argument("-seed", "--seed", type=int, default=0)
        sp.add_argument("-lowercase", "--lowercase", action="store_true",
                        help="lower-case the text before hashing (saved with the model)")
        sp.add_argument("-splitPunct", "--split-punct", dest="split_punct", action="store_true",
                        help="make every punctuation / symbol character a word of its own (saved with the model)")
        sp.add_argument("-dropPunct", "--drop-punct", dest="drop_punct", action="store_true",
                        help="drop every punctuation / symbol character, cutting words there (saved with the model)")
        sp.add_argument("-head", "--head", default="bottleneck", choices=["bottleneck", "linear"],
                        help="bottleneck: fastText's model; linear: features straight to the labels (AdaGrad)")
        sp.add_argument("-l2", "--l2", type=float, default=None, help="L2 penalty of the linear head [1e-4]")
        sp.add_argument("-idf", "--idf", action="store_true", help="IDF-weighted features (linear head)")
        sp.add_argument("-l2Mode", "--l2-mode", dest="l2_mode", choices=("lazy", "full"), default="lazy",
                        help="linear head: 'lazy' l2 on the weights each update touches (default), 'full' the "
                             "whole objective's penalty (l2 scaled by rows / rows with the token)")
        sp.add_argument("-validation", "--validation", default=None,
                        help="validation file: best-epoch weights, calibrated probabilities")
        sp.add_argument("-patience", "--patience", type=int, default=None,
                        help="with -validation: stop after this many epochs without a better score")
        sp.add_argument("-autotune-validation", "--autotune-validation", dest="autotune_validation", default=None,
                        help="search the settings on this validation file (ignores the model options)")
        sp.add_argument("-autotune-duration", "--autotune-duration", dest="autotune_duration", type=float,
                        default=300.0, help="autotune budget in seconds [300]")
        sp.add_argument("-autotune-metric", "--autotune-metric", dest="autotune_metric", default="accuracy",
                        choices=["accuracy", "f1", "loss"])
        sp.add_argument("-autotune-ensemble", "--autotune-ensemble", dest="autotune_ensemble", type=int, default=1,
                        help="keep the mean of the top K trials (mmq.autotune's ensemble=K) [1]")
        sp.add_argument("-quiet", "--quiet", action="store_true", help="no progress bar")
        sp.add_argument("-verbose", "--verbose", type=int, default=2,
                        help="0: nothing, 1: messages, 2: messages and a progress bar [2]")
        sp.add_argument("-minCount", "--min-count", dest="minCount", type=int, default=1,
                        help="words seen fewer times get no row of their own (their n-grams do) [1]")
        sp.add_argument("-pretrainedVectors", "--pretrained-vectors", dest="pretrainedVectors", default="",
                        help="a .vec file: the words' rows start from its vectors (its dimension must be -dim)")
        sp.add_argument("-saveOutput", "--save-output", dest="saveOutput", action="store_true",
                        help="also write the output matrix to <output>.output (.vec text format)")
        io_opts(sp)
    for verb in ("test", "predict", "predict-prob"):
        sp = sub.add_parser(verb)
        sp.add_argument("model")
        sp.add_argument("input")
        sp.add_argument("k", nargs="?", type=int, default=1, help="labels per line [1]; -1: every label")
        sp.add_argument("threshold", nargs="?", type=float, default=0.0)
        if verb == "test":
            sp.add_argument("--per-label", action="store_true", help="print per-label P/R/F1")
        io_opts(sp)
    sp = sub.add_parser("test-label", help="per-label F1, precision and recall")
    sp.add_argument("model")
    sp.add_argument("input")
    sp.add_argument("k", nargs="?", type=int, default=1)
    sp.add_argument("threshold", nargs="?", type=float, default=0.0)
    io_opts(sp)
    sp = sub.add_parser("quantize", help="compress a model (fastText's quantize): model -> model.ftz")
    sp.add_argument("-output", "--output", required=True, help="the model, without suffix (model.mmq or model.bin)")
    sp.add_argument("-input", "--input", default=None, help="training file (for -retrain)")
    sp.add_argument("-cutoff", "--cutoff", type=int, default=0, help="token rows kept, largest norms first [0: all]")
    sp.add_argument("-retrain", "--retrain", action="store_true", help="train the kept rows again (with -cutoff)")
    sp.add_argument("-qnorm", "--qnorm", action="store_true", help="quantize the rows' norms apart")
    sp.add_argument("-qout", "--qout", action="store_true", help="quantize the output matrix too")
    sp.add_argument("-dsub", "--dsub", type=int, default=2, help="dimensions per byte [2]")
    sp.add_argument("-epoch", "--epoch", type=int, default=None)
    sp.add_argument("-lr", "--lr", type=float, default=None)
    sp.add_argument("-thread", "--thread", type=int, default=None)
    sp.add_argument("-quiet", "--quiet", action="store_true")
    io_opts(sp)
    for verb in ("print-sentence-vectors", "print-word-vectors"):
        sp = sub.add_parser(verb, help="vectors of the lines (or words) of stdin")
        sp.add_argument("model")
        io_opts(sp)
    sp = sub.add_parser("nn", help="nearest words of each query word on stdin")
    sp.add_argument("model")
    sp.add_argument("k", nargs="?", type=int, default=10)
    sp.add_argument("-words", "--words", default=None, help="file whose words are the candidates")
    io_opts(sp)
    sp = sub.add_parser("dump", help="print the model's args, dict, input or output matrix")
    sp.add_argument("model")
    sp.add_argument("option", choices=["args", "dict", "input", "output"])
    io_opts(sp)
    sp = sub.add_parser("demo", help="train and evaluate on a generated data set")
    sp.add_argument("--rows", type=int, default=20_000)
    sp.add_argument("-quiet", "--quiet", action="store_true")

    a = p.parse_args(argv)

    try:
        if a.verb in ("supervised", "train"):
            return _train(a)
        if a.verb == "test":
            return _test(a)
        if a.verb == "predict":
            return _predict(a, probs=False)
        if a.verb == "predict-prob":
            return _predict(a, probs=True)
        verbs = {"test-label": _test_label, "quantize": _quantize, "print-sentence-vectors": _print_sentence_vectors,
                 "print-word-vectors": _print_word_vectors, "nn": _nn, "dump": _dump}
        return verbs.get(a.verb, _demo)(a)
    except BrokenPipeError:  # `mmq predict ... | head`: stop quietly, as fastText (SIGPIPE) does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush is quiet too
        return 141
    except (MmqError, OSError) as e:  # one line, no traceback
        print(f"mmq {a.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nmmq {a.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
