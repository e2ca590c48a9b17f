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


def write_st(path, st, header, data):
    import json
    import struct

    st["__metadata__"]["mmq"] = json.dumps(header)
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
