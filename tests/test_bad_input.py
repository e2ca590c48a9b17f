import polars as pl
import pytest

import mmq

DF = pl.DataFrame({"text": ["a b", "c d", "e f", "g h"], "label": ["x", "y", "x", "y"]})


def clf(**kw):
    params = dict(dim=4, epoch=1, progress=False, threads=1)
    params.update(kw)
    return mmq.Classifier(**params)


def test_hierarchy():
    for cls in (mmq.InvalidParameterError, mmq.InvalidInputError, mmq.ModelFileError, mmq.NotFittedError):
        assert issubclass(cls, mmq.MmqError)


@pytest.mark.parametrize("kw, msg", [
    (dict(dim=0), "dim must be"),
    (dict(epoch=0), "epoch"),
    (dict(lr=-1.0), "lr"),
    (dict(loss="hinge"), "loss must be one of"),
    (dict(bucket=0), "bucket"),
    (dict(minn=3, maxn=2), "minn"),
    (dict(threads=0), "threads"),
    (dict(word_ngrams=0), "word_ngrams"),
])
def test_bad_parameters(kw, msg):
    with pytest.raises(mmq.InvalidParameterError, match=msg):
        clf(**kw)


def test_missing_columns():
    with pytest.raises(mmq.InvalidInputError, match="text column 'body' not found"):
        clf().fit(DF, text="body")
    with pytest.raises(mmq.InvalidInputError, match="label column 'y' not found"):
        clf().fit(DF, label="y")


def test_non_string_text():
    with pytest.raises(mmq.InvalidInputError, match="must be of type String, found Int64"):
        clf().fit(DF.with_columns(pl.Series("text", [1, 2, 3, 4])))


def test_non_string_label():
    with pytest.raises(mmq.InvalidInputError, match="String or List"):
        clf().fit(DF.with_columns(pl.Series("label", [1, 2, 1, 2])))


def test_null_label_names_count():
    bad = DF.with_columns(pl.Series("label", ["x", None, None, "y"]))
    with pytest.raises(mmq.InvalidInputError, match="2 null label"):
        clf().fit(bad)


def test_null_text_is_empty_text():
    m = clf().fit(DF.with_columns(pl.Series("text", ["a b", None, "e f", "g h"])))
    out = m.predict(pl.Series(["a b", None]))
    assert out.height == 2 and out["label"].null_count() == 0


def test_empty_frame_and_single_class():
    with pytest.raises(mmq.InvalidInputError, match="empty"):
        clf().fit(DF.head(0))
    with pytest.raises(mmq.InvalidInputError, match="at least 2 distinct labels"):
        clf().fit(DF.with_columns(pl.lit("x").alias("label")))


def test_bad_k_and_unfitted():
    with pytest.raises(mmq.NotFittedError):
        clf().predict(["a"])
    m = clf().fit(DF)
    with pytest.raises(mmq.InvalidParameterError, match="k must be"):
        m.predict(["a"], k=0)
    with pytest.raises(mmq.InvalidParameterError, match="k must be"):
        m.test(DF, k=0)
    with pytest.raises(mmq.InvalidInputError, match="item 1"):
        m.predict(["a", 3])
    with pytest.raises(mmq.InvalidInputError):
        m.predict(42)
    with pytest.raises(mmq.InvalidInputError, match="DataFrame or LazyFrame"):
        clf().fit({"text": ["a"]})


def test_corrupt_and_foreign_files(tmp_path):
    m = clf().fit(DF)
    good = tmp_path / "m.mmq"
    m.save(good)
    raw = good.read_bytes()
    for name, data in [("garbage", b"not a model at all"), ("empty", b""),
                       ("truncated", raw[: len(raw) // 2]), ("flipped", raw[:8] + b"\xff" * 16 + raw[24:])]:
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(mmq.ModelFileError, match=name):
            mmq.load(p)
    with pytest.raises(mmq.MmqIOError):
        mmq.load(tmp_path / "missing.mmq")
    # A valid safetensors file that mmq did not write.
    import json, struct
    header = json.dumps({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0\0\0")
    with pytest.raises(mmq.ModelFileError, match="without an mmq header"):
        mmq.load(foreign)
