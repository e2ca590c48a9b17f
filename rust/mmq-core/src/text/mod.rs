//! Text to token ids: fastText-compatible hashing, words, word n-grams and char n-grams.
mod hash;
mod tokenizer;
pub mod vocab;
pub use tokenizer::{is_nospace_char, Scratch, TokenKind};

pub use hash::{fnv1a, word_ngram_hash};
pub use tokenizer::{Tokenizer, TokenizerConfig, EOS, MAX_BUCKET, MAX_NGRAM};
