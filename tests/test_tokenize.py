import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_series_equal

import mmq
from reference import fnv1a, tokenize as ref_tokenize

ALPHABET = st.sampled_from(list("abcxyz  \t\néü日本語カナไทย😀<>-"))
TEXT = st.text(alphabet=ALPHABET, max_size=40)


def test_fnv_reference_known_values():
    assert fnv1a(b"") == 2166136261
    assert fnv1a(b"a") == 0xE40C292C


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(TEXT, min_size=1, max_size=5), wn=st.integers(1, 4),
       mm=st.sampled_from([(0, 0), (1, 1), (2, 4), (3, 6)]),
       bucket=st.sampled_from([97, 1000, 2_000_000, 2**31 - 1]), cjk=st.booleans())
def test_tokenize_matches_python_reference(texts, wn, mm, bucket, cjk):
    minn, maxn = mm
    got = mmq.tokenize(texts, word_ngrams=wn, minn=minn, maxn=maxn, bucket=bucket, split_cjk=cjk)
    want = [ref_tokenize(t, wn, minn, maxn, bucket, cjk) for t in texts]
    assert got.to_list() == want


@settings(max_examples=50, deadline=None)
@given(texts=st.lists(st.one_of(st.none(), TEXT), min_size=1, max_size=8))
def test_expression_equals_function(texts):
    df = pl.DataFrame({"t": texts}, schema={"t": pl.String})
    fn = mmq.tokenize(df["t"], word_ngrams=2, minn=2, maxn=3)
    for engine in ("auto", "streaming"):
        ex = df.lazy().select(pl.col("t").mmq.tokenize(word_ngrams=2, minn=2, maxn=3)).collect(engine=engine)["t"]
        assert_series_equal(ex, fn, check_names=False)
    # Nulls pass through as nulls.
    assert fn.is_null().to_list() == [t is None for t in texts]


def test_text_without_spaces_gives_many_tokens():
    zh = "我们今天去北京看长城"
    ids = mmq.tokenize([zh], word_ngrams=2)[0]
    # 10 characters + EOS + 10 bigrams, not one token per sentence.
    assert len(ids) == 21
    kept = mmq.tokenize([zh], split_cjk=False)[0]
    assert len(kept) == 2  # one word + EOS: why split_cjk is on by default
    with_chars = mmq.tokenize([zh], split_cjk=False, minn=1, maxn=2)[0]
    assert len(with_chars) > 15


def test_tokenize_group_by():
    df = pl.DataFrame({"g": [1, 1, 2], "t": ["a b", "c", "d e f"]})
    out = df.group_by("g", maintain_order=True).agg(pl.col("t").mmq.tokenize().list.len().sum().alias("n"))
    assert out["n"].to_list() == [3 + 2, 4]


def test_tokenize_wrong_dtype():
    with pytest.raises(mmq.InvalidInputError, match="String"):
        mmq.tokenize(pl.Series("x", [1, 2]))
    with pytest.raises(Exception, match="String"):
        pl.DataFrame({"x": [1, 2]}).select(pl.col("x").mmq.tokenize())


def test_lowercase_option_hashes_lower_cased_text(tmp_path):
    """lowercase=True equals hashing str.lower() of the text, in the API, the expression
    and a classifier's predictions."""
    import polars as pl

    texts = ["Héllo WORLD", "ÉΣ Big cat", None, "already lower", "ǅemal ᾈ"]  # ǅ, ᾈ: titlecase
    lowered = [None if t is None else t.lower() for t in texts]
    a = mmq.tokenize(texts, word_ngrams=2, minn=2, maxn=3, lowercase=True)
    b = mmq.tokenize(lowered, word_ngrams=2, minn=2, maxn=3)
    assert a.to_list() == b.to_list()
    assert mmq.tokenize(["Hello"]).to_list() != mmq.tokenize(["hello"]).to_list()
    df = pl.DataFrame({"text": texts})
    expr = df.select(pl.col("text").mmq.tokenize(word_ngrams=2, minn=2, maxn=3, lowercase=True)).to_series()
    assert expr.to_list() == a.to_list()
    train = pl.DataFrame({"text": ["good film", "bad film", "great", "awful"] * 20,
                          "label": ["pos", "neg", "pos", "neg"] * 20})
    clf = mmq.Classifier(dim=8, epoch=20, lr=0.5, threads=1, progress=False, lowercase=True).fit(train)
    assert clf.predict(["GOOD FILM", "AWFUL"])["label"].to_list() == ["pos", "neg"]
    clf.save(tmp_path / "lc.mmq")
    again = mmq.load(tmp_path / "lc.mmq")
    assert again.lowercase and again.predict(["GOOD FILM"])["label"][0] == "pos"


def _split_punct_reference(text):
    """Python reference for split_punct: every character of Unicode category P* or S*
    (unicodedata) becomes a word of its own; fastText's separators still separate."""
    import re
    import unicodedata

    if text is None:
        return None
    out = []
    for word in re.split(r"[ \n\r\t\x0b\x0c\x00]+", text):
        piece = ""
        for ch in word:
            if unicodedata.category(ch)[0] in "PS":
                out += [piece, ch] if piece else [ch]
                piece = ""
            else:
                piece += ch
        if piece:
            out.append(piece)
    return " ".join(out)


PUNCT_TEXT = st.text(alphabet=st.sampled_from(list("abcxyz  \téü日本ไทย😀<>-!?.,#@'€…_:/\"()¿«»+=")),
                     max_size=40)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.one_of(st.none(), PUNCT_TEXT), min_size=1, max_size=5), wn=st.integers(1, 3),
       cjk=st.booleans())
def test_split_punct_equals_python_reference(texts, wn, cjk):
    """split_punct=True gives the ids of the text pre-split by the unicodedata reference,
    in the API and in the expression."""
    a = mmq.tokenize(texts, word_ngrams=wn, minn=2, maxn=3, split_cjk=cjk, split_punct=True)
    b = mmq.tokenize([_split_punct_reference(t) for t in texts], word_ngrams=wn, minn=2, maxn=3, split_cjk=cjk)
    assert a.to_list() == b.to_list()
    e = pl.DataFrame({"text": texts}, schema={"text": pl.String}).select(
        pl.col("text").mmq.tokenize(word_ngrams=wn, minn=2, maxn=3, split_cjk=cjk, split_punct=True)).to_series()
    assert e.to_list() == a.to_list()


def _drop_punct_reference(text):
    """Python reference for drop_punct: every character of Unicode category P* or S*
    (unicodedata) is dropped and separates words; fastText's separators still separate."""
    import unicodedata

    if text is None:
        return None
    return "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(st.one_of(st.none(), PUNCT_TEXT), min_size=1, max_size=5), wn=st.integers(1, 3),
       cjk=st.booleans(), lower=st.booleans())
def test_drop_punct_equals_python_reference(texts, wn, cjk, lower):
    """drop_punct=True gives the ids of the text with the unicodedata reference's
    punctuation blanked out, in the API and in the expression."""
    a = mmq.tokenize(texts, word_ngrams=wn, minn=2, maxn=3, split_cjk=cjk, lowercase=lower, drop_punct=True)
    b = mmq.tokenize([_drop_punct_reference(t) for t in texts], word_ngrams=wn, minn=2, maxn=3,
                     split_cjk=cjk, lowercase=lower)
    assert a.to_list() == b.to_list()
    e = pl.DataFrame({"text": texts}, schema={"text": pl.String}).select(
        pl.col("text").mmq.tokenize(word_ngrams=wn, minn=2, maxn=3, split_cjk=cjk, lowercase=lower,
                                    drop_punct=True)).to_series()
    assert e.to_list() == a.to_list()


def test_drop_punct_in_a_classifier_and_a_set_model(tmp_path):
    """A classifier with drop_punct reads '#great!!' as 'great'; the option is saved
    (file and pickle), reaches the set models, and excludes split_punct."""
    import pickle

    train = pl.DataFrame({"text": ["great film", "awful film", "great", "awful"] * 20,
                          "label": ["pos", "neg", "pos", "neg"] * 20})
    clf = mmq.Classifier(dim=8, epoch=20, lr=0.5, threads=1, progress=False, drop_punct=True).fit(train)
    assert clf.tokenize(["#great!!", "(awful) film."]).to_list() == mmq.tokenize(["great", "awful film"]).to_list()
    assert clf.predict(["#great!!", "(awful)"])["label"].to_list() == ["pos", "neg"]
    clf.save(tmp_path / "dp.mmq")
    again = mmq.load(tmp_path / "dp.mmq")
    assert again.drop_punct and again.get_params()["drop_punct"] and not again.split_punct
    assert again.predict(["#great!!", "(awful)"]).equals(clf.predict(["#great!!", "(awful)"]))
    assert pickle.loads(pickle.dumps(clf)).tokenize(["a,b"]).to_list() == mmq.tokenize(["a b"]).to_list()
    sets = mmq.Classifier(dim=8, epoch=20, lr=0.5, threads=1, progress=False, drop_punct=True,
                          fusion="deepset").fit(train, text=["text"])
    assert sets.predict(pl.DataFrame({"text": ["#great!!", "(awful)"]}))["label"].to_list() == ["pos", "neg"]
    sets.save(tmp_path / "dps.mmq")
    assert mmq.load(tmp_path / "dps.mmq").drop_punct
    with pytest.raises(mmq.InvalidParameterError, match="drop_punct"):
        mmq.Classifier(drop_punct=1)
    with pytest.raises(mmq.InvalidParameterError, match="split_punct and drop_punct"):
        mmq.Classifier(split_punct=True, drop_punct=True)
    with pytest.raises(mmq.MmqError, match="split_punct and drop_punct"):
        mmq.tokenize(["a!"], split_punct=True, drop_punct=True)
    with pytest.raises(Exception, match="split_punct and drop_punct"):
        pl.DataFrame({"t": ["a!"]}).select(pl.col("t").mmq.tokenize(split_punct=True, drop_punct=True))


def test_split_punct_in_a_classifier(tmp_path):
    """A classifier with split_punct learns 'great!' as 'great' + '!': a word seen only
    bare in training is recognised with punctuation attached; the option is saved."""
    train = pl.DataFrame({"text": ["great film", "awful film", "great", "awful"] * 20,
                          "label": ["pos", "neg", "pos", "neg"] * 20})
    clf = mmq.Classifier(dim=8, epoch=20, lr=0.5, threads=1, progress=False, split_punct=True).fit(train)
    assert clf.tokenize(["great!!"]).to_list() == mmq.tokenize(["great ! !"]).to_list()
    assert clf.predict(["great!!", "(awful)"])["label"].to_list() == ["pos", "neg"]
    clf.save(tmp_path / "sp.mmq")
    again = mmq.load(tmp_path / "sp.mmq")
    assert again.split_punct and again.get_params()["split_punct"]
    assert again.predict(["great!!", "(awful)"]).equals(clf.predict(["great!!", "(awful)"]))
    with pytest.raises(mmq.InvalidParameterError, match="split_punct"):
        mmq.Classifier(split_punct="yes")


def test_pickle_from_before_the_tokenizer_options_loads():
    """A pickled Classifier whose state has no lowercase / split_punct (made by an mmq
    before those options) loads with both off and keeps working."""
    import pickle

    train = pl.DataFrame({"text": ["good film", "bad film"] * 20, "label": ["pos", "neg"] * 20})
    clf = mmq.Classifier(dim=8, epoch=10, lr=0.5, threads=1, progress=False).fit(train)
    state = clf.__getstate__()
    del state["lowercase"], state["split_punct"], state["drop_punct"]
    old = mmq.Classifier.__new__(mmq.Classifier)
    old.__setstate__(state)
    assert old.lowercase is False and old.split_punct is False
    assert old.tokenize(["good film"]).to_list() == clf.tokenize(["good film"]).to_list()
    assert old.get_params()["split_punct"] is False and old.get_params()["drop_punct"] is False
    assert pickle.loads(pickle.dumps(old)).predict(["good film"]).equals(clf.predict(["good film"]))
