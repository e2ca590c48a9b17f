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
