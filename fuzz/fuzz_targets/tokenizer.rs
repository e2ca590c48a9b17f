//! The tokenizer over arbitrary text and any valid config. Input: 4 config bytes, then
//! the text (UTF-8; invalid bytes are replaced, as the bindings receive only `str`).
//! Properties: a config past the ceilings is refused; every id < bucket; the ids are the words (each hashed), their char
//! n-grams, EOS and the word n-grams, in the counts fastText's rules give; the words are
//! non-empty pieces of the (prepared) text, in order, cut as the options say; verbose
//! and plain tokenizing agree (on inputs of up to VERBOSE_BYTES bytes × n-gram length);
//! a reused scratch changes nothing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mmq_core::text::{fnv1a, is_nospace_char, Scratch, TokenKind, Tokenizer, TokenizerConfig, EOS};

/// The most bytes of text times word n-gram length for which the verbose tokenizing is
/// cross-checked (see below).
const VERBOSE_BYTES: usize = 16 * 1024;

fn config(b: &[u8; 4]) -> TokenizerConfig {
    let word_ngrams = match b[0] >> 4 {
        15 => 90 + (b[0] & 15) as u32, // up to MAX_NGRAM (100), and past it
        0 => 0,                        // invalid: must be refused
        _ => 1 + (b[0] & 7) as u32,
    };
    let minn = (b[1] & 7) as u32;
    let maxn = if b[1] & 0x80 != 0 {
        (b[2] & 7) as u32
    } else if minn == 0 {
        0
    } else {
        minn + (b[2] & 3) as u32
    };
    let bucket = match b[2] >> 4 {
        0 => 1,
        1 => 2,
        2 => 7,
        3 => 0,        // invalid
        4 => u32::MAX, // invalid
        5 => 1 << 31,
        n => 1 + (u32::from_le_bytes(*b) % (1 << 31)) / (n as u32),
    };
    TokenizerConfig {
        word_ngrams,
        minn,
        maxn,
        bucket,
        split_cjk: b[3] & 1 != 0,
        lowercase: b[3] & 2 != 0,
        split_punct: b[3] & 4 != 0,
        drop_punct: b[3] & 8 != 0,
        label_prefix: None,
    }
}

/// Punctuation or symbol (Unicode general category P* or S*), from the Unicode tables
/// directly (an oracle independent of the tokenizer's code).
fn is_punct(c: char) -> bool {
    use unicode_properties::{GeneralCategoryGroup as G, UnicodeGeneralCategory};
    matches!(c.general_category_group(), G::Punctuation | G::Symbol)
}

/// Char n-grams of one word by fastText's rule: substrings of `<word>` of minn..=maxn
/// chars, but not the lone `<` or `>`.
fn char_ngram_count(word: &str, minn: usize, maxn: usize) -> usize {
    if maxn == 0 {
        return 0;
    }
    let len = word.chars().count() + 2;
    let mut c = 0;
    for i in 0..len {
        for n in minn.max(1)..=maxn {
            if i + n > len {
                break;
            }
            if !(n == 1 && (i == 0 || i + n == len)) {
                c += 1;
            }
        }
    }
    c
}

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let cfg = config(head);
    let Ok(tok) = Tokenizer::new(cfg.clone()) else {
        assert!(cfg.validate().is_err());
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let text: &str = &text;
    let ids = tok.tokenize(text);
    assert!(
        ids.iter().all(|&i| i < cfg.bucket),
        "id >= bucket {}",
        cfg.bucket
    );

    // The words, from the text as the tokenizer prepares it.
    let prepared = if cfg.lowercase {
        text.to_lowercase()
    } else {
        text.to_string()
    };
    let words: Vec<&str> = tok.words(&prepared).collect();
    let base = prepared.as_ptr() as usize;
    let mut at = 0usize;
    for w in &words {
        assert!(!w.is_empty(), "an empty word");
        let start = w.as_ptr() as usize - base;
        assert!(
            start >= at && start + w.len() <= prepared.len(),
            "words out of order"
        );
        at = start + w.len();
        assert!(!w
            .bytes()
            .any(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c | 0)));
        let single = w.chars().count() == 1;
        if cfg.split_cjk && w.chars().any(is_nospace_char) {
            assert!(single, "a no-space-script character inside the word {w:?}");
        }
        if cfg.drop_punct || cfg.split_punct {
            let p = w.chars().filter(|&c| is_punct(c)).count();
            if cfg.drop_punct {
                assert_eq!(p, 0, "a dropped character kept in {w:?}");
            } else if p > 0 {
                assert!(single, "punctuation inside the word {w:?}");
            }
        }
    }

    // Counts: words + their char n-grams, EOS, then the word n-grams.
    let nw = words.len() + 1;
    let n = cfg.word_ngrams as usize;
    let ngrams: usize = (0..nw).map(|i| (nw - i).min(n) - 1).sum();
    let chars: usize = words
        .iter()
        .map(|w| char_ngram_count(w, cfg.minn as usize, cfg.maxn as usize))
        .sum();
    assert_eq!(ids.len(), nw + chars + ngrams, "token count");

    // A warm scratch and a non-empty output buffer change nothing.
    let mut scratch = Scratch::default();
    let mut out = vec![u32::MAX];
    tok.tokenize_into("some other row, with 東京", &mut out, &mut scratch);
    out.truncate(1);
    tok.tokenize_into(text, &mut out, &mut scratch);
    assert_eq!(out[0], u32::MAX);
    assert_eq!(&out[1..], &ids[..]);

    // Words hashed as fastText does, read from the plain ids: word i is followed by its
    // char n-grams, EOS comes after the last word's.
    // (A word of the text may be "</s>" itself: it has char n-grams, the final EOS not.)
    let mut at = 0;
    for w in &words {
        assert_eq!(ids[at], fnv1a(w.as_bytes()) % cfg.bucket, "the id of {w:?}");
        at += 1 + char_ngram_count(w, cfg.minn as usize, cfg.maxn as usize);
    }
    assert_eq!(ids[at], fnv1a(EOS.as_bytes()) % cfg.bucket, "the id of EOS");

    // Verbose tokenizing builds a string per token (a word n-gram of up to 100 words):
    // checked on inputs where that stays small, which is nearly all of them (this check
    // on every input made the target ~10x slower on the long rows its corpus grows).
    if text.len().saturating_mul(n.min(nw)) > VERBOSE_BYTES {
        return;
    }
    // Verbose tokenizing: the same ids; words in order, hashed as fastText does.
    let verbose = tok.tokenize_verbose(text);
    assert_eq!(verbose.iter().map(|v| v.0).collect::<Vec<_>>(), ids);
    let vwords: Vec<&(u32, TokenKind, String)> =
        verbose.iter().filter(|v| v.1 == TokenKind::Word).collect();
    assert_eq!(vwords.len(), nw);
    for (v, w) in vwords.iter().zip(words.iter().copied().chain([EOS])) {
        assert_eq!(v.2, w);
        assert_eq!(v.0, fnv1a(w.as_bytes()) % cfg.bucket);
    }
});
