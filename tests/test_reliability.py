"""Reliability: saves never replace what is not a regular file, Ctrl-C stops long calls,
sizes are checked before allocating, corrupt files are errors, every error is an MmqError."""
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time

import polars as pl
import pytest

import mmq


@pytest.fixture(scope="module")
def small():
    from mmq.datasets import make_topics

    df = make_topics(n_rows=600, seed=0).select("text", "label")
    clf = mmq.Classifier(dim=8, epoch=2, threads=1, progress=False).fit(df)
    return clf, df


# -- 1. safe saves -----------------------------------------------------------------
def leftovers(d):
    return [p.name for p in d.iterdir() if ".tmp-" in p.name]


def test_save_refuses_device_directory_and_fifo(small, tmp_path):
    clf, _ = small
    with pytest.raises(mmq.MmqError, match="/dev/null"):
        clf.save("/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    d = tmp_path / "adir"
    d.mkdir()
    with pytest.raises(mmq.MmqIOError, match="directory"):
        clf.save(d)
    assert d.is_dir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(mmq.MmqIOError, match="regular file"):
        clf.save(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert leftovers(tmp_path) == []


def test_save_writes_through_a_symlink(small, tmp_path):
    clf, df = small
    target = tmp_path / "real.mmq"
    target.write_bytes(b"old")
    link = tmp_path / "link.mmq"
    link.symlink_to("real.mmq")
    clf.save(link)
    assert link.is_symlink() and os.readlink(link) == "real.mmq"
    assert mmq.load(target).predict(df)["label"].equals(clf.predict(df)["label"])
    assert leftovers(tmp_path) == []


def test_concurrent_saves_of_one_path(small, tmp_path):
    clf, df = small
    path = tmp_path / "same.mmq"
    errors = []

    def save():
        try:
            for _ in range(10):
                clf.save(path)
        except Exception as e:  # pragma: no cover - the failure being tested
            errors.append(e)

    ts = [threading.Thread(target=save) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    assert mmq.load(path).predict(df)["label"].equals(clf.predict(df)["label"])
    assert leftovers(tmp_path) == []


def test_failed_save_leaves_no_temp_file(small, tmp_path):
    clf, _ = small
    f = tmp_path / "afile"
    f.write_bytes(b"keep")
    with pytest.raises(mmq.MmqIOError):
        clf.save(f / "model.mmq")  # the parent is a regular file
    assert f.read_bytes() == b"keep"
    assert leftovers(tmp_path) == []


# -- 2. Ctrl-C -----------------------------------------------------------------------
FIT = textwrap.dedent("""
    import sys, time
    import mmq
    from mmq.datasets import make_topics
    df = make_topics(n_rows=20_000, seed=0).select("text", "label")
    kind = sys.argv[2]
    kw = dict(dim=50, epoch=1000, threads=int(sys.argv[1]), progress=False)
    if kind == "gated":
        df = make_topics(n_rows=20_000, seed=0).drop_nulls("image")
        kw.update(fusion="gated", dense=["image"])
    elif kind == "sets":
        df = df.with_columns(pl_text2=df["text"])
        clf = None
    clf = mmq.Classifier(**kw)
    print("start", flush=True)
    try:
        if kind == "sets":
            clf.fit(df, text=["text", "pl_text2"])
        else:
            clf.fit(df)
    except KeyboardInterrupt:
        print("interrupted", time.time(), clf._model is None, flush=True)
        sys.exit(0)
    print("finished", flush=True)
    sys.exit(3)
""")


@pytest.mark.parametrize("threads,kind", [(1, "text"), (2, "text"), (2, "gated"), (2, "sets")])
def test_ctrl_c_stops_fit(threads, kind):
    p = subprocess.Popen([sys.executable, "-c", FIT, str(threads), kind], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "start"
        time.sleep(1.5)
        sent = time.time()
        os.kill(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, (out, err)
    word, when, untouched = out.split()
    assert word == "interrupted" and untouched == "True"
    assert float(when) - sent < 2.0, float(when) - sent


# -- 3. sizes checked before allocation -------------------------------------------------
def test_huge_k_is_clamped_and_nan_threshold_refused(small, tmp_path):
    clf, df = small
    n = len(clf.labels)
    t = time.time()
    big = clf.predict(df, k=10**9)
    assert time.time() - t < 10
    assert big.equals(clf.predict(df, k=n))
    assert clf.test(df, k=10**9).rows == len(df)
    for call in (lambda: clf.predict(df, threshold=float("nan")), lambda: clf.test(df, threshold=float("nan")),
                 lambda: mmq.predict(clf, threshold=float("nan"))):
        with pytest.raises(mmq.InvalidParameterError, match="threshold"):
            call()


def test_cli_predict_with_a_huge_k(small, tmp_path):
    clf, df = small
    model = tmp_path / "m.mmq"
    clf.save(model)
    f = tmp_path / "in.txt"
    f.write_text("".join(f"__label__{l} {t}\n" for t, l in zip(df["text"][:20], df["label"][:20])))
    r = subprocess.run([sys.executable, "-m", "mmq.cli", "predict", str(model), str(f), "100000000000"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 20 and all(len(l.split()) == len(clf.labels) for l in lines)


@pytest.mark.parametrize("kw", [dict(dim=10**9), dict(dim=2**40), dict(threads=10**4), dict(bucket=2**31 + 1),
                                dict(fusion="bilinear", rank=10**6, dense=["image"])])
def test_parameter_ceilings(kw):
    from mmq.datasets import make_topics

    df = make_topics(n_rows=200, seed=0).drop_nulls("image")
    t = time.time()
    with pytest.raises(mmq.InvalidParameterError):
        mmq.Classifier(epoch=1, progress=False, **kw).fit(df)
    assert time.time() - t < 5


def read_st(path):
    import json
    import struct

    b = open(path, "rb").read()
    (n,) = struct.unpack("<Q", b[:8])
    st = json.loads(b[8:8 + n])
    return st, json.loads(st["__metadata__"]["mmq"]), b[8 + n:]


def checksum(body, st, data):
    """The CRC-32 of an mmq header (without its checksum key) and tensors, as mmq-core's
    io::checksum computes it: the header string, a 0 byte, then per tensor in name
    order its name, a 0 byte, dtype, shape (u64 LE), byte count (u64 LE) and bytes."""
    import struct
    import zlib

    crc = zlib.crc32(body.encode() + b"\0")
    for name in sorted(k for k in st if k != "__metadata__"):
        t = st[name]
        a, b = t["data_offsets"]
        dtype = {"F32": "F32", "U32": "U32", "U8": "U8"}[t["dtype"]]
        part = name.encode() + b"\0" + dtype.encode()
        part += b"".join(struct.pack("<Q", d) for d in t["shape"]) + struct.pack("<Q", b - a)
        crc = zlib.crc32(part + data[a:b], crc)
    return f"{crc:08x}"


def write_st(path, st, header, data, sign=True):
    """Write a hand-edited file, with its checksum recomputed (so the checks behind the
    checksum are tested), or without one (``sign=False``: as a format version 1 file
    from before the checksum existed)."""
    import json
    import struct

    header = {k: v for k, v in header.items() if k != "mmq_crc32"}
    body = json.dumps(header, separators=(",", ":"))
    if sign:
        body = body[:-1] + ',"mmq_crc32":"%s"}' % checksum(body, st, data)
    st["__metadata__"]["mmq"] = body
    h = json.dumps(st).encode()
    h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)


def tamper(src, dst, change):
    st, header, data = read_st(src)
    change(header)
    write_st(dst, st, header, data)
    return dst


def test_header_numbers_are_checked(tmp_path):
    from mmq.datasets import make_topics

    df = make_topics(n_rows=600, seed=0)
    hs = mmq.Classifier(dim=8, epoch=1, loss="hs", threads=1, progress=False).fit(df)
    gated = mmq.Classifier(dim=8, epoch=1, fusion="gated", dense=["image"], threads=1, progress=False).fit(
        df.drop_nulls("image"))
    disc = mmq.Classifier(dim=8, epoch=1, dense={"image": mmq.PQ(m=4, k=16)}, threads=1, progress=False).fit(df)
    for name, m in [("hs", hs), ("gated", gated), ("disc", disc)]:
        m.save(tmp_path / f"{name}.mmq")
    cases = {
        "hs": [lambda h: h["label_counts"].__setitem__(0, 2**63 - 1),
               lambda h: h.__setitem__("label_counts", [2**62] * len(h["labels"])),
               lambda h: h["config"].__setitem__("dim", 2**63),
               lambda h: h["config"].__setitem__("dim", 9),
               lambda h: h["config"]["tokenizer"].__setitem__("bucket", 2**31 + 5)],
        "gated": [lambda h: h["config"].__setitem__("rank", 2**31 - 1),
                  lambda h: h.__setitem__("dense_dim", 2**62)],
        "disc": [lambda h: h["dense"][0].__setitem__("offset", 2**32 + 3),
                 lambda h: h["dense"][0].__setitem__("offset", 5)],
    }
    for name, changes in cases.items():
        mmq.load(tmp_path / f"{name}.mmq")  # the untouched file loads
        for i, change in enumerate(changes):
            bad = tamper(tmp_path / f"{name}.mmq", tmp_path / f"{name}-{i}.mmq", change)
            with pytest.raises(mmq.ModelFileError):
                mmq.load(bad)


# -- 4. silently wrong models -----------------------------------------------------------
def tensor_span(st, data, name):
    a, b = st[name]["data_offsets"]
    return a, b


def test_checksum_catches_flipped_bits_and_old_files_still_load(small, tmp_path):
    clf, df = small
    clf.save(tmp_path / "m.mmq")
    st, header, data = read_st(tmp_path / "m.mmq")
    assert "mmq_crc32" in header
    raw = open(tmp_path / "m.mmq", "rb").read()
    a, b = tensor_span(st, data, "output")
    start = len(raw) - len(data)
    for at in (start + (a + b) // 2, raw.index(b'epoch') + 8):  # a weight; a header value
        flipped = bytearray(raw)
        flipped[at] ^= 0x01
        (tmp_path / "flip.mmq").write_bytes(bytes(flipped))
        with pytest.raises(mmq.ModelFileError, match="checksum"):
            mmq.load(tmp_path / "flip.mmq")
    # A format version 1 file written before the checksum existed (no key) loads, and
    # predicts the same; a version 2 file needs its checksum.
    write_st(tmp_path / "old.mmq", st, dict(header, format_version=1), data, sign=False)
    assert mmq.load(tmp_path / "old.mmq").predict(df).equals(clf.predict(df))
    write_st(tmp_path / "unsigned.mmq", st, header, data, sign=False)
    with pytest.raises(mmq.ModelFileError, match="missing key mmq_crc32"):
        mmq.load(tmp_path / "unsigned.mmq")
    # The re-signing helper of these tests agrees with mmq's checksum.
    write_st(tmp_path / "resigned.mmq", st, header, data)
    assert mmq.load(tmp_path / "resigned.mmq").predict(df).equals(clf.predict(df))


# -- strict headers (format version 2) ---------------------------------------------------
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "v1")


def test_files_of_format_version_1_still_load_and_predict_the_same(tmp_path):
    """Written by mmq 0.1.0 before strict headers (format version 1)."""
    import json

    import numpy as np

    want = json.load(open(os.path.join(FIXTURES, "text_ns.json")))
    clf = mmq.load(os.path.join(FIXTURES, "text_ns.mmq"))
    assert clf.loss == "ns" and list(clf.labels) == want["labels"]
    got = clf.predict_proba(pl.DataFrame({"text": want["text"]})).to_numpy()
    np.testing.assert_allclose(got, np.array(want["proba"]), rtol=0, atol=1e-6)
    # Saved again, it is a version 2 file and loads as one.
    clf.save(tmp_path / "again.mmq")
    assert read_st(tmp_path / "again.mmq")[1]["format_version"] == 2
    assert mmq.load(tmp_path / "again.mmq").predict_proba(pl.DataFrame({"text": want["text"]})).to_numpy() \
        .tolist() == got.tolist()
    q = json.load(open(os.path.join(FIXTURES, "pq.json")))
    pq = mmq.load(os.path.join(FIXTURES, "pq.mmq"))
    x = np.array(q["x"], dtype=np.float32)
    assert np.asarray(pq.encode(x)).tolist() == q["codes"]


def test_unknown_and_missing_header_keys_are_refused(small, tmp_path):
    clf, _ = small
    clf.save(tmp_path / "m.mmq")
    fine = tamper(tmp_path / "m.mmq", tmp_path / "fine.mmq", lambda h: None)
    mmq.load(fine)  # re-signed unchanged: loads
    cases = [
        (lambda h: h.__setitem__("extra", 1), "unknown key extra"),
        (lambda h: h["config"].__setitem__("dimension", 8), "unknown key config.dimension"),
        (lambda h: h["config"]["tokenizer"].__setitem__("lower", True), "unknown key config.tokenizer.lower"),
        (lambda h: h["config"].pop("loss"), "missing key config.loss"),
        (lambda h: h["config"]["tokenizer"].pop("bucket"), "missing key config.tokenizer.bucket"),
        (lambda h: h.pop("dense"), "missing key dense"),
        (lambda h: h.pop("history"), "missing key history"),
    ]
    for i, (change, says) in enumerate(cases):
        bad = tamper(tmp_path / "m.mmq", tmp_path / f"bad{i}.mmq", change)
        with pytest.raises(mmq.ModelFileError, match=says.replace("[", r"\[").replace(".", r"\.")):
            mmq.load(bad)
    # A version 1 file may lack the keys added during version 1, not the others.
    old = tamper(tmp_path / "m.mmq", tmp_path / "v1.mmq",
                 lambda h: (h.__setitem__("format_version", 1), h["config"].pop("temperature"), h.pop("history")))
    assert mmq.load(old).temperature == 1.0
    old = tamper(tmp_path / "m.mmq", tmp_path / "v1-loss.mmq",
                 lambda h: (h.__setitem__("format_version", 1), h["config"].pop("loss")))
    with pytest.raises(mmq.ModelFileError, match="missing key config.loss"):
        mmq.load(old)


def test_pickle_with_flipped_bits_is_an_error(small):
    import pickle

    clf, df = small
    b = bytearray(pickle.dumps(clf))
    b[len(b) // 2] ^= 0x01
    with pytest.raises(mmq.ModelFileError):
        pickle.loads(bytes(b))


def test_non_finite_weights_and_duplicate_labels_are_refused(small, tmp_path):
    import struct

    clf, _ = small
    clf.save(tmp_path / "m.mmq")
    st, header, data = read_st(tmp_path / "m.mmq")  # rewritten with the checksum recomputed
    for value in (float("nan"), float("inf")):
        a, b = tensor_span(st, data, "input")
        bad = bytearray(data)
        bad[a:a + 4] = struct.pack("<f", value)
        write_st(tmp_path / "nan.mmq", st, header, bytes(bad))
        with pytest.raises(mmq.ModelFileError, match="non-finite"):
            mmq.load(tmp_path / "nan.mmq")
    tamper(tmp_path / "m.mmq", tmp_path / "dup.mmq", lambda h: h["labels"].__setitem__(1, h["labels"][0]))
    with pytest.raises(mmq.ModelFileError, match="twice"):
        mmq.load(tmp_path / "dup.mmq")


MUTATE = textwrap.dedent("""
    import sys
    import mmq
    from hypothesis import given, settings, strategies as st, HealthCheck
    from mmq.datasets import make_topics
    df = make_topics(n_rows=300, seed=0).select("text", "label")
    kind = sys.argv[1]
    kw = dict(dim=4, epoch=1, threads=1, progress=False, bucket=1000, word_ngrams=2)
    if kind == "hs":
        kw["loss"] = "hs"
    clf = mmq.Classifier(**kw).fit(df)
    path = sys.argv[2] + "/m.mmq"
    clf.save(path)
    good = open(path, "rb").read()
    want = clf.predict(df, k=2)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)), min_size=1, max_size=4))
    def check(edits):
        b = bytearray(good)
        for at, v in edits:
            b[at] = v
        bad = sys.argv[2] + "/bad.mmq"
        open(bad, "wb").write(bytes(b))
        try:
            m = mmq.load(bad)
        except mmq.MmqError:
            return
        assert m.predict(df, k=2).equals(want)

    check()
    print("ok")
""")


@pytest.mark.parametrize("kind", ["softmax", "hs"])
def test_mutated_files_are_errors_or_identical(kind, tmp_path):
    pytest.importorskip("hypothesis")
    r = subprocess.run([sys.executable, "-c", MUTATE, kind, str(tmp_path)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stdout[-2000:], r.stderr[-3000:])


# -- 5. every error is an MmqError -----------------------------------------------------
def test_a_panic_in_pool_work_is_an_mmq_error():
    from mmq import _mmq

    with pytest.raises(mmq.MmqError, match="internal error.*a test panic"):
        _mmq._panic_in_pool()


@pytest.fixture(scope="module")
def quantizer_file(tmp_path_factory):
    import numpy as np

    x = np.random.default_rng(0).normal(size=(300, 8)).astype("float32")
    path = tmp_path_factory.mktemp("q") / "q.mmq"
    mmq.PQ(m=2, k=4).fit(x).save(path)
    return path


def test_a_quantizer_file_where_a_classifier_is_needed(quantizer_file, small, tmp_path):
    clf, _ = small
    df = pl.DataFrame({"text": ["a b"]})
    with pytest.raises(mmq.ModelFileError, match="quantizer, not a classifier"):
        df.select(mmq.predict(quantizer_file))
    with pytest.raises(mmq.InvalidParameterError):
        mmq.predict(mmq.PQ(m=2, k=4))
    clf.save(tmp_path / "c.mmq")
    with pytest.raises(mmq.ModelFileError, match="classifier, not a quantizer"):
        pl.DataFrame({"v": [[0.0] * 8]}).select(pl.col("v").mmq.encode(tmp_path / "c.mmq"))


def run_cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "mmq.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120, input=stdin)


def test_cli_errors_are_one_line_and_exit_2(quantizer_file, small, tmp_path):
    clf, df = small
    f = tmp_path / "in.txt"
    f.write_text("".join(f"__label__{l} {t}\n" for t, l in zip(df["text"][:20], df["label"][:20])))
    clf.save(tmp_path / "m.mmq")
    (tmp_path / "junk.mmq").write_bytes(b"PK\x03\x04 not a model at all")
    for args in [("test", quantizer_file, f), ("predict", quantizer_file, f), ("test", tmp_path / "nope.mmq", f),
                 ("test", tmp_path / "junk.mmq", f), ("test", tmp_path / "m.mmq", tmp_path / "nope.txt"),
                 ("predict", tmp_path / "m.mmq", f, 0), ("test", tmp_path / "m.mmq", f, 1, "nan")]:
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert "quantizer, not a classifier" in run_cli("test", quantizer_file, f).stderr


def test_cli_strips_a_byte_order_mark(small, tmp_path):
    clf, df = small
    clf.save(tmp_path / "m.mmq")
    lines = "".join(f"__label__{l} {t}\n" for t, l in zip(df["text"][:20], df["label"][:20]))
    f = tmp_path / "bom.txt"
    f.write_bytes(b"\xef\xbb\xbf" + lines.encode())
    from mmq.cli import read_fasttext

    assert read_fasttext(str(f))["label"][0].to_list() == [df["label"][0]]
    r = run_cli("test", tmp_path / "m.mmq", f)
    assert r.returncode == 0, r.stderr
    r = run_cli("test", tmp_path / "m.mmq", "-", stdin="\ufeff" + lines)
    assert r.returncode == 0, r.stderr


def test_a_set_model_without_its_quantizer_is_a_model_file_error(tmp_path):
    from mmq.datasets import make_topics

    df = make_topics(n_rows=400, seed=0)
    m = mmq.Classifier(dim=8, epoch=1, fusion="deepset", dense={"image": mmq.PQ(m=4, k=8)}, threads=1,
                       progress=False).fit(df)
    m.save(tmp_path / "s.mmq")
    mmq.load(tmp_path / "s.mmq")
    tamper(tmp_path / "s.mmq", tmp_path / "bad.mmq", lambda h: h.__setitem__("quantizers", []))
    with pytest.raises(mmq.ModelFileError, match="quantizer"):
        mmq.load(tmp_path / "bad.mmq")


def test_weights_that_cannot_fit_in_memory_are_an_error_before_training():
    # 200k labels x 400k token rows x 4 bytes x 2 (AdaGrad) is ~640 GB: refused at once,
    # with the estimate, instead of an allocation failure or the OOM killer.
    n = 200_000
    df = pl.DataFrame({"text": [f"w{i} v{i}" for i in range(n)], "label": [f"L{i}" for i in range(n)]})
    t = time.perf_counter()
    with pytest.raises(mmq.InvalidParameterError, match=r"needs about \d+\.\d GB .* available"):
        mmq.Classifier(head="linear", epoch=1, threads=1, progress=False).fit(df)
    assert time.perf_counter() - t < 30


def test_composite_headers_are_strict_too(tmp_path):
    from mmq.datasets import make_topics

    df = make_topics(n_rows=400, seed=1).drop_nulls("image")
    for fusion in ("late", "concat"):
        kw = dict(head="linear") if fusion == "concat" else {}
        clf = mmq.Classifier(dim=4, epoch=1, fusion=fusion, dense=["image"], threads=1, progress=False,
                             **kw).fit(df[:300], valid=df[300:])
        clf.save(tmp_path / f"{fusion}.mmq")
        want = clf.predict_proba(df)
        fine = tamper(tmp_path / f"{fusion}.mmq", tmp_path / f"{fusion}-fine.mmq", lambda h: None)
        assert mmq.load(fine).predict_proba(df).equals(want)
        cases = [(lambda h: h.__setitem__("extra", 1), "unknown key extra"),
                 (lambda h: h["dense"][0].__setitem__("dd", 1), "unknown key dense[0].dd"),
                 (lambda h: h.pop("labels"), "missing key labels"),
                 # (read before the model is whole: named by the reader's KeyError)
                 (lambda h: h["dense"][0].pop("name"), "KeyError: 'name'")]
        if fusion == "late":
            cases.append((lambda h: h.pop("stacking"), "missing key stacking"))
        for i, (change, says) in enumerate(cases):
            bad = tamper(tmp_path / f"{fusion}.mmq", tmp_path / f"{fusion}-{i}.mmq", change)
            with pytest.raises(mmq.ModelFileError, match=says.replace("[", r"\[").replace(".", r"\.")):
                mmq.load(bad)
        if fusion == "late":  # a version 1 late-fusion file may lack stacking
            old = tamper(tmp_path / "late.mmq", tmp_path / "late-v1.mmq",
                         lambda h: (h.pop("stacking"), h.__setitem__("format_version", 1)))
            assert mmq.load(old).predict_proba(df).equals(want)


# -- errors of the Polars expressions carry their mmq class ----------------------------
def test_expression_errors_carry_the_mmq_class(small, quantizer_file, tmp_path):
    from mmq.errors import from_polars, polars_errors

    clf, df = small
    clf.save(tmp_path / "m.mmq")
    cases = [
        # (query, mmq class, words of the message)
        (lambda: pl.DataFrame({"t": [1, 2]}).select(pl.col("t").mmq.tokenize()),
         mmq.InvalidInputError, "expects a String column"),
        (lambda: pl.DataFrame({"t": ["a"]}).select(pl.col("t").mmq.tokenize(bucket=0)),
         mmq.InvalidParameterError, "bucket"),
        (lambda: pl.DataFrame({"text": [1.5]}).select(mmq.predict(tmp_path / "m.mmq")),
         mmq.InvalidInputError, "must be String"),
        (lambda: pl.DataFrame({"v": pl.Series([[1.0, 2.0]], dtype=pl.Array(pl.Float32, 2))})
         .select(pl.col("v").mmq.encode(quantizer_file)),
         mmq.InvalidInputError, "dimension"),
    ]
    for query, cls, words in cases:
        with pytest.raises(pl.exceptions.ComputeError) as raw:
            query()
        assert f"[mmq:{cls.__name__}]" in str(raw.value)
        e = from_polars(raw.value)
        assert type(e) is cls and words in str(e), (cls, str(e))
        assert ".so" not in str(e) and "[mmq:" not in str(e) and not str(e).startswith("the plugin")
        assert e.polars_error is raw.value
        with pytest.raises(cls, match=words):
            with polars_errors():
                query()
    # A model file that changed into a corrupt one under a cached expression.
    expr = mmq.predict(tmp_path / "m.mmq")
    (tmp_path / "m.mmq").write_bytes(b"not a model any more")
    with pytest.raises(mmq.ModelFileError, match="mmq.predict: .*not a safetensors file"):
        with polars_errors():
            df.select(expr)
    # Other exceptions pass through both unchanged.
    other = pl.exceptions.ComputeError("no code here")
    assert from_polars(other) is other
    with pytest.raises(pl.exceptions.ColumnNotFoundError):
        with polars_errors():
            df.select(pl.col("nope"))


def test_mmq_functions_that_run_queries_raise_the_mmq_class(small):
    clf, df = small
    # A lazy frame with an mmq expression in it, collected by mmq's own fit.
    # (The text column is computed by it, so projection pushdown cannot drop it.)
    lf = df.lazy().with_columns(pl.col("text").mmq.tokenize(bucket=0).list.len().cast(pl.String).alias("text"))
    for fit in (lambda: mmq.Classifier(dim=4, epoch=1, threads=1, progress=False).fit(lf),
                lambda: mmq.Classifier(dim=4, epoch=1, threads=1, progress=False).fit(lf, valid=df),
                lambda: mmq.Classifier(dim=4, epoch=1, threads=1, progress=False).fit(
                    lf.with_columns(pl.col("text").alias("title")), text=["text", "title"])):
        with pytest.raises(mmq.InvalidParameterError, match="bucket"):
            fit()


# -- a panic at the binding boundary is an MmqError ----------------------------------
def test_a_panic_in_a_binding_or_an_expression_is_an_mmq_error():
    from mmq import _mmq
    from mmq.errors import from_polars
    from mmq.namespace import _panic_for_test

    with pytest.raises(mmq.MmqError, match="internal error.*_panic_for_test: boom here"):
        _mmq._panic_for_test("boom here")
    try:
        _mmq._panic_for_test("again")
    except Exception as e:  # an Exception (PanicException is only a BaseException)
        assert type(e) is mmq.MmqError
    with pytest.raises(pl.exceptions.ComputeError) as raw:
        pl.DataFrame({"x": [1, 2]}).select(_panic_for_test(pl.col("x"), "expression boom"))
    e = from_polars(raw.value)
    assert type(e) is mmq.MmqError
    assert "internal error" in str(e) and "expression boom" in str(e)


# -- a killed save leaves no temp file for good ------------------------------------------
KILLED_SAVE = textwrap.dedent("""
    import sys
    from mmq import _mmq
    data = b"x" * (int(sys.argv[2]) << 20)
    print("ready", flush=True)
    while True:
        _mmq.write_file(sys.argv[1], data)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="stale temp files are removed on Linux only")
def test_the_temp_file_of_a_killed_save_is_removed_by_the_next_save(small, tmp_path):
    clf, df = small
    target = tmp_path / "m.mmq"
    left = []
    for size_mb in (64, 256, 512):
        p = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(target), str(size_mb)],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        deadline = time.time() + 30
        while time.time() < deadline and not leftovers(tmp_path):
            time.sleep(0.0005)
        os.kill(p.pid, signal.SIGKILL)  # mid-save: its temp file is there
        p.wait()
        p.stdout.close()
        left = leftovers(tmp_path)
        if left:
            break
    assert left, "no save was caught mid-write"
    assert all(n.startswith(".m.mmq.tmp-%d-" % p.pid) for n in left), left
    # A live process's temp file of the same target and a dead one's of another target
    # are left alone.
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        live = tmp_path / f".m.mmq.tmp-{sleeper.pid}-ab-0-ff"
        live.write_bytes(b"partial")
        other = tmp_path / f".other.mmq.tmp-{p.pid}-ab-0-ff"
        other.write_bytes(b"partial")
        clf.save(target)
        assert sorted(leftovers(tmp_path)) == sorted([live.name, other.name])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert mmq.load(target).predict(df).equals(clf.predict(df))
