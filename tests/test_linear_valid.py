"""The linear head, validation-driven training, calibration and late fusion."""
import pickle

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import mmq
from mmq.errors import InvalidInputError, InvalidParameterError


@pytest.fixture(scope="module")
def topics():
    from mmq.datasets import make_topics

    df = make_topics(n_rows=3000, dense_dim=16, seed=5)
    return tuple(df.filter(pl.col("split") == s) for s in ("train", "valid", "test"))


def params(**kw):
    p = dict(epoch=5, lr=0.5, word_ngrams=2, threads=1, seed=0, progress=False, head="linear")
    p.update(kw)
    return p


def reference_features(ids, idf=None):
    """NumPy reference of the linear head's features: merged duplicates, 1 + ln count,
    optional IDF, L2 norm."""
    uniq, counts = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
    v = 1.0 + np.log(counts)
    if idf is not None:
        v = v * np.array([idf[u] for u in uniq])
    return uniq, v / np.linalg.norm(v)


def sparse_features(clf, texts, vocab):
    """The reference features of ``texts`` as a scipy CSR matrix over ``vocab`` (token id
    → column), tokens outside it dropped."""
    from scipy import sparse

    rows, cols, vals = [], [], []
    for i, ids in enumerate(clf.tokenize(texts).to_list()):
        uniq, v = reference_features([t for t in ids if t in vocab] or [-1])
        if uniq[0] == -1:
            continue
        rows += [i] * len(uniq)
        cols += [vocab[t] for t in uniq]
        vals += list(v)
    return sparse.csr_matrix((vals, (rows, cols)), shape=(len(texts), len(vocab)))


@pytest.mark.parametrize("use_idf", [False, True])
def test_linear_head_matches_numpy_forward(topics, use_idf):
    train, _, test = topics
    clf = mmq.Classifier(**params(idf=use_idf)).fit(train.drop("image"))
    texts = test["text"].head(40).to_list() + ["good good good news news"]
    got = clf.predict_proba(texts).to_numpy()
    ids_rows = clf.tokenize(texts).to_list()
    m = clf._model
    b = m.output_matrix()[0]
    idf = None
    if use_idf:
        # IDF recomputed from the training rows (scikit-learn's smooth formula)
        rows = [set(r) for r in clf.tokenize(train["text"]).to_list()]
        n = len(rows)
        df_count = {}
        for r in rows:
            for t in r:
                df_count[t] = df_count.get(t, 0) + 1
        idf = {t: np.log((1 + n) / (1 + c)) + 1 for t, c in df_count.items()}
    for row, ids in zip(got, ids_rows):
        known = [t for t in ids if t in (idf or {}) or not np.isnan(m.embeddings([t])).any()]
        uniq, v = reference_features(known, idf)
        w = m.embeddings(uniq.astype(np.uint32).tolist()) if len(uniq) else np.zeros((0, len(clf.labels)))
        z = b + v @ w
        p = np.exp(z - z.max())
        np.testing.assert_allclose(row, p / p.sum(), rtol=2e-4, atol=2e-6)


def test_linear_head_learns_and_round_trips(topics, tmp_path):
    train, _, test = topics
    clf = mmq.Classifier(**params()).fit(train.drop("image"))
    assert clf.test(test).precision > 0.6  # 5 classes: chance is 0.2
    clf.save(tmp_path / "lin.mmq")
    back = mmq.load(tmp_path / "lin.mmq")
    assert back.head == "linear" and back.get_params()["head"] == "linear"
    assert_frame_equal(back.predict_proba(test), clf.predict_proba(test))
    assert_frame_equal(pickle.loads(pickle.dumps(clf)).predict(test), clf.predict(test))
    ex = clf.explain(test["text"][0])
    assert ex.height > 0 and ex["score"].is_finite().all()


@pytest.mark.parametrize("loss", ["ns", "ova"])
def test_linear_head_other_losses(topics, loss):
    train, _, test = topics
    clf = mmq.Classifier(**params(loss=loss, epoch=10)).fit(train.drop("image"))
    assert clf.test(test).precision > 0.6


def test_linear_head_with_code_tokens(topics):
    train, _, test = topics
    text = mmq.Classifier(**params()).fit(train.drop("image")).test(test).precision
    clf = mmq.Classifier(**params(), dense={"image": mmq.PQ(m=4, k=16)}).fit(train)
    assert clf.test(test).precision > text + 0.03


def test_valid_keeps_best_epoch_and_records_history(topics):
    train, valid, _ = topics
    for kw in (params(epoch=8), params(head="bottleneck", dim=10, epoch=8)):
        clf = mmq.Classifier(**kw).fit(train, valid=valid)
        h = clf.history
        assert h.columns == ["epoch", "train_loss", "valid_loss", "valid_accuracy", "best"]
        assert h.height == 8 and h["epoch"].to_list() == list(range(8))
        best = h.filter(pl.col("best"))["valid_accuracy"].max()
        assert best == h["valid_accuracy"].max()
        # the kept weights are the best epoch's: their valid accuracy is that epoch's
        assert clf.test(valid).precision == pytest.approx(best, abs=1e-6)


def test_patience_stops_early(topics):
    train, valid, _ = topics
    clf = mmq.Classifier(**params(epoch=200, lr=1.0)).fit(train, valid=valid, patience=2)
    h = clf.history
    assert h.height < 200
    assert not h["best"].tail(2).any()
    assert mmq.Classifier(**params()).fit(train).history.height == 0


def test_calibration_lowers_valid_loss_and_is_a_power_of_the_probabilities(topics):
    train, valid, _ = topics
    kw = params(head="bottleneck", dim=10, epoch=20, lr=1.0)
    raw = mmq.Classifier(**kw).fit(train, valid=valid, calibrate=False)
    cal = mmq.Classifier(**kw).fit(train, valid=valid)
    assert raw.temperature == 1.0 and cal.temperature != 1.0
    gold = np.array([raw.labels.index(v) for v in valid["label"]])
    p1 = raw.predict_proba(valid).to_numpy().astype(np.float64)
    pt = cal.predict_proba(valid).to_numpy().astype(np.float64)
    ref = p1 ** (1 / cal.temperature)
    ref /= ref.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(pt, ref, rtol=1e-3, atol=1e-6)
    nll = lambda p: -np.log(np.maximum(p[np.arange(len(gold)), gold], 1e-12)).mean()  # noqa: E731
    assert nll(pt) < nll(p1)
    assert (pt.argmax(1) == p1.argmax(1)).all()


def test_valid_bad_input(topics):
    train, valid, _ = topics
    clf = mmq.Classifier(**params())
    with pytest.raises(InvalidParameterError, match="patience"):
        clf.fit(train, valid=valid, patience=0)
    with pytest.raises(InvalidParameterError, match="patience"):
        clf.fit(train, patience=3)
    with pytest.raises(InvalidInputError, match="'text'"):
        clf.fit(train, valid=valid.drop("text"))
    with pytest.raises(InvalidInputError, match="empty"):
        clf.fit(train, valid=valid.head(0))
    odd = valid.with_columns(pl.when(pl.int_range(pl.len()) < 7).then(pl.lit("never_seen"))
                             .otherwise(pl.col("label")).alias("label"))
    with pytest.warns(UserWarning, match="7 label"):
        clf.fit(train, valid=odd)
    assert clf.history["valid_accuracy"].max() <= 1 - 7 / valid.height + 1e-6
    for bad in (dict(head="wide"), dict(l2=-1.0), dict(loss="hs"), dict(idf=1), dict(fusion="gated", dense=["image"])):
        with pytest.raises(InvalidParameterError):
            mmq.Classifier(**params(**bad))


def test_late_fusion(topics, tmp_path):
    train, valid, test = topics
    text_only = mmq.Classifier(**params()).fit(train.drop("image"), valid=valid.drop("image"))
    late = mmq.Classifier(**params(), fusion="late", dense=["image"]).fit(train, valid=valid)
    w = late._model.weights
    assert len(w) == 1 and 0 <= w[0] <= 2
    # the weights minimise the valid loss over the grid, text alone (w = 0) included
    stack = pl.DataFrame(late._model.stacking)
    assert stack.filter(pl.col("weight") == w[0])["valid_loss"][0] == pytest.approx(stack["valid_loss"].min())
    assert late.test(valid).precision >= text_only.test(valid).precision - 0.01
    p = late.predict_proba(test)
    np.testing.assert_allclose(p.to_numpy().sum(axis=1), 1.0, rtol=1e-4)
    # a row without its image is predicted from the text head alone (weights, temperature)
    row = test.head(1).with_columns(pl.lit(None, dtype=test["image"].dtype).alias("image"))
    assert late.predict(row)["label"][0] is not None
    late.save(tmp_path / "late.mmq")
    back = mmq.load(tmp_path / "late.mmq")
    assert back.fusion == "late"
    assert_frame_equal(back.predict_proba(test), p)
    assert_frame_equal(pickle.loads(pickle.dumps(late)).predict(test, k=2), late.predict(test, k=2))
    with pytest.raises(InvalidParameterError, match="late"):
        test.select(mmq.predict(late))
    with pytest.raises(InvalidParameterError, match="validation"):
        mmq.Classifier(**params(), fusion="late", dense=["image"]).fit(train)
    with pytest.raises(InvalidParameterError, match="dense"):
        mmq.Classifier(**params(), fusion="late")


def test_autotune_picks_the_best_trial(topics):
    train, valid, _ = topics
    r = mmq.autotune(train.drop("image"), valid.drop("image"), budget_s=30, max_trials=4, progress=False,
                     threads=1)
    assert r.trials.height == 4
    assert r.trials["stage"].unique().to_list() == ["text"]
    best = r.trials["accuracy"].max()
    assert r.classifier.test(valid).precision == pytest.approx(best)
    clf, trials = r  # unpacks as (classifier, trials)
    assert trials.height == 4 and clf is r.classifier


def test_autotune_with_images_keeps_text_alone_as_a_candidate(topics):
    train, valid, _ = topics
    r = mmq.autotune(train, valid, budget_s=20, max_trials=5, dense=["image"], progress=False, threads=1)
    stages = r.trials["stage"].to_list()
    assert stages[0] == "text" and "fusion" in stages
    assert r.trials.filter(pl.col("stage") == "fusion")["fusion"][0] == "late"
    text_best = r.trials.filter(pl.col("stage") == "text")["accuracy"].max()
    assert r.trials["accuracy"].max() >= text_best
    assert r.classifier.test(valid).precision == pytest.approx(r.trials["accuracy"].max())


def test_autotune_bad_input(topics):
    train, valid, _ = topics
    for kw, what in ((dict(metric="auc"), "metric"), (dict(budget_s=0), "budget_s"), (dict(budget_s=-3), "budget_s"),
                     (dict(budget_s=float("nan")), "budget_s"), (dict(max_trials=0), "max_trials"),
                     (dict(patience=0), "patience")):
        with pytest.raises(InvalidParameterError, match=what):
            mmq.autotune(train, valid, progress=False, **kw)
    with pytest.raises(InvalidInputError, match="'photo'"):
        mmq.autotune(train, valid, dense=["photo"], progress=False)
    # a budget shorter than one trial runs exactly one
    r = mmq.autotune(train.drop("image"), valid.drop("image"), budget_s=1e-3, progress=False, threads=1)
    assert r.trials.height == 1


def test_cli_validation_and_autotune(tmp_path, capsys):
    from mmq.cli import main

    from mmq.datasets import make_topics

    df = make_topics(n_rows=1500, dense_dim=8, seed=1)
    for split in ("train", "valid", "test"):
        with open(tmp_path / f"{split}.txt", "w") as f:
            for t, lab in df.filter(pl.col("split") == split).select("text", "label").iter_rows():
                f.write(f"__label__{lab} {t}\n")
    model = str(tmp_path / "m")
    assert main(["supervised", "-input", str(tmp_path / "train.txt"), "-output", model, "-head", "linear",
                 "-lr", "0.5", "-epoch", "20", "-validation", str(tmp_path / "valid.txt"), "-patience", "2",
                 "-wordNgrams", "2", "-thread", "1", "-quiet"]) == 0
    m = mmq.load(model + ".mmq")
    assert m.head == "linear" and 0 < m.history.height <= 20 and m.temperature != 1.0
    assert main(["supervised", "-input", str(tmp_path / "train.txt"), "-output", model + "2",
                 "-autotune-validation", str(tmp_path / "valid.txt"), "-autotune-duration", "3",
                 "-thread", "1", "-quiet"]) == 0
    assert main(["test", model + "2.mmq", str(tmp_path / "test.txt")]) == 0
    assert float(capsys.readouterr().out.split("\n")[1].split("\t")[1]) > 0.5


def test_concat_fusion(topics, tmp_path):
    train, valid, test = topics
    text = mmq.Classifier(**params()).fit(train.drop("image"), valid=valid.drop("image")).test(test).precision
    clf = mmq.Classifier(**params(alpha=1.0), fusion="concat", dense=["image"]).fit(train, valid=valid)
    assert clf.test(test).precision > text + 0.03  # the generated images carry signal
    assert clf.history.height == 5 and clf.temperature > 0
    p = clf.predict_proba(test)
    clf.save(tmp_path / "c.mmq")
    back = mmq.load(tmp_path / "c.mmq")
    assert back.fusion == "concat"
    assert_frame_equal(back.predict_proba(test), p)
    assert_frame_equal(pickle.loads(pickle.dumps(clf)).predict(test), clf.predict(test))
    # a row without an image: text features alone
    row = test.head(3).with_columns(pl.lit(None, dtype=test["image"].dtype).alias("image"))
    assert clf.predict(row)["label"].null_count() == 0
    # alpha 0 = the text model (same features, same seed; the learning-rate schedule counts
    # the dense tokens as work, so the decay differs slightly)
    zero = mmq.Classifier(**params(alpha=0.0), fusion="concat", dense=["image"]).fit(train)
    plain = mmq.Classifier(**params()).fit(train.drop("image"))
    np.testing.assert_allclose(zero.predict_proba(test).to_numpy(), plain.predict_proba(test).to_numpy(),
                               atol=2e-3)
    with pytest.raises(InvalidParameterError, match="linear"):
        mmq.Classifier(fusion="concat", dense=["image"])


@pytest.mark.parametrize("kw", [dict(fusion="concat", dense=["image"]), dict(dense={"image": "pq"})])
def test_modality_dropout(topics, kw):
    train, valid, test = topics
    kw = dict(kw)
    if kw.get("dense") == {"image": "pq"}:
        kw["dense"] = {"image": mmq.PQ(m=4, k=16)}
    base = mmq.Classifier(**params(), **kw).fit(train)
    drop = mmq.Classifier(**params(), **kw, modality_dropout=0.3).fit(train)
    # a different model (rows trained on one modality), still a good one
    assert not np.allclose(base.predict_proba(test).to_numpy(), drop.predict_proba(test).to_numpy())
    assert drop.test(test).precision > base.test(test).precision - 0.05
    assert drop.get_params()["modality_dropout"] == 0.3
    for bad in (-0.1, 1.0, "x", True):
        with pytest.raises(InvalidParameterError, match="modality_dropout"):
            mmq.Classifier(**params(), **kw, modality_dropout=bad)
    with pytest.raises(InvalidParameterError, match="modality_dropout"):
        mmq.Classifier(**params(), fusion="late", dense=["image"], modality_dropout=0.2)


# -- every model kind: validation-driven training, history, calibration ---------------
KINDS = {
    "gated": dict(fusion="gated", dense=["image"]),
    "bilinear": dict(fusion="bilinear", dense=["image"], rank=8),
    "deepset": dict(fusion="deepset", dense={"image": "pq"}),
    "attention": dict(fusion="attention", dense={"image": "pq"}),
    "bag+gblend": dict(fusion="discrete", dense={"image": "pq"}, blend="gblend"),
    "deepset+gblend_offline": dict(fusion="deepset", dense={"image": "pq"}, blend="gblend_offline"),
}


def kind_params(name, **kw):
    spec = dict(KINDS[name])
    if isinstance(spec["dense"], dict):
        spec["dense"] = {"image": mmq.PQ(m=4, k=16, seed=0)}
    return dict(epoch=6, dim=12, lr=0.2, threads=1, seed=0, progress=False, **spec, **kw)


@pytest.mark.parametrize("name", list(KINDS))
def test_every_model_kind_keeps_its_best_epoch(topics, name, tmp_path):
    train, valid, _ = topics
    train, valid = train.drop("split"), valid.drop("split")
    clf = mmq.Classifier(**kind_params(name)).fit(train, valid=valid, calibrate=False)
    h = clf.history
    assert h.columns == ["epoch", "train_loss", "valid_loss", "valid_accuracy", "best"]
    assert h.height == 6 and h["best"][0]
    best = h.filter(pl.col("best")).tail(1)
    assert best["valid_accuracy"][0] == h["valid_accuracy"].max()
    # the weights kept score on valid as the epoch recorded (NumPy reference of loss/acc)
    p = clf.predict_proba(valid).to_numpy().astype(np.float64)
    gold = np.array([clf.labels.index(v) for v in valid["label"]])
    assert (p.argmax(1) == gold).mean() == pytest.approx(best["valid_accuracy"][0], abs=1e-6)
    nll = -np.log(np.maximum(p[np.arange(len(gold)), gold], 1e-12)).mean()
    assert nll == pytest.approx(best["valid_loss"][0], rel=1e-3)
    if "gblend" in name:
        assert clf.blend_history.height > 0
    # patience 1 stops at the first epoch without a better score
    first_worse = h["best"].arg_min() if not h["best"].all() else None
    short = mmq.Classifier(**kind_params(name)).fit(train, valid=valid, patience=1, calibrate=False)
    assert short.history.height == (6 if first_worse is None else first_worse + 1)
    # calibration: probabilities are a power of the uncalibrated ones, loss no higher
    cal = mmq.Classifier(**kind_params(name)).fit(train, valid=valid)
    pc = cal.predict_proba(valid).to_numpy().astype(np.float64)
    ref = p ** (1 / cal.temperature)
    ref /= ref.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(pc, ref, rtol=2e-3, atol=1e-6)
    assert -np.log(np.maximum(pc[np.arange(len(gold)), gold], 1e-12)).mean() <= nll + 1e-6
    # the Polars expression applies the same temperature
    ex = valid.select(mmq.predict_proba(cal, dense={"image": "image"})).to_series()
    np.testing.assert_allclose(np.array(ex.to_list()), pc, rtol=1e-6, atol=1e-7)
    # history and temperature survive save/load and pickle
    cal.save(tmp_path / "m.mmq")
    for back in (mmq.load(tmp_path / "m.mmq"), pickle.loads(pickle.dumps(cal))):
        assert_frame_equal(back.history, cal.history)
        assert back.temperature == cal.temperature
        np.testing.assert_allclose(back.predict_proba(valid).to_numpy(), pc, rtol=1e-6, atol=1e-7)


def test_every_model_kind_valid_bad_input(topics):
    train, valid, _ = topics
    train, valid = train.drop("split"), valid.drop("split")
    for name in ("gated", "deepset"):
        clf = mmq.Classifier(**kind_params(name))
        with pytest.raises(InvalidInputError, match="'image'"):
            clf.fit(train, valid=valid.drop("image"))
        with pytest.raises(InvalidInputError, match="empty"):
            clf.fit(train, valid=valid.head(0))
        with pytest.raises(InvalidParameterError, match="patience"):
            clf.fit(train, valid=valid, patience=0)
        odd = valid.with_columns(pl.when(pl.int_range(pl.len()) < 5).then(pl.lit("never_seen"))
                                 .otherwise(pl.col("label")).alias("label"))
        with pytest.warns(UserWarning, match="5 label"):
            clf.fit(train, valid=odd, calibrate=False)
        assert clf.history["valid_accuracy"].max() <= 1 - 5 / valid.height + 1e-6
    # a validation frame whose dense column is null everywhere: text alone scores it
    nulls = valid.with_columns(pl.lit(None, dtype=valid.schema["image"]).alias("image"))
    clf = mmq.Classifier(**kind_params("gated")).fit(train, valid=nulls)
    assert clf.history.height == 6
    # a model without valid has no history and no temperature
    plain = mmq.Classifier(**kind_params("deepset")).fit(train)
    assert plain.history.height == 0 and plain.temperature == 1.0


def test_l2_mode_full_reaches_scikit_learns_logistic_regression(topics):
    """l2_mode='full' minimises Σ loss + (n·l2/2)‖w‖², scikit-learn's LogisticRegression
    objective with C = 1/(n·l2): trained long enough, mmq's probabilities meet the exact
    solver's on the same features (sublinear TF, L2 rows). The lazy penalty (VW's) is
    another objective and stays away from it."""
    from sklearn.linear_model import LogisticRegression

    train, _, test = (t.drop("image") for t in topics)
    l2, n = 1e-4, train.height

    diffs = {}
    for mode in ("full", "lazy"):
        clf = mmq.Classifier(**params(l2=l2, l2_mode=mode, epoch=50, word_ngrams=1)).fit(train)
        vocab = {t: i for i, t in enumerate(sorted({t for r in clf.tokenize(train["text"]).to_list() for t in r}))}
        y = np.array([clf.labels.index(v) for v in train["label"]])
        ref = LogisticRegression(C=1 / (n * l2), max_iter=5000, tol=1e-8).fit(
            sparse_features(clf, train["text"].to_list(), vocab), y)
        ps = ref.predict_proba(sparse_features(clf, test["text"].to_list(), vocab))[:, np.argsort(ref.classes_)]
        diffs[mode] = np.abs(ps - clf.predict_proba(test["text"]).to_numpy()).max()
    assert diffs["full"] < 0.05, diffs
    assert diffs["lazy"] > 4 * diffs["full"], diffs


def test_class_weight_reaches_scikit_learns_weighted_logistic_regression(topics):
    """class_weight scales each row's loss by its label's weight: with the full penalty
    mmq minimises scikit-learn's class-weighted LogisticRegression objective, for a dict
    and for 'balanced' on a skewed training set; the unweighted fit is far from it. (The
    weighted objective converges more slowly — its rare classes are seldom updated — so
    this runs 150 epochs: 0.036 / 0.063 away after them, 0.09 / 0.14 after 50.)"""
    from sklearn.linear_model import LogisticRegression

    train, _, test = (t.drop("image") for t in topics)
    names = sorted(train["label"].unique().to_list())
    # Skew the classes: keep a tenth of two labels' rows.
    train = pl.concat([train.filter(pl.col("label") == names[0]).head(40),
                       train.filter(pl.col("label") == names[1]).head(60),
                       train.filter(~pl.col("label").is_in(names[:2]))])
    l2, n = 1e-4, train.height

    for cw in ({names[0]: 4.0, names[2]: 0.25}, "balanced"):
        clf = mmq.Classifier(**params(l2=l2, l2_mode="full", epoch=150, word_ngrams=1, class_weight=cw)).fit(train)
        plain = mmq.Classifier(**params(l2=l2, l2_mode="full", epoch=150, word_ngrams=1)).fit(train)
        vocab = {t: i for i, t in enumerate(sorted({t for r in clf.tokenize(train["text"]).to_list() for t in r}))}
        y = np.array([clf.labels.index(v) for v in train["label"]])
        sk_cw = cw if cw == "balanced" else {clf.labels.index(k): v for k, v in cw.items()}
        ref = LogisticRegression(C=1 / (n * l2), max_iter=5000, tol=1e-8, class_weight=sk_cw).fit(
            sparse_features(clf, train["text"].to_list(), vocab), y)
        ps = ref.predict_proba(sparse_features(clf, test["text"].to_list(), vocab))[:, np.argsort(ref.classes_)]
        weighted = np.abs(ps - clf.predict_proba(test["text"]).to_numpy()).max()
        unweighted = np.abs(ps - plain.predict_proba(test["text"]).to_numpy()).max()
        assert weighted < 0.08 and unweighted > 3 * weighted, (cw, weighted, unweighted)


def test_class_weight_every_loss_and_bad_values(topics):
    train, _, test = (t.drop("image") for t in topics)
    names = sorted(train["label"].unique().to_list())
    for kw in (dict(loss="hs"), dict(loss="ns"), dict(loss="ova"), dict(loss="softmax")):
        base = dict(dim=10, epoch=5, lr=0.3, word_ngrams=2, threads=1, seed=0, progress=False, **kw)
        plain = mmq.Classifier(**base).fit(train)
        heavy = mmq.Classifier(**base, class_weight={names[0]: 20.0}).fit(train)
        # A heavy weight on one label makes it predicted more often.
        n_plain = (plain.predict(test)["label"] == names[0]).sum()
        n_heavy = (heavy.predict(test)["label"] == names[0]).sum()
        assert n_heavy > n_plain, (kw, n_plain, n_heavy)
    with pytest.raises(InvalidParameterError, match="class_weight"):
        mmq.Classifier(class_weight="balance")
    with pytest.raises(InvalidParameterError, match="class_weight values"):
        mmq.Classifier(class_weight={"a": -1.0})
    with pytest.raises(InvalidParameterError, match="class_weight values"):
        mmq.Classifier(class_weight={"a": float("nan")})
    with pytest.raises(InvalidParameterError, match="fusion='gated'"):
        mmq.Classifier(class_weight="balanced", fusion="gated", dense=["image"])
    with pytest.raises(InvalidInputError, match="class_weight names label"):
        mmq.Classifier(**params(class_weight={"no_such_label": 2.0})).fit(train)
    with pytest.raises(InvalidInputError, match="class_weight"):
        mmq.Classifier(**params(class_weight={names[0]: 0.0, names[1]: 0.0, names[2]: 0.0, names[3]: 0.0,
                                              names[4]: 0.0})).fit(train)


def test_l2_mode_round_trips_and_is_checked(topics, tmp_path):
    train, _, test = (t.drop("image") for t in topics)
    clf = mmq.Classifier(**params(l2=1e-5, l2_mode="full")).fit(train)
    clf.save(tmp_path / "m.mmq")
    back = mmq.load(tmp_path / "m.mmq")
    assert back.l2_mode == "full" and back.get_params()["l2_mode"] == "full"
    np.testing.assert_array_equal(back.predict_proba(test).to_numpy(), clf.predict_proba(test).to_numpy())
    with pytest.raises(InvalidParameterError, match="l2_mode"):
        mmq.Classifier(**params(l2_mode="objective"))
    with pytest.raises(InvalidParameterError, match="l2_mode"):
        mmq.Classifier(l2_mode="full")  # the bottleneck has no l2


def test_max_seconds_stops_after_the_epoch_that_passes_it(topics):
    train, valid, _ = topics
    import time

    t = time.perf_counter()
    clf = mmq.Classifier(**params(epoch=100000, lr=0.1)).fit(train, valid=valid, max_seconds=0.5)
    took = time.perf_counter() - t
    h = clf.history
    assert 1 <= h.height < 100000 and took < 5.0
    assert h["best"].any() and clf.test(valid).precision == pytest.approx(
        h.filter(pl.col("best"))["valid_accuracy"][-1], abs=1e-6)
    for kw in (dict(fusion="gated", dense=["image"]), dict(fusion="deepset", dense={"image": mmq.PQ(m=4, k=16)})):
        c = mmq.Classifier(epoch=100000, dim=8, lr=0.1, threads=1, progress=False, **kw)
        c.fit(train.drop("split"), valid=valid.drop("split"), max_seconds=0.3, calibrate=False)
        assert 1 <= c.history.height < 100000
    with pytest.raises(InvalidParameterError, match="max_seconds"):
        mmq.Classifier(**params()).fit(train, max_seconds=1.0)
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(InvalidParameterError, match="max_seconds"):
            mmq.Classifier(**params()).fit(train, valid=valid, max_seconds=bad)
