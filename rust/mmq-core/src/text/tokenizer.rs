//! The tokenizer: one row of text to a bag of hashed token ids in `[0, bucket)`.
//!
//! Order of the ids, as fastText's `Dictionary::getLine` produces them for a supervised
//! model: for each word, the word then its char n-grams; the EOS token `</s>`; then the
//! word n-grams (over the word hashes, EOS included). Unlike fastText, words are hashed
//! into the buckets too (no vocabulary), so tokenizing is stateless and streams.
use super::hash::{fnv1a, NGRAM_MULT};
use super::vocab::Vocab;
use crate::error::{MmqError, Result};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;

/// fastText's end-of-sentence token, appended to every row.
pub const EOS: &str = "</s>";

/// Hashing parameters of the tokenizer (stored in every model file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenizerConfig {
    /// Longest word n-gram (1 = words only), fastText's `wordNgrams`.
    pub word_ngrams: u32,
    /// Shortest char n-gram (0 = none), fastText's `minn`.
    pub minn: u32,
    /// Longest char n-gram (0 = none), fastText's `maxn`.
    pub maxn: u32,
    /// Number of hash buckets; every token id is in `[0, bucket)`.
    pub bucket: u32,
    /// Cut runs of characters from scripts written without spaces (Han, Hiragana,
    /// Katakana, Thai, Lao, Khmer, Myanmar) into one word per character, so such text
    /// gives per-character words and, with `word_ngrams >= 2`, character bigrams.
    pub split_cjk: bool,
    /// Lower-case the text (Unicode, like Python's `str.lower`) before cutting it into words.
    /// Off by default, as in fastText (which hashes text as given).
    pub lowercase: bool,
    /// Cut every punctuation or symbol character (Unicode general category P* or S*:
    /// `.,!?'"#@/:`, currency, emoji…) out of the words as a word of its own, so
    /// `"great!"` gives `great` and `!`, `#love` gives `#` and `love`. This is the
    /// punctuation splitting fastText's tutorials do with `sed` before training. Off by
    /// default (fastText hashes whitespace-separated words as given).
    pub split_punct: bool,
    /// Drop every punctuation or symbol character (the same P*/S* set), cutting words
    /// there: `"great!!"` gives `great`, `#love` gives `love`, `don't` gives `don` and
    /// `t`, a word made only of punctuation gives nothing. This is how most word
    /// tokenizers (scikit-learn's `\w+` pattern) read text. Excludes `split_punct`; off by
    /// default.
    pub drop_punct: bool,
    /// The label prefix of the fastText-format text the model was trained from
    /// (fastText's `-label`), kept so that the command line reads and writes that format
    /// with it later; `None` is fastText's `__label__`. It changes no token id. Written to
    /// a file only when set, so files of models without it stay as they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_prefix: Option<String>,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self {
            word_ngrams: 1,
            minn: 0,
            maxn: 0,
            bucket: 2_000_000,
            split_cjk: true,
            lowercase: false,
            split_punct: false,
            drop_punct: false,
            label_prefix: None,
        }
    }
}

/// The most hash buckets (token ids are u32, and the ids above the buckets are the dense
/// columns' code tokens).
pub const MAX_BUCKET: u64 = 1 << 31;

/// The longest word n-gram (`word_ngrams`) and char n-gram (`maxn`). A row of `w` words
/// gives up to `w · word_ngrams` word n-grams and a word of `c` characters up to
/// `c · maxn` char n-grams: without a ceiling, a long row (or one long word) could ask
/// for a number of ids quadratic in its length.
pub const MAX_NGRAM: u32 = 100;

impl TokenizerConfig {
    /// Whether `other` gives every text the same token ids (all options but the label
    /// prefix are the same).
    pub fn same_ids(&self, other: &TokenizerConfig) -> bool {
        let strip = |c: &TokenizerConfig| TokenizerConfig {
            label_prefix: None,
            ..c.clone()
        };
        strip(self) == strip(other)
    }

    /// Check the parameters, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if let Some(p) = &self.label_prefix {
            if p.is_empty() || p.chars().any(char::is_whitespace) || p.len() > 256 {
                return Err(MmqError::InvalidParameter(format!(
                    "label_prefix must be 1 to 256 bytes without whitespace, got {p:?}"
                )));
            }
        }
        if self.bucket == 0 {
            return Err(MmqError::InvalidParameter(
                "bucket must be >= 1, got 0".into(),
            ));
        }
        if self.bucket as u64 > MAX_BUCKET {
            return Err(MmqError::InvalidParameter(format!(
                "bucket must be <= {MAX_BUCKET} (2^31), got {}",
                self.bucket
            )));
        }
        if self.word_ngrams == 0 {
            return Err(MmqError::InvalidParameter(
                "word_ngrams must be >= 1, got 0".into(),
            ));
        }
        if self.word_ngrams > MAX_NGRAM {
            return Err(MmqError::InvalidParameter(format!(
                "word_ngrams must be <= {MAX_NGRAM}, got {}",
                self.word_ngrams
            )));
        }
        if self.maxn > MAX_NGRAM {
            return Err(MmqError::InvalidParameter(format!(
                "maxn must be <= {MAX_NGRAM}, got {}",
                self.maxn
            )));
        }
        if self.maxn > 0 && (self.minn == 0 || self.minn > self.maxn) {
            return Err(MmqError::InvalidParameter(format!(
                "char n-grams need 1 <= minn <= maxn, got minn={} maxn={}",
                self.minn, self.maxn
            )));
        }
        if self.split_punct && self.drop_punct {
            return Err(MmqError::InvalidParameter(
                "split_punct and drop_punct exclude each other (punctuation is either kept \
                 as words or dropped); set one of them"
                    .into(),
            ));
        }
        if self.maxn == 0 && self.minn > 0 {
            return Err(MmqError::InvalidParameter(format!(
                "minn={} needs maxn >= minn, got maxn=0",
                self.minn
            )));
        }
        Ok(())
    }
}

/// A stateless tokenizer; cheap to clone and share across threads.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    cfg: TokenizerConfig,
    eos_hash: u32,
    /// A fastText model's dictionary (imported models only): see [`Vocab`].
    vocab: Option<Arc<Vocab>>,
}

/// Reusable buffers so tokenizing a row allocates nothing once warm.
#[derive(Default)]
pub struct Scratch {
    word_hashes: Vec<u32>,
    bounded: Vec<u8>,
}

/// `text` lower-cased with Unicode's full mapping, as `str::to_lowercase` and Python's
/// `str.lower` (final sigma and titlecase letters such as `ǅ` included); borrowed when
/// ASCII text has no capital.
fn lowered(text: &str) -> Cow<'_, str> {
    if !text.is_ascii() {
        Cow::Owned(text.to_lowercase())
    } else if text.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

#[inline]
fn is_space(b: u8) -> bool {
    // fastText's Dictionary::readWord separators.
    matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c | 0)
}

/// A punctuation or symbol character (Unicode general category P* or S*).
#[inline]
pub fn is_punct_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation();
    }
    use unicode_properties::{GeneralCategoryGroup as G, UnicodeGeneralCategory};
    matches!(c.general_category_group(), G::Punctuation | G::Symbol)
}

/// Characters of scripts conventionally written without spaces between words.
#[inline]
pub fn is_nospace_char(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF      // Thai, Lao
        | 0x1000..=0x109F    // Myanmar
        | 0x1780..=0x17FF    // Khmer
        | 0x3040..=0x30FF    // Hiragana, Katakana
        | 0x31F0..=0x31FF    // Katakana phonetic extensions
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0x20000..=0x2FA1F) // CJK extensions B.. and compatibility supplement
}

impl Tokenizer {
    pub fn new(cfg: TokenizerConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            eos_hash: fnv1a(EOS.as_bytes()),
            vocab: None,
        })
    }

    /// A tokenizer that gives fastText's ids of a model with this dictionary: a word of
    /// `vocab` is its id, a word outside it gives no id of its own (its char n-grams
    /// and the word n-grams still count), a hashed token is `nwords + bucket` (or its kept
    /// index), and a token with the label prefix is skipped.
    pub fn with_vocab(cfg: TokenizerConfig, vocab: Option<Arc<Vocab>>) -> Result<Self> {
        let mut t = Self::new(cfg)?;
        t.vocab = vocab;
        Ok(t)
    }

    pub fn vocab(&self) -> Option<&Arc<Vocab>> {
        self.vocab.as_ref()
    }

    pub fn config(&self) -> &TokenizerConfig {
        &self.cfg
    }

    /// Token ids of one row, appended to `out`.
    pub fn tokenize_into(&self, text: &str, out: &mut Vec<u32>, scratch: &mut Scratch) {
        self.visit(text, scratch, &mut |id, _kind, _s| out.push(id));
    }

    /// Token ids of one row, appended to `out`, but for the word ids in `rare`: their
    /// words keep their char n-grams and word n-grams (fastText's `-minCount`, where a
    /// word seen too few times has no row of its own yet still takes part in n-grams).
    pub fn tokenize_into_without(
        &self,
        text: &str,
        out: &mut Vec<u32>,
        scratch: &mut Scratch,
        rare: &std::collections::HashSet<u32>,
    ) {
        self.visit(text, scratch, &mut |id, kind, _s| {
            if kind != TokenKind::Word || !rare.contains(&id) {
                out.push(id)
            }
        });
    }

    /// The word ids (each word's own id and EOS's, no n-gram) of `texts` seen fewer than
    /// `min_count` times in all of them: the ids fastText's `-minCount` keeps out of the
    /// vocabulary. Counted in parallel.
    pub fn rare_word_ids(&self, texts: &[&str], min_count: u64) -> std::collections::HashSet<u32> {
        use rayon::prelude::*;
        use std::collections::HashMap;
        if min_count <= 1 {
            return Default::default();
        }
        let counts = texts
            .par_chunks(1 << 12)
            .map(|chunk| {
                let (mut counts, mut scratch) = (HashMap::<u32, u64>::new(), Scratch::default());
                for t in chunk {
                    self.visit(t, &mut scratch, &mut |id, kind, _s| {
                        if kind == TokenKind::Word {
                            *counts.entry(id).or_default() += 1;
                        }
                    });
                }
                counts
            })
            .reduce(HashMap::new, |mut a, b| {
                let (mut a, b) = if a.len() < b.len() {
                    (b, a)
                } else {
                    (std::mem::take(&mut a), b)
                };
                for (id, c) in b {
                    *a.entry(id).or_default() += c;
                }
                a
            });
        counts
            .into_iter()
            .filter(|&(_, c)| c < min_count)
            .map(|(id, _)| id)
            .collect()
    }

    /// Token ids of one row.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut scratch = Scratch::default();
        self.tokenize_into(text, &mut out, &mut scratch);
        out
    }

    /// The ids of one word as fastText's `getSubwords` gives them: the word's own id (if
    /// it has one), then its char n-grams. Nothing else of a row (no end of sentence,
    /// no word n-grams).
    pub fn subwords(&self, word: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let bucket = self.cfg.bucket;
        let own = match self.vocab.as_deref() {
            None => Some(fnv1a(word.as_bytes()) % bucket),
            Some(v) => v.word_id(word),
        };
        out.extend(own);
        if self.cfg.maxn > 0 && word != EOS {
            let mut buf = Vec::new();
            self.char_ngrams(word, &mut buf, &mut |b, _, _| {
                out.extend(match self.vocab.as_deref() {
                    None => Some(b),
                    Some(v) => v.hashed(b),
                })
            });
        }
        out
    }

    /// Token ids with a readable form of each token (for explanations and debugging).
    pub fn tokenize_verbose(&self, text: &str) -> Vec<(u32, TokenKind, String)> {
        let mut out = Vec::new();
        let mut scratch = Scratch::default();
        let text = self.prepared(text);
        let vocab = self.vocab.as_deref();
        let words: Vec<&str> = self
            .words(&text)
            .filter(|w| !vocab.is_some_and(|v| v.is_label(w)))
            .collect();
        self.visit_words(&text, &mut scratch, &mut |id, kind, s| {
            let shown = match s {
                Shown::Str(s) => s.to_string(),
                Shown::Ngram(start, n) => {
                    let mut w: Vec<&str> = words[start..].iter().take(n).copied().collect();
                    if start + n > words.len() {
                        w.push(EOS);
                    }
                    w.join(" ")
                }
            };
            out.push((id, kind, shown))
        });
        out
    }

    /// The words of a row, as this tokenizer cuts them (EOS not included).
    pub fn words<'a>(&self, text: &'a str) -> Words<'a> {
        Words {
            rest: text,
            pending: "",
            split_cjk: self.cfg.split_cjk,
            split_punct: self.cfg.split_punct,
            drop_punct: self.cfg.drop_punct,
        }
    }

    /// The text the words are cut from: lower-cased with `lowercase`.
    fn prepared<'t>(&self, text: &'t str) -> Cow<'t, str> {
        if self.cfg.lowercase {
            lowered(text)
        } else {
            Cow::Borrowed(text)
        }
    }

    fn visit<F: FnMut(u32, TokenKind, Shown<'_>)>(
        &self,
        text: &str,
        scratch: &mut Scratch,
        emit: &mut F,
    ) {
        self.visit_words(&self.prepared(text), scratch, emit);
    }

    fn visit_words<F: FnMut(u32, TokenKind, Shown<'_>)>(
        &self,
        text: &str,
        scratch: &mut Scratch,
        emit: &mut F,
    ) {
        match self.vocab.as_deref() {
            None => self.visit_hashed(text, scratch, emit, Some, |w| Some(w.1 % w.0)),
            Some(v) => self.visit_hashed(text, scratch, emit, |b| v.hashed(b), |w| v.word_id(w.2)),
        }
    }

    /// The token ids of a row: `word_id` gives a word's own id (from `(bucket, hash,
    /// word)`), `hashed` the id of a hashed token in a bucket (`None`: no id).
    fn visit_hashed<F, H, W>(
        &self,
        text: &str,
        scratch: &mut Scratch,
        emit: &mut F,
        hashed: H,
        word_id: W,
    ) where
        F: FnMut(u32, TokenKind, Shown<'_>),
        H: Fn(u32) -> Option<u32>,
        W: Fn((u32, u32, &str)) -> Option<u32>,
    {
        let bucket = self.cfg.bucket;
        let vocab = self.vocab.as_deref();
        scratch.word_hashes.clear();
        for word in self.words(text) {
            if vocab.is_some_and(|v| v.is_label(word)) {
                continue;
            }
            let h = fnv1a(word.as_bytes());
            scratch.word_hashes.push(h);
            if let Some(id) = word_id((bucket, h, word)) {
                emit(id, TokenKind::Word, Shown::Str(word));
            }
            if self.cfg.maxn > 0 {
                self.char_ngrams(word, &mut scratch.bounded, &mut |b, kind, s| {
                    if let Some(id) = hashed(b) {
                        emit(id, kind, s)
                    }
                });
            }
        }
        scratch.word_hashes.push(self.eos_hash);
        if let Some(id) = word_id((bucket, self.eos_hash, EOS)) {
            emit(id, TokenKind::Word, Shown::Str(EOS));
        }
        let n = self.cfg.word_ngrams as usize;
        if n > 1 {
            // The hash of hs[i..=j] extends the one of hs[i..j] (`word_ngram_hash`), so
            // each n-gram costs one step, not its length.
            let hs = &scratch.word_hashes;
            for i in 0..hs.len() {
                let end = (i + n).min(hs.len());
                let mut h = hs[i] as i32 as i64 as u64;
                for (len, &next) in (2..).zip(&hs[i + 1..end]) {
                    h = h
                        .wrapping_mul(NGRAM_MULT)
                        .wrapping_add(next as i32 as i64 as u64);
                    if let Some(id) = hashed((h % bucket as u64) as u32) {
                        emit(id, TokenKind::WordNgram, Shown::Ngram(i, len));
                    }
                }
            }
        }
    }

    /// fastText's `Dictionary::computeSubwords` over `<word>`: n counts UTF-8 characters;
    /// the lone `<` and `>` are skipped; the hash is extended byte by byte.
    fn char_ngrams<F: FnMut(u32, TokenKind, Shown<'_>)>(
        &self,
        word: &str,
        buf: &mut Vec<u8>,
        emit: &mut F,
    ) {
        let (minn, maxn, bucket) = (
            self.cfg.minn as usize,
            self.cfg.maxn as usize,
            self.cfg.bucket,
        );
        buf.clear();
        buf.push(b'<');
        buf.extend_from_slice(word.as_bytes());
        buf.push(b'>');
        let w = &buf[..];
        let len = w.len();
        for i in 0..len {
            if (w[i] & 0xC0) == 0x80 {
                continue;
            }
            let mut h: u32 = 2_166_136_261;
            let mut j = i;
            let mut n = 1;
            while j < len && n <= maxn {
                h = step(h, w[j]);
                j += 1;
                while j < len && (w[j] & 0xC0) == 0x80 {
                    h = step(h, w[j]);
                    j += 1;
                }
                if n >= minn && !(n == 1 && (i == 0 || j == len)) {
                    let s = std::str::from_utf8(&w[i..j]).unwrap_or("");
                    emit(h % bucket, TokenKind::CharNgram, Shown::Str(s));
                }
                n += 1;
            }
        }
    }
}

/// Iterator over the words of a row; allocates nothing.
pub struct Words<'a> {
    rest: &'a str,
    /// The remainder of a word still being cut (no-space characters, punctuation).
    pending: &'a str,
    split_cjk: bool,
    split_punct: bool,
    drop_punct: bool,
}

impl<'a> Words<'a> {
    /// A character that is a word of its own.
    #[inline]
    fn is_cut(&self, c: char) -> bool {
        (self.split_cjk && is_nospace_char(c)) || (self.split_punct && is_punct_char(c))
    }

    /// A character that is dropped (and ends the word before it).
    #[inline]
    fn is_drop(&self, c: char) -> bool {
        self.drop_punct && is_punct_char(c)
    }

    /// Whether a whitespace-separated word needs cutting at all.
    fn needs_cut(&self, word: &str) -> bool {
        (self.split_cjk && !word.is_ascii())
            || ((self.split_punct || self.drop_punct) && word.chars().any(is_punct_char))
    }

    /// Next piece of `pending`: a run of ordinary characters, or one character that is
    /// a word of its own (no-space script, or punctuation with `split_punct`); `None`
    /// when a run of dropped characters was skipped instead.
    fn cut_pending(&mut self) -> Option<&'a str> {
        let p = self.pending;
        let mut chars = p.char_indices();
        let (_, first) = chars.next().expect("pending is not empty");
        if self.is_drop(first) {
            let end = chars
                .find(|&(_, c)| !self.is_drop(c))
                .map_or(p.len(), |(i, _)| i);
            self.pending = &p[end..];
            return None;
        }
        if self.is_cut(first) {
            let l = first.len_utf8();
            self.pending = &p[l..];
            return Some(&p[..l]);
        }
        let end = chars
            .find(|&(_, c)| self.is_cut(c) || self.is_drop(c))
            .map_or(p.len(), |(i, _)| i);
        self.pending = &p[end..];
        Some(&p[..end])
    }
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        loop {
            if !self.pending.is_empty() {
                match self.cut_pending() {
                    Some(w) => return Some(w),
                    None => continue,
                }
            }
            let bytes = self.rest.as_bytes();
            let start = bytes.iter().position(|&b| !is_space(b))?;
            let len = bytes[start..]
                .iter()
                .position(|&b| is_space(b))
                .unwrap_or(bytes.len() - start);
            let word = &self.rest[start..start + len];
            self.rest = &self.rest[start + len..];
            if self.needs_cut(word) {
                self.pending = word;
                continue;
            }
            return Some(word);
        }
    }
}

#[inline]
fn step(h: u32, b: u8) -> u32 {
    (h ^ (b as i8) as u32).wrapping_mul(16_777_619)
}

enum Shown<'a> {
    Str(&'a str),
    Ngram(usize, usize),
}

/// What a token id stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Word,
    WordNgram,
    CharNgram,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(word_ngrams: u32, minn: u32, maxn: u32, bucket: u32) -> Tokenizer {
        Tokenizer::new(TokenizerConfig {
            word_ngrams,
            minn,
            maxn,
            bucket,
            split_cjk: true,
            lowercase: false,
            split_punct: false,
            drop_punct: false,
            label_prefix: None,
        })
        .unwrap()
    }

    /// fastText's -minCount: a word below the count loses its own id and keeps its
    /// char n-grams and its part in word n-grams; EOS counts once per row.
    #[test]
    fn rare_words_lose_their_own_id_only() {
        let t = tok(2, 3, 3, 1 << 20);
        let texts = ["a rare word", "a common word", "a common thing"];
        let rare = t.rare_word_ids(&texts, 2);
        let id = |w: &str| t.tokenize_verbose(w)[0].0;
        let want: std::collections::HashSet<u32> =
            ["rare", "thing"].iter().map(|w| id(w)).collect();
        assert_eq!(rare, want);
        assert!(t.rare_word_ids(&texts, 1).is_empty());
        let mut out = Vec::new();
        t.tokenize_into_without(texts[0], &mut out, &mut Scratch::default(), &rare);
        let full = t.tokenize_verbose(texts[0]);
        let expect: Vec<u32> = full
            .iter()
            .filter(|(i, k, _)| !(*k == TokenKind::Word && *i == id("rare")))
            .map(|x| x.0)
            .collect();
        assert_eq!(out, expect);
        assert_eq!(out.len(), full.len() - 1);
    }

    #[test]
    fn drop_punct_drops_punctuation_and_symbols_and_cuts_words_there() {
        let t = Tokenizer::new(TokenizerConfig {
            drop_punct: true,
            ..Default::default()
        })
        .unwrap();
        let words: Vec<&str> = t
            .words("great!! #love @Bob's café… 5€ ok😀ok ?!? http://t.co/x")
            .collect();
        assert_eq!(
            words,
            ["great", "love", "Bob", "s", "café", "5", "ok", "ok", "http", "t", "co", "x"]
        );
        // A row of punctuation alone is EOS alone; plain words hash as without the option.
        let default = Tokenizer::new(TokenizerConfig::default()).unwrap();
        assert_eq!(t.tokenize("?! ..."), default.tokenize(""));
        assert_eq!(t.tokenize("plain words"), default.tokenize("plain words"));
        assert_eq!(t.tokenize("plain, words!"), default.tokenize("plain words"));
        // With split_cjk, no-space characters are still words of their own.
        assert_eq!(t.words("日本!語。").collect::<Vec<_>>(), ["日", "本", "語"]);
        // Both punctuation options at once is an error naming them.
        let both = Tokenizer::new(TokenizerConfig {
            drop_punct: true,
            split_punct: true,
            ..Default::default()
        });
        let msg = both.unwrap_err().to_string();
        assert!(
            msg.contains("split_punct") && msg.contains("drop_punct"),
            "{msg}"
        );
    }

    #[test]
    fn split_punct_cuts_punctuation_and_symbols_into_words() {
        let t = Tokenizer::new(TokenizerConfig {
            split_punct: true,
            ..Default::default()
        })
        .unwrap();
        let words: Vec<&str> = t.words("great!! #love @Bob's café… 5€ ok😀ok").collect();
        assert_eq!(
            words,
            [
                "great", "!", "!", "#", "love", "@", "Bob", "'", "s", "café", "…", "5", "€", "ok",
                "😀", "ok"
            ]
        );
        // Off: the words as fastText cuts them; a word without punctuation is unchanged.
        let plain = tok(1, 0, 0, 1000);
        assert_eq!(
            plain.words("great!! ok").collect::<Vec<_>>(),
            ["great!!", "ok"]
        );
        let default = Tokenizer::new(TokenizerConfig::default()).unwrap();
        assert_eq!(t.tokenize("plain words"), default.tokenize("plain words"));
        // With split_cjk too, both cuts apply.
        assert_eq!(t.words("日本!").collect::<Vec<_>>(), ["日", "本", "!"]);
    }

    #[test]
    fn lowercase_hashes_the_lower_cased_text() {
        let lc = Tokenizer::new(TokenizerConfig {
            word_ngrams: 2,
            minn: 2,
            maxn: 3,
            lowercase: true,
            ..Default::default()
        })
        .unwrap();
        let plain = Tokenizer::new(TokenizerConfig {
            lowercase: false,
            ..lc.config().clone()
        })
        .unwrap();
        // Unicode, not just ASCII: É -> é, word-final Σ -> ς.
        assert_eq!(
            lc.tokenize("Héllo WORLD ÉΣ ΣΑ"),
            plain.tokenize("héllo world éς σα")
        );
        assert_ne!(plain.tokenize("Hello"), plain.tokenize("hello"));
        let v = lc.tokenize_verbose("Big Cat");
        assert!(v.iter().any(|(_, _, s)| s == "big cat"), "{v:?}");
        // Already lower-case text takes the same path's result.
        assert_eq!(lc.tokenize("big cat"), plain.tokenize("big cat"));
        // Titlecase letters (category Lt, not "uppercase") are lowered too, as str.lower does.
        assert_eq!(lc.tokenize("ǅemal ᾈ"), plain.tokenize("ǆemal ᾀ"));
        assert_eq!(
            lc.tokenize("ǅ"),
            lc.tokenize_verbose("ǅ")
                .iter()
                .map(|t| t.0)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn words_and_eos() {
        let t = tok(1, 0, 0, 1 << 30);
        let ids = t.tokenize("hello  world\t");
        assert_eq!(
            ids,
            vec![
                fnv1a(b"hello") % (1 << 30),
                fnv1a(b"world") % (1 << 30),
                fnv1a(b"</s>") % (1 << 30)
            ]
        );
    }

    #[test]
    fn empty_text_is_eos_only() {
        let t = tok(2, 0, 0, 1000);
        assert_eq!(t.tokenize("").len(), 1);
        assert_eq!(t.tokenize("   ").len(), 1);
    }

    #[test]
    fn bigram_count() {
        let t = tok(2, 0, 0, 1000);
        // 3 words + EOS, 3 bigrams.
        assert_eq!(t.tokenize("a b c").len(), 4 + 3);
        let t3 = tok(3, 0, 0, 1000);
        assert_eq!(t3.tokenize("a b c").len(), 4 + 3 + 2);
    }

    #[test]
    fn char_ngrams_of_short_word() {
        let t = tok(1, 2, 3, 1 << 31);
        let v = t.tokenize_verbose("ab");
        let s: Vec<&str> = v.iter().map(|x| x.2.as_str()).collect();
        // word, then "<a","<ab","ab","ab>","b>" and EOS
        assert_eq!(s, vec!["ab", "<a", "<ab", "ab", "ab>", "b>", "</s>"]);
    }

    #[test]
    fn cjk_is_split_per_char() {
        let t = tok(2, 0, 0, 1000);
        let words: Vec<&str> = t.words("我爱北京 abc日本").collect();
        assert_eq!(words, vec!["我", "爱", "北", "京", "abc", "日", "本"]);
        let keep = Tokenizer::new(TokenizerConfig {
            split_cjk: false,
            ..TokenizerConfig::default()
        })
        .unwrap();
        assert_eq!(keep.words("我爱北京").count(), 1);
    }

    #[test]
    fn utf8_char_ngrams_count_chars() {
        let t = Tokenizer::new(TokenizerConfig {
            minn: 1,
            maxn: 1,
            split_cjk: false,
            ..TokenizerConfig::default()
        })
        .unwrap();
        let v = t.tokenize_verbose("éa");
        let s: Vec<&str> = v.iter().map(|x| x.2.as_str()).collect();
        assert_eq!(s, vec!["éa", "é", "a", "</s>"]);
    }

    /// Found by the fuzz target tokenizer (its speed fell from ~8,000 to ~400 inputs/s
    /// as its corpus grew): word n-grams were hashed from scratch, O(words ·
    /// word_ngrams²) per row, and word_ngrams and maxn had no ceiling, so a config (or a
    /// model file) with word_ngrams = 10^6 made a long row hang and ask for a number of
    /// ids quadratic in its length.
    #[test]
    fn ngram_lengths_have_a_ceiling_and_word_ngrams_hash_incrementally() {
        for (w, maxn) in [(MAX_NGRAM + 1, 0), (u32::MAX, 0), (1, MAX_NGRAM + 1)] {
            let e = Tokenizer::new(TokenizerConfig {
                word_ngrams: w,
                minn: maxn.min(1),
                maxn,
                ..Default::default()
            })
            .unwrap_err();
            assert!(e.to_string().contains(&format!("<= {MAX_NGRAM}")), "{e}");
        }
        let t = tok(MAX_NGRAM, 0, 0, 1 << 31);
        let text: String = (0..3000).map(|i| format!("w{} ", i % 97)).collect();
        let ids = t.tokenize(&text);
        // Words + EOS, then for each start the n-grams of 2..=MAX_NGRAM words that fit.
        let nw = 3001usize;
        let n = MAX_NGRAM as usize;
        let ngrams: usize = (0..nw).map(|i| (nw - i).min(n) - 1).sum();
        assert_eq!(ids.len(), nw + ngrams);
        // The incremental hashes are word_ngram_hash over each n-gram.
        let mut hs: Vec<u32> = t.words(&text).map(|w| fnv1a(w.as_bytes())).collect();
        hs.push(fnv1a(EOS.as_bytes()));
        let mut expect: Vec<u32> = hs.iter().map(|h| h % (1 << 31)).collect();
        for i in 0..hs.len() {
            for j in i + 2..=(i + n).min(hs.len()) {
                expect.push((super::super::word_ngram_hash(&hs[i..j]) % (1 << 31)) as u32);
            }
        }
        assert_eq!(ids, expect);
    }

    #[test]
    fn bad_config() {
        assert!(Tokenizer::new(TokenizerConfig {
            bucket: 0,
            ..Default::default()
        })
        .is_err());
        assert!(Tokenizer::new(TokenizerConfig {
            minn: 3,
            maxn: 2,
            ..Default::default()
        })
        .is_err());
        assert!(Tokenizer::new(TokenizerConfig {
            word_ngrams: 0,
            ..Default::default()
        })
        .is_err());
    }
}
