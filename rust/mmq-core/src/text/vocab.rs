//! A word vocabulary, for models imported from fastText (`.bin` / `.ftz`).
//!
//! mmq hashes words into the buckets like every other token, so its tokenizer needs no
//! state. A fastText model instead gives each word of its dictionary a row of its own
//! (ids `0..nwords`), leaves out the words it did not keep (`minCount`), and puts the
//! hashed tokens after them (`nwords + hash % bucket`); a model compressed with a cutoff
//! also keeps only some buckets, renumbered (`pruneidx`). A [`Vocab`] attached to a
//! [`super::Tokenizer`] reproduces those ids.
use crate::error::{MmqError, Result};
use std::collections::HashMap;

/// fastText's label prefix when a model is loaded (`Args::label`; not stored in its files):
/// a token that starts with it is a label, never a word.
pub const FASTTEXT_LABEL_PREFIX: &str = "__label__";

#[derive(Clone, Debug, PartialEq)]
pub struct Vocab {
    /// The words, in id order (fastText's dictionary order: most frequent first).
    pub words: Vec<String>,
    /// Each word's count in the training file.
    pub counts: Vec<u64>,
    /// Kept buckets and their index after the words (`None`: every bucket, unchanged).
    pub prune: Option<HashMap<u32, u32>>,
    /// Tokens starting with this are labels and are skipped.
    pub label_prefix: String,
    ids: HashMap<String, u32>,
}

impl Vocab {
    /// A vocabulary of `words` (distinct) with their `counts`.
    pub fn new(
        words: Vec<String>,
        counts: Vec<u64>,
        prune: Option<HashMap<u32, u32>>,
        label_prefix: &str,
    ) -> Result<Self> {
        if words.len() != counts.len() {
            return Err(MmqError::InvalidInput(format!(
                "the vocabulary has {} words but {} counts",
                words.len(),
                counts.len()
            )));
        }
        if words.len() >= u32::MAX as usize / 2 {
            return Err(MmqError::InvalidInput(format!(
                "the vocabulary has {} words, more than 2^31",
                words.len()
            )));
        }
        let mut ids = HashMap::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            if ids.insert(w.clone(), i as u32).is_some() {
                return Err(MmqError::InvalidInput(format!(
                    "the word {w:?} appears twice in the vocabulary"
                )));
            }
        }
        Ok(Self {
            words,
            counts,
            prune,
            label_prefix: label_prefix.to_string(),
            ids,
        })
    }

    pub fn nwords(&self) -> u32 {
        self.words.len() as u32
    }

    /// The id of a word of the vocabulary.
    #[inline]
    pub fn word_id(&self, word: &str) -> Option<u32> {
        self.ids.get(word).copied()
    }

    /// The id of a hashed token (char or word n-gram) in bucket `b`: after the words, or
    /// none when a cutoff left the bucket out.
    #[inline]
    pub fn hashed(&self, b: u32) -> Option<u32> {
        match &self.prune {
            None => Some(self.nwords() + b),
            Some(p) => p.get(&b).map(|&j| self.nwords() + j),
        }
    }

    #[inline]
    pub fn is_label(&self, token: &str) -> bool {
        !self.label_prefix.is_empty() && token.starts_with(&self.label_prefix)
    }

    /// The number of ids: the words and the buckets (or the kept buckets).
    pub fn n_ids(&self, bucket: u32) -> u64 {
        self.nwords() as u64
            + match &self.prune {
                None => bucket as u64,
                Some(p) => p.len() as u64,
            }
    }
}
