"""Pictures of a fitted model: a confusion matrix, the learning curve of a fit with a
validation split, and the images a visual token stands for.

Needs matplotlib (``pip install 'mmq[plot]'``); everything else of mmq works without
it, so it is imported when a function here is first called. Each function draws on
``ax`` (or a new figure) and returns the Axes (the Figure for the gallery), so it fits
into a notebook cell or a script that calls ``savefig``.

    >>> ax = mmq.plot.confusion_matrix(clf, test)            # doctest: +SKIP
    >>> ax = mmq.plot.learning_curve(clf)                    # doctest: +SKIP
    >>> fig = mmq.plot.visual_token(clf, train, "image", j=0, c=17, images="path")  # doctest: +SKIP
"""
from __future__ import annotations

import io
import math
from typing import Any, Optional, Sequence

import numpy as np
import polars as pl

from mmq._input import as_frame
from mmq.errors import DependencyError, InvalidInputError, InvalidParameterError


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:  # an optional extra: say how to get it
        raise DependencyError("mmq.plot needs matplotlib: pip install 'mmq[plot]' (or pip install matplotlib)") from e
    return plt


def _axes(ax):
    return ax if ax is not None else _pyplot().subplots()[1]


def confusion(clf: Any, data: Any, label: str = "label", text: str = "text",
              labels: Optional[Sequence[str]] = None) -> tuple[np.ndarray, list]:
    """The confusion matrix of ``clf``'s top-1 predictions on ``data`` against its
    ``label`` column: ``(counts, labels)``, rows the true label, columns the predicted
    one, in the order of ``labels`` (default: every label of the truth and the
    predictions, sorted). As scikit-learn's ``confusion_matrix(y, pred, labels=...)``:
    rows whose true label is not in ``labels`` are left out, and so are predictions
    outside it; a row without a prediction (``threshold``) counts in no column."""
    df = as_frame(data)
    if label not in df.columns:
        raise InvalidInputError(f"label column '{label}' not found; the frame has columns {df.columns}")
    pred = clf.predict(df, text=text)
    pred = pred.get_column("label") if isinstance(pred, pl.DataFrame) else pl.Series(np.asarray(pred))
    truth = df.get_column(label).cast(pl.String)
    pred = pred.cast(pl.String)
    if labels is None:
        labels = sorted(set(truth.drop_nulls().to_list()) | set(pred.drop_nulls().to_list()))
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise InvalidParameterError("labels has duplicates")
    index = {name: i for i, name in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(truth.to_list(), pred.to_list()):
        if t in index and p in index:
            counts[index[t], index[p]] += 1
    return counts, labels


def confusion_matrix(clf: Any, data: Any, label: str = "label", text: str = "text",
                     labels: Optional[Sequence[str]] = None, normalize: Optional[str] = None,
                     ax: Any = None, annotate: Optional[bool] = None):
    """Draw :func:`confusion` as a heat map. ``normalize``: ``None`` (counts), ``"true"``
    (each row sums to 1: recall on the diagonal) or ``"pred"`` (each column: precision).
    ``annotate``: write the numbers in the cells (default: up to 20 labels). The drawn
    matrix is ``ax.images[0].get_array()``."""
    if normalize not in (None, "true", "pred"):
        raise InvalidParameterError(f"normalize must be None, 'true' or 'pred', got {normalize!r}")
    counts, names = confusion(clf, data, label=label, text=text, labels=labels)
    m = counts.astype(np.float64)
    if normalize is not None:
        axis = 1 if normalize == "true" else 0
        sums = m.sum(axis=axis, keepdims=True)
        m = np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)
    ax = _axes(ax)
    img = ax.imshow(m, cmap="Blues", interpolation="nearest")
    ax.figure.colorbar(img, ax=ax)
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, labels=names, rotation=90, fontsize="small")
    ax.set_yticks(ticks, labels=names, fontsize="small")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if annotate if annotate is not None else len(names) <= 20:
        top = m.max() if m.size else 0
        for i in range(len(names)):
            for j in range(len(names)):
                v = m[i, j]
                ax.text(j, i, f"{v:.2f}" if normalize else f"{int(v)}", ha="center", va="center",
                        fontsize="x-small", color="white" if top and v > top / 2 else "black")
    ax.set_title("confusion matrix" + (f" (normalised by {normalize})" if normalize else ""))
    return ax


def learning_curve(clf: Any, ax: Any = None):
    """The per-epoch record of a fit with ``valid=``: train and validation loss (left
    axis) and validation accuracy (right axis, dashed) by epoch, the kept epoch marked.
    The lines hold exactly :attr:`Classifier.history`'s columns."""
    h = clf.history
    need = {"epoch", "train_loss", "valid_loss", "valid_accuracy"}
    if h.height == 0 or not need <= set(h.columns):
        raise InvalidInputError("this model has no per-epoch history: fit it with a validation split, "
                                "fit(train, valid=valid_df)")
    ax = _axes(ax)
    epoch = h.get_column("epoch").to_numpy()
    ax.plot(epoch, h.get_column("train_loss").to_numpy(), marker="o", label="train loss")
    ax.plot(epoch, h.get_column("valid_loss").to_numpy(), marker="o", label="valid loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    acc = ax.twinx()
    acc.plot(epoch, h.get_column("valid_accuracy").to_numpy(), color="tab:green", linestyle="--",
             marker=".", label="valid accuracy")
    acc.set_ylabel("valid accuracy")
    if "best" in h.columns and h.get_column("best").any():
        best = h.filter(pl.col("best")).get_column("epoch")[0]
        ax.axvline(best, color="grey", linestyle=":", label=f"kept (epoch {best})")
    lines = ax.get_legend_handles_labels()
    more = acc.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize="small")
    ax.set_title("learning curve")
    return ax


def _image(value: Any) -> np.ndarray:
    """An image from a path (str) or encoded bytes (PNG; JPEG and others via Pillow)."""
    import matplotlib.image as mpimg

    if isinstance(value, (bytes, bytearray)):
        return mpimg.imread(io.BytesIO(value))
    if isinstance(value, str):
        return mpimg.imread(value)
    raise InvalidInputError(f"an image must be a path (str) or encoded bytes, got {type(value).__name__}")


def visual_token(clf: Any, data: Any, column: str, j: int, c: int, images: str = "image_path",
                 n: int = 9, title: Optional[str] = None):
    """A grid of the images of the ``n`` rows of ``data`` nearest the visual token
    ``column[j]=c`` (centroid c of sub-quantizer j of dense column ``column``: the rows
    of :meth:`Classifier.rows_near_centroid`), each titled with its distance. ``images``
    names the column with each row's image as a path or as encoded bytes. Returns the
    Figure."""
    df = as_frame(data)
    if images not in df.columns:
        raise InvalidInputError(f"image column '{images}' not found; the frame has columns {df.columns}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidParameterError(f"n must be an integer >= 1, got {n!r}")
    rows = clf.rows_near_centroid(df, column, j, c, n=n)
    plt = _pyplot()
    cols = math.ceil(math.sqrt(max(rows.height, 1)))
    lines = max(math.ceil(rows.height / cols), 1)
    fig, axes = plt.subplots(lines, cols, figsize=(2 * cols, 2 * lines + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, value, d in zip(axes.flat, rows.get_column(images).to_list(), rows.get_column("distance").to_list()):
        if value is None:
            ax.set_title("(no image)", fontsize="small")
            continue
        ax.imshow(_image(value))
        ax.set_title(f"d = {d:.3g}", fontsize="small")
    fig.suptitle(title or f"visual token {column}[{j}] = {c}")
    return fig
