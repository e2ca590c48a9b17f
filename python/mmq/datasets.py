"""Data sets mmq generates itself, so the demo and the tests need no download.

:func:`make_topics` builds a seeded, noisy topic-classification set: each row has a text
(words drawn from its class's topic vocabulary, from neighbouring classes' vocabularies,
and from a shared background vocabulary) and a dense ``image`` vector (a class prototype
plus noise; null in a fraction of rows), so text alone and the vector alone each
classify it imperfectly.
"""
from __future__ import annotations

import numpy as np
import polars as pl

_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "ve", "zu", "an", "el", "or", "ix", "um"]


def _words(rng: np.random.Generator, n: int) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        k = int(rng.integers(2, 4))
        out.add("".join(rng.choice(_SYLLABLES, size=k)))
    return sorted(out)


def make_topics(n_rows: int = 20_000, n_classes: int = 5, dense_dim: int = 64,
                missing_dense: float = 0.1, seed: int = 0) -> pl.DataFrame:
    """A generated topic data set with columns ``text``, ``label``, ``image``
    (Array[Float32, dense_dim], null in ``missing_dense`` of rows) and ``split``
    (80% train, 10% valid, 10% test).

    Example:
        >>> from mmq.datasets import make_topics
        >>> make_topics(100, seed=1).columns
        ['text', 'label', 'image', 'split']
    """
    rng = np.random.default_rng(seed)
    vocab = _words(rng, 60 * n_classes + 400)
    rng.shuffle(vocab)
    topic = [vocab[60 * c: 60 * (c + 1)] for c in range(n_classes)]
    background = vocab[60 * n_classes:]
    names = [f"topic_{c}" for c in range(n_classes)]
    labels = rng.integers(0, n_classes, size=n_rows)
    texts = []
    for c in labels:
        n = int(rng.integers(6, 16))
        src = rng.random(n)
        words = []
        for r in src:
            if r < 0.22:
                words.append(topic[c][int(rng.integers(0, 60))])
            elif r < 0.32:
                other = (c + int(rng.choice([-1, 1]))) % n_classes
                words.append(topic[other][int(rng.integers(0, 60))])
            else:
                words.append(background[int(rng.integers(0, len(background)))])
        texts.append(" ".join(words))
    protos = rng.normal(size=(n_classes, dense_dim)).astype(np.float32)
    dense = protos[labels] * 0.35 + rng.normal(size=(n_rows, dense_dim)).astype(np.float32)
    missing = rng.random(n_rows) < missing_dense
    split = np.where(np.arange(n_rows) < 0.8 * n_rows, "train",
                     np.where(np.arange(n_rows) < 0.9 * n_rows, "valid", "test"))
    image = pl.Series("image", dense, dtype=pl.Array(pl.Float32, dense_dim))
    df = pl.DataFrame({
        "text": texts,
        "label": [names[c] for c in labels],
        "image": image,
        "split": split,
    })
    return df.with_columns(
        pl.when(pl.Series(missing)).then(None).otherwise(pl.col("image")).alias("image")
    )
