"""mmq.plot: the confusion matrix against scikit-learn's, the learning curve against
.history, the visual-token gallery against rows_near_centroid (images from paths and
from bytes)."""
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pytest  # noqa: E402
from sklearn.metrics import confusion_matrix as sk_confusion  # noqa: E402

import mmq  # noqa: E402
from mmq.datasets import make_topics  # noqa: E402


@pytest.fixture(scope="module")
def data():
    df = make_topics(n_rows=3000, dense_dim=16, seed=4)
    return (df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "valid"),
            df.filter(pl.col("split") == "test"))


def params(**kw):
    p = dict(dim=16, epoch=6, lr=0.3, word_ngrams=2, threads=1, seed=0, progress=False)
    p.update(kw)
    return p


@pytest.fixture(scope="module")
def fitted(data):
    train, valid, _ = data
    return mmq.Classifier(**params()).fit(train, valid=valid)


def test_confusion_matrix_is_scikit_learns(data, fitted):
    _, _, test = data
    pred = fitted.predict(test)["label"].to_numpy()
    truth = test["label"].to_numpy()
    labels = sorted(set(truth) | set(pred))
    counts, names = mmq.plot.confusion(fitted, test)
    assert names == labels
    np.testing.assert_array_equal(counts, sk_confusion(truth, pred, labels=labels))
    for norm in (None, "true", "pred"):
        ax = mmq.plot.confusion_matrix(fitted, test, normalize=norm)
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()),
                                   sk_confusion(truth, pred, labels=labels, normalize=norm), atol=1e-12)
        plt.close(ax.figure)
    some = labels[:2]
    np.testing.assert_array_equal(mmq.plot.confusion(fitted, test, labels=some)[0],
                                  sk_confusion(truth, pred, labels=some))
    with pytest.raises(mmq.InvalidParameterError, match="normalize"):
        mmq.plot.confusion_matrix(fitted, test, normalize="all")
    with pytest.raises(mmq.InvalidInputError, match="label column 'y'"):
        mmq.plot.confusion(fitted, test, label="y")


def test_learning_curve_draws_the_history(data, fitted):
    h = fitted.history
    ax = mmq.plot.learning_curve(fitted)
    train_line, valid_line = ax.get_lines()[:2]
    np.testing.assert_allclose(train_line.get_ydata(), h["train_loss"].to_numpy())
    np.testing.assert_allclose(valid_line.get_ydata(), h["valid_loss"].to_numpy())
    acc = [a for a in ax.figure.axes if a is not ax][0].get_lines()[0]
    np.testing.assert_allclose(acc.get_ydata(), h["valid_accuracy"].to_numpy())
    best = h.filter(pl.col("best"))["epoch"][0]
    assert any(list(line.get_xdata()) == [best, best] for line in ax.get_lines()[2:])
    plt.close(ax.figure)
    train, _, _ = data
    no_valid = mmq.Classifier(**params(epoch=1)).fit(train)
    with pytest.raises(mmq.InvalidInputError, match="valid"):
        mmq.plot.learning_curve(no_valid)


def test_visual_token_gallery_shows_the_nearest_rows_images(data, tmp_path):
    train, _, _ = data
    train = train.head(400)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(train.height, 4, 4, 3), dtype=np.uint8)
    paths, blobs = [], []
    for i, px in enumerate(pixels):
        p = tmp_path / f"{i}.png"
        mpimg.imsave(p, px)
        paths.append(str(p))
        buf = io.BytesIO()
        mpimg.imsave(buf, px, format="png")
        blobs.append(buf.getvalue())
    train = train.with_columns(pl.Series("path", paths), pl.Series("png", blobs, dtype=pl.Binary))
    clf = mmq.Classifier(**params(), dense={"image": mmq.PQ(m=4, k=8)}).fit(train)
    near = clf.rows_near_centroid(train, "image", 2, 3, n=5)
    for column in ("path", "png"):
        fig = mmq.plot.visual_token(clf, train, "image", 2, 3, images=column, n=5)
        shown = [a for a in fig.axes if a.images]
        assert len(shown) == 5
        for ax, row, d in zip(shown, near["row"].to_list(), near["distance"].to_list()):
            img = np.asarray(ax.images[0].get_array())
            np.testing.assert_array_equal(np.round(img[..., :3] * 255).astype(np.uint8), pixels[row])
            assert ax.get_title() == f"d = {d:.3g}"
        plt.close(fig)
    with pytest.raises(mmq.InvalidInputError, match="image column 'photo'"):
        mmq.plot.visual_token(clf, train, "image", 0, 0, images="photo")
    with pytest.raises(mmq.InvalidParameterError, match="n must be"):
        mmq.plot.visual_token(clf, train, "image", 0, 0, images="path", n=0)
