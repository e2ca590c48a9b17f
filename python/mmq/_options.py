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
