"""A forked child process (multiprocessing's fork start method, gunicorn preload, data
loader workers) can use mmq after its parent did: the extension's thread pool is rebuilt
in the child instead of waiting forever on the parent's rayon threads."""
import multiprocessing as mp
import warnings

import numpy as np
import polars as pl
import pytest

import mmq


def _child(clf, q, df, out):
    try:
        pred = clf.predict(df)["label"].to_list()
        codes = q.encode(df["image"]).tolist()
        again = mmq.Classifier(dim=8, epoch=2, threads=2, seed=0, progress=False).fit(df)
        expr = df.select(mmq.predict(again)).to_series().to_list()
        out.put((pred, codes, len(expr)))
    except Exception as e:  # pragma: no cover - reported to the parent
        out.put(repr(e))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="no fork() on this platform")
def test_forked_child_predicts_encodes_and_fits():
    rng = np.random.default_rng(0)
    df = pl.DataFrame({
        "text": ["good movie", "bad film", "great", "awful"] * 500,
        "label": ["pos", "neg", "pos", "neg"] * 500,
        "image": pl.Series(rng.normal(size=(2000, 8)).astype("float32"), dtype=pl.Array(pl.Float32, 8)),
    })
    clf = mmq.Classifier(dim=8, epoch=2, threads=2, seed=0, progress=False).fit(df)
    q = mmq.PQ(m=2, k=8).fit(df["image"])
    want = (clf.predict(df)["label"].to_list(), q.encode(df["image"]).tolist())  # parent uses the pool
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Python >= 3.12 warns about forking a threaded process
        p = ctx.Process(target=_child, args=(clf, q, df, out))
        p.start()
    p.join(60)
    if p.is_alive():
        p.kill()
        pytest.fail("the forked child hung in mmq")
    got = out.get(timeout=10)
    assert not isinstance(got, str), got
    assert (got[0], got[1]) == want and got[2] == 2000
