//! Golden test: mmq's tokenizer hashes exactly like the official fastText (0.9.3).
//!
//! The fixture `tests/fixtures/fasttext_golden.json` is produced by the real fastText
//! through `tests/fixtures/gen_fasttext_golden.py` (at the repository root; see its
//! docstring). Two kinds of cases:
//!
//! - `char_ngrams`: fastText's `get_subwords(word)` for many words and every
//!   (minn, maxn, bucket); the n-gram ids minus `nwords` must equal mmq's `CharNgram`
//!   ids (and strings) for that word, in order.
//! - `word_ngrams`: fastText's supervised `get_sentence_vector`, which is the mean of
//!   the input-matrix rows [word ids, `</s>` id] ++ [nwords + word n-gram ids]. We rebuild
//!   it from the stored input matrix with mmq's `WordNgram` ids and compare to 1e-5.
//!
//! The `*_catch_*` tests run a local copy of the hashing with one deliberate bug
//! (zero- instead of sign-extension, ...) against the same fixtures and require that
//! the fixtures reject it, so a passing golden test really pins the hashing down.
use mmq_core::text::{TokenKind, Tokenizer, TokenizerConfig};
use serde_json::Value;

const FIXTURE: &str = include_str!("fixtures/fasttext_golden.json");
const EOS: &str = "</s>";

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("fixture is valid JSON")
}

fn u32_of(v: &Value) -> u32 {
    u32::try_from(v.as_u64().expect("unsigned integer")).expect("fits u32")
}

fn i64_list(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn f64_list(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// Fixture readers
// ---------------------------------------------------------------------------

struct CharCase {
    word: String,
    minn: u32,
    maxn: u32,
    bucket: u32,
    subwords: Vec<String>,
    ids: Vec<u32>,
}

fn char_cases(fx: &Value) -> Vec<CharCase> {
    let mut out = Vec::new();
    for c in fx["char_ngrams"]["cases"].as_array().unwrap() {
        for (bucket, ids) in c["ids"].as_object().unwrap() {
            out.push(CharCase {
                word: c["word"].as_str().unwrap().to_string(),
                minn: u32_of(&c["minn"]),
                maxn: u32_of(&c["maxn"]),
                bucket: bucket.parse().unwrap(),
                subwords: str_list(&c["subwords"]),
                ids: ids.as_array().unwrap().iter().map(u32_of).collect(),
            });
        }
    }
    out
}

struct Sentence {
    text: String,
    words: Vec<String>,
    word_ids: Vec<i64>,
    vector: Vec<f64>,
}

struct WordModel {
    word_ngrams: u32,
    bucket: u32,
    dim: usize,
    nwords: usize,
    eos_id: usize,
    matrix: Vec<f32>,
    sentences: Vec<Sentence>,
}

fn word_models(fx: &Value) -> Vec<WordModel> {
    fx["word_ngrams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let dim = u32_of(&m["dim"]) as usize;
            let rows = u32_of(&m["rows"]) as usize;
            let nwords = u32_of(&m["nwords"]) as usize;
            let bucket = u32_of(&m["bucket"]);
            let matrix: Vec<f32> = f64_list(&m["input_matrix"])
                .iter()
                .map(|&x| x as f32)
                .collect();
            assert_eq!(matrix.len(), rows * dim);
            assert_eq!(rows, nwords + bucket as usize);
            let sentences = m["sentences"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Sentence {
                    text: s["text"].as_str().unwrap().to_string(),
                    words: str_list(&s["words"]),
                    word_ids: i64_list(&s["word_ids"]),
                    vector: f64_list(&s["vector"]),
                })
                .collect();
            WordModel {
                word_ngrams: u32_of(&m["word_ngrams"]),
                bucket,
                dim,
                nwords,
                eos_id: u32_of(&m["eos_id"]) as usize,
                matrix,
                sentences,
            }
        })
        .collect()
}

fn tokenizer(word_ngrams: u32, minn: u32, maxn: u32, bucket: u32) -> Tokenizer {
    Tokenizer::new(TokenizerConfig {
        word_ngrams,
        minn,
        maxn,
        bucket,
        split_cjk: false, // fastText does not split CJK
        lowercase: false,
        split_punct: false,
        drop_punct: false,
        label_prefix: None,
    })
    .unwrap()
}

/// fastText's supervised sentence vector, rebuilt from the stored input matrix:
/// the mean of rows [in-vocabulary word ids, EOS id] ++ [nwords + word n-gram ids].
fn sentence_vector(m: &WordModel, s: &Sentence, ngram_ids: &[u32]) -> Vec<f64> {
    let mut rows: Vec<usize> = s
        .word_ids
        .iter()
        .filter(|&&i| i >= 0) // OOV words add no row (minn = maxn = 0)
        .map(|&i| i as usize)
        .collect();
    rows.push(m.eos_id);
    rows.extend(ngram_ids.iter().map(|&h| m.nwords + h as usize));
    let mut v = vec![0f64; m.dim];
    for &r in &rows {
        for (k, x) in v.iter_mut().enumerate() {
            *x += m.matrix[r * m.dim + k] as f64;
        }
    }
    v.iter_mut().for_each(|x| *x /= rows.len() as f64);
    v
}

fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

// ---------------------------------------------------------------------------
// The golden tests against mmq's Tokenizer
// ---------------------------------------------------------------------------

#[test]
fn char_ngrams_match_fasttext_get_subwords() {
    let fx = fixture();
    let cases = char_cases(&fx);
    assert!(
        cases.len() >= 600,
        "expected many cases, got {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for c in &cases {
        let tok = tokenizer(1, c.minn, c.maxn, c.bucket);
        let v = tok.tokenize_verbose(&c.word);
        // The word itself first, EOS last, char n-grams in between.
        assert_eq!(
            v.first().map(|t| (t.1, t.2.as_str())),
            Some((TokenKind::Word, c.word.as_str()))
        );
        assert_eq!(
            v.last().map(|t| (t.1, t.2.as_str())),
            Some((TokenKind::Word, EOS))
        );
        let (ids, subs): (Vec<u32>, Vec<String>) = v
            .iter()
            .filter(|t| t.1 == TokenKind::CharNgram)
            .map(|t| (t.0, t.2.clone()))
            .unzip();
        assert_eq!(v.len(), ids.len() + 2, "word {:?}", c.word);
        if ids != c.ids || subs != c.subwords {
            failures.push(format!(
                "word {:?} minn={} maxn={} bucket={}:\n  fastText {:?} {:?}\n  mmq      {:?} {:?}",
                c.word, c.minn, c.maxn, c.bucket, c.subwords, c.ids, subs, ids
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} char n-gram cases differ from fastText:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn word_ngrams_match_fasttext_sentence_vectors() {
    let fx = fixture();
    let models = word_models(&fx);
    assert_eq!(models.len(), 2);
    let mut n = 0;
    let mut failures = Vec::new();
    for m in &models {
        let tok = tokenizer(m.word_ngrams, 0, 0, m.bucket);
        for s in &m.sentences {
            let v = tok.tokenize_verbose(&s.text);
            let words: Vec<&str> = v
                .iter()
                .filter(|t| t.1 == TokenKind::Word)
                .map(|t| t.2.as_str())
                .collect();
            let mut expect_words: Vec<&str> = s.words.iter().map(|w| w.as_str()).collect();
            expect_words.push(EOS);
            assert_eq!(words, expect_words, "words of {:?}", s.text);
            let ngram_ids: Vec<u32> = v
                .iter()
                .filter(|t| t.1 == TokenKind::WordNgram)
                .map(|t| t.0)
                .collect();
            // k words + EOS give sum_{j=2..n} (k + 1 - j + 1) n-grams (where positive).
            let k1 = s.words.len() + 1;
            let expect_count: usize = (2..=m.word_ngrams as usize)
                .map(|j| (k1 + 1).saturating_sub(j))
                .sum();
            assert_eq!(
                ngram_ids.len(),
                expect_count,
                "n-gram count of {:?}",
                s.text
            );
            assert!(ngram_ids.iter().all(|&h| h < m.bucket));
            let got = sentence_vector(m, s, &ngram_ids);
            if !close(&got, &s.vector, 1e-5) {
                failures.push(format!(
                    "wordNgrams={} bucket={} {:?}: fastText {:?} mmq {:?} (n-gram ids {:?})",
                    m.word_ngrams, m.bucket, s.text, s.vector, got, ngram_ids
                ));
            }
            n += 1;
        }
    }
    assert!(n >= 60);
    assert!(
        failures.is_empty(),
        "{} of {} sentence vectors differ from fastText:\n{}",
        failures.len(),
        n,
        failures.join("\n")
    );
}

#[test]
fn fixture_exercises_the_quirks() {
    // The fixtures must contain bytes >= 0x80 and word hashes with the top bit set,
    // otherwise the sign-extension checks would be vacuous.
    let fx = fixture();
    let non_ascii_words = char_cases(&fx)
        .iter()
        .filter(|c| !c.word.is_ascii())
        .count();
    assert!(non_ascii_words > 50);
    let mut neg = 0;
    for m in word_models(&fx) {
        for s in &m.sentences {
            neg += s
                .words
                .iter()
                .filter(|w| (reference::fnv1a(w.as_bytes(), true) as i32) < 0)
                .count();
        }
    }
    assert!(neg > 20, "only {neg} words with a negative 32-bit hash");
}

// ---------------------------------------------------------------------------
// Sensitivity: a local copy of the hashing, with switchable bugs, must be rejected
// by the fixtures whenever a bug is switched on.
// ---------------------------------------------------------------------------

mod reference {
    /// Which quirk of fastText to reproduce (all `true` = correct).
    #[derive(Clone, Copy)]
    pub struct Knobs {
        /// FNV xors `int8_t(byte)` (sign-extended), not the plain byte.
        pub sign_extend_bytes: bool,
        /// Word n-grams start from `uint64_t(int32_t(hash))` and add sign-extended hashes.
        pub sign_extend_words: bool,
        /// EOS takes part in the word n-grams.
        pub eos_in_ngrams: bool,
        /// Single-character n-grams `<` and `>` are skipped.
        pub skip_lone_boundaries: bool,
    }

    pub const CORRECT: Knobs = Knobs {
        sign_extend_bytes: true,
        sign_extend_words: true,
        eos_in_ngrams: true,
        skip_lone_boundaries: true,
    };

    pub fn fnv1a(bytes: &[u8], sign_extend: bool) -> u32 {
        let mut h: u32 = 2_166_136_261;
        for &b in bytes {
            h ^= if sign_extend {
                b as i8 as i32 as u32
            } else {
                b as u32
            };
            h = h.wrapping_mul(16_777_619);
        }
        h
    }

    pub fn char_ngrams(word: &str, minn: usize, maxn: usize, bucket: u32, k: Knobs) -> Vec<u32> {
        let w = format!("<{word}>").into_bytes();
        let mut out = Vec::new();
        for i in 0..w.len() {
            if w[i] & 0xC0 == 0x80 {
                continue;
            }
            let (mut j, mut n) = (i, 1);
            while j < w.len() && n <= maxn {
                j += 1;
                while j < w.len() && w[j] & 0xC0 == 0x80 {
                    j += 1;
                }
                let lone = n == 1 && (i == 0 || j == w.len());
                if n >= minn && !(k.skip_lone_boundaries && lone) {
                    out.push(fnv1a(&w[i..j], k.sign_extend_bytes) % bucket);
                }
                n += 1;
            }
        }
        out
    }

    pub fn word_ngrams(words: &[String], n: usize, bucket: u32, k: Knobs) -> Vec<u32> {
        let mut hs: Vec<u32> = words
            .iter()
            .map(|w| fnv1a(w.as_bytes(), k.sign_extend_bytes))
            .collect();
        if k.eos_in_ngrams {
            hs.push(fnv1a(b"</s>", k.sign_extend_bytes));
        }
        let widen = |h: u32| {
            if k.sign_extend_words {
                h as i32 as i64 as u64
            } else {
                h as u64
            }
        };
        let mut out = Vec::new();
        for i in 0..hs.len() {
            let mut h = widen(hs[i]);
            for &next in hs.iter().take((i + n).min(hs.len())).skip(i + 1) {
                h = h.wrapping_mul(116_049_371).wrapping_add(widen(next));
                out.push((h % bucket as u64) as u32);
            }
        }
        out
    }
}

/// (char n-gram cases that differ, sentence vectors that differ) for a reference variant.
fn mismatches(k: reference::Knobs) -> (usize, usize) {
    let fx = fixture();
    let char_bad = char_cases(&fx)
        .iter()
        .filter(|c| {
            reference::char_ngrams(&c.word, c.minn as usize, c.maxn as usize, c.bucket, k) != c.ids
        })
        .count();
    let mut sent_bad = 0;
    for m in word_models(&fx) {
        for s in &m.sentences {
            let ids = reference::word_ngrams(&s.words, m.word_ngrams as usize, m.bucket, k);
            if !close(&sentence_vector(&m, s, &ids), &s.vector, 1e-5) {
                sent_bad += 1;
            }
        }
    }
    (char_bad, sent_bad)
}

#[test]
fn reference_copy_matches_fixtures() {
    assert_eq!(mismatches(reference::CORRECT), (0, 0));
}

#[test]
fn fixtures_catch_zero_extended_bytes() {
    let (c, s) = mismatches(reference::Knobs {
        sign_extend_bytes: false,
        ..reference::CORRECT
    });
    eprintln!("zero-extended FNV bytes: {c} char cases and {s} sentences rejected");
    assert!(c > 100 && s > 5, "char {c}, sentences {s}");
}

#[test]
fn fixtures_catch_zero_extended_word_hashes() {
    let (c, s) = mismatches(reference::Knobs {
        sign_extend_words: false,
        ..reference::CORRECT
    });
    eprintln!("zero-extended word hashes: {s} sentences rejected");
    assert_eq!(c, 0); // char n-grams do not involve word hashes
    assert!(s > 20, "sentences {s}");
}

#[test]
fn fixtures_catch_eos_left_out_of_word_ngrams() {
    let (_, s) = mismatches(reference::Knobs {
        eos_in_ngrams: false,
        ..reference::CORRECT
    });
    assert!(s > 20, "sentences {s}");
}

#[test]
fn fixtures_catch_lone_boundary_ngrams() {
    let (c, _) = mismatches(reference::Knobs {
        skip_lone_boundaries: false,
        ..reference::CORRECT
    });
    assert!(c > 100, "char {c}");
}
