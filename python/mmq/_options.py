"""The names each option of :class:`mmq.Classifier` may take (a leaf module: every
other one may import it)."""
LOSSES = ("softmax", "ns", "hs", "ova")
HEADS = ("bottleneck", "linear")
L2_MODES = ("lazy", "full")
HEAD_DEFAULTS = {"bottleneck": dict(lr=0.1, word_ngrams=1, l2=0.0),
                 "linear": dict(lr=0.2, word_ngrams=2, l2=1e-4)}
FUSIONS = ("discrete", "image", "add", "max", "gated", "bilinear", "bilinear_gated", "deepset", "attention", "late",
           "concat")
CONTINUOUS = FUSIONS[1:7]
TOKEN_FUSIONS = ("discrete", "deepset", "attention")  # dense columns become code tokens
# The tokenizer's on/off options after fastText's (all off by default; stored in the
# model file's tokenizer config, absent from files and pickles made before them).
TOKENIZER_FLAGS = ("lowercase", "split_punct", "drop_punct")
# fastText's label prefix: the default of Classifier(label_prefix=...) and of the CLI's -label.
LABEL_PREFIX = "__label__"
POOLS = ("mean", "sum", "max")
BLENDS = (None, "gblend", "gblend_offline")


# -- grouped options ---------------------------------------------------------------
# Classifier(tokenizer=Tokenizer(...), fusion=Fusion(...), blend=GBlend(...)) groups the
# flat keywords by the part of the model they configure. A field left None takes the
# flat keyword's value; a field given and a flat keyword set to another value than its
# default is an error naming both (Classifier._options resolves and checks them).
class _Group:
    """Shared by the option groups: keyword construction, scikit-learn's
    ``get_params``/``set_params`` (so ``GridSearchCV`` can search
    ``tokenizer__word_ngrams``), equality and a repr of the fields given."""

    FIELDS: tuple = ()

    def __init__(self, **given):
        for name in self.FIELDS:
            setattr(self, name, given.pop(name, None))
        if given:
            raise TypeError(f"{type(self).__name__}() got unknown option(s) {sorted(given)}; "
                            f"its options are {list(self.FIELDS)}")

    def given(self) -> dict:
        """The fields set (not None), name → value."""
        return {k: getattr(self, k) for k in self.FIELDS if getattr(self, k) is not None}

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in self.FIELDS}

    def set_params(self, **params):
        for k, v in params.items():
            if k not in self.FIELDS:
                raise TypeError(f"{type(self).__name__} has no option {k!r}; its options are {list(self.FIELDS)}")
            setattr(self, k, v)
        return self

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.get_params() == self.get_params()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(repr(v) for v in self.get_params().values())))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.given().items())})"


class Tokenizer(_Group):
    """How text becomes tokens (fastText's dictionary options): ``word_ngrams``,
    ``minn``, ``maxn``, ``bucket``, ``split_cjk``, ``lowercase``, ``split_punct``,
    ``drop_punct``, ``min_count``, ``label_prefix`` — each as the Classifier keyword of
    the same name; ``Classifier(tokenizer=mmq.Tokenizer(word_ngrams=2, minn=2, maxn=5))``
    is ``Classifier(word_ngrams=2, minn=2, maxn=5)``."""

    FIELDS = ("word_ngrams", "minn", "maxn", "bucket", "split_cjk", "lowercase", "split_punct", "drop_punct",
              "min_count", "label_prefix")

    def __init__(self, word_ngrams=None, minn=None, maxn=None, bucket=None, split_cjk=None, lowercase=None,
                 split_punct=None, drop_punct=None, min_count=None, label_prefix=None):
        super().__init__(word_ngrams=word_ngrams, minn=minn, maxn=maxn, bucket=bucket, split_cjk=split_cjk,
                         lowercase=lowercase, split_punct=split_punct, drop_punct=drop_punct, min_count=min_count,
                         label_prefix=label_prefix)


class Fusion(_Group):
    """How the modalities are joined: ``mode`` (the Classifier's ``fusion`` string,
    default ``"discrete"``), ``alpha``, ``rank``, ``pool``, ``outer_pool``,
    ``modality_dropout``, ``dense_lr``, ``dense_epoch``;
    ``Classifier(dense=[...], fusion=mmq.Fusion("deepset", pool="max"))`` is
    ``Classifier(dense=[...], fusion="deepset", pool="max")``."""

    FIELDS = ("mode", "alpha", "rank", "pool", "outer_pool", "modality_dropout", "dense_lr", "dense_epoch")

    def __init__(self, mode=None, alpha=None, rank=None, pool=None, outer_pool=None, modality_dropout=None,
                 dense_lr=None, dense_epoch=None):
        super().__init__(mode=mode, alpha=alpha, rank=rank, pool=pool, outer_pool=outer_pool,
                         modality_dropout=modality_dropout, dense_lr=dense_lr, dense_epoch=dense_epoch)


class GBlend(_Group):
    """Gradient-Blending (Wang, Tran, Feiszli, CVPR 2020) as a training strategy:
    ``holdout`` (the share of training rows that estimates overfitting), ``window``
    (epochs between weight updates; the ``blend_window`` keyword) and ``offline``
    (weights measured once, then fixed: ``blend="gblend_offline"``);
    ``Classifier(..., blend=mmq.GBlend(holdout=0.2))`` is
    ``Classifier(..., blend="gblend", holdout=0.2)``."""

    FIELDS = ("holdout", "window", "offline")

    def __init__(self, holdout=None, window=None, offline=None):
        super().__init__(holdout=holdout, window=window, offline=offline)
