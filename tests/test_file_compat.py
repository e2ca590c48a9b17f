"""Model files saved by this release (tests/fixtures/v2, written once by
tests/fixtures/gen_v2.py and checked in) still load and answer the same: every model kind
(text with softmax / hs / ova / the linear head with IDF and char n-grams, discrete and
continuous fusion, deepset over three columns, attention, G-Blend, late and concat fusion,
a quantized text model). A change of the engine or of the file format that would break
users' saved models fails here (issue 15: one engine, old files still predict
identically)."""
import json
import os

import numpy as np
import polars as pl
import pytest

import mmq

HERE = os.path.join(os.path.dirname(__file__), "fixtures", "v2")
KINDS = sorted(f[:-5] for f in os.listdir(HERE) if f.endswith(".json")) if os.path.isdir(HERE) else []


def test_every_kind_has_a_fixture():
    assert {"text_softmax", "text_hs", "text_ova", "text_linear_idf", "text_quantized", "discrete_pq", "gated",
            "deepset", "attention", "gblend", "late", "concat"} <= set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_saved_models_answer_as_they_did(kind, tmp_path):
    want = json.load(open(os.path.join(HERE, f"{kind}.json")))
    rows = pl.read_parquet(os.path.join(HERE, "rows.parquet"))
    clf = mmq.load(os.path.join(HERE, f"{kind}.mmq"))
    assert [str(v) for v in clf.labels] == want["labels"]
    got = clf.predict_proba(rows).to_numpy()
    np.testing.assert_allclose(got, np.array(want["proba"]), rtol=0, atol=2e-6)
    if want["top"] is not None:
        # The top label where it is clear (a near-tie may resolve either way).
        p = np.sort(got, axis=1)
        clear = p[:, -1] - p[:, -2] > 1e-5
        top = clf.predict(rows)["label"].to_list()
        assert [t for t, c in zip(top, clear) if c] == [t for t, c in zip(want["top"], clear) if c]
    # Saved again by this build, it still answers the same.
    clf.save(tmp_path / "again.mmq")
    np.testing.assert_array_equal(mmq.load(tmp_path / "again.mmq").predict_proba(rows).to_numpy(), got)
