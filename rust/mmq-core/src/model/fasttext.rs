//! Import of fastText's supervised model files: `.bin`, and `.ftz` (written by
//! `quantize`), as an mmq [`Model`] that predicts what fastText predicts.
//!
//! The layout (fastText's `FastText::saveModel`; every number little-endian):
//!
//! - `i32` magic 793712314, `i32` version (11 or 12);
//! - the arguments: 12 × `i32` (dim, ws, epoch, minCount, neg, wordNgrams, loss, model,
//!   bucket, minn, maxn, lrUpdateRate), then `f64` t;
//! - the dictionary: `i32` size, `i32` nwords, `i32` nlabels, `i64` ntokens, `i64`
//!   pruneidx_size, `size` entries (the word's bytes ended by NUL, `i64` count, `i8` type:
//!   0 word, 1 label), then pruneidx_size pairs of `i32` (bucket, index);
//! - `u8` quantized, the input matrix; `u8` quantized, the output matrix. A dense matrix
//!   is `i64` rows, `i64` columns and rows × columns `f32`; a quantized one is `u8` qnorm,
//!   `i64` rows, `i64` columns, `i32` code size, that many `u8` codes, a product
//!   quantizer (`i32` dim, nsubq, dsub, lastdsub; dim × 256 `f32` centroids) and, with
//!   qnorm, rows × `u8` norm codes and a product quantizer of dimension 1.
//!
//! Every count is checked against the bytes left before anything is allocated.
//! Quantized matrices are decoded to dense rows (each row is its centroids times its
//! norm, as fastText adds it), so the model is an ordinary bottleneck model whose
//! tokenizer carries the dictionary ([`Vocab`]). Its config sets `fasttext_compat`, so
//! probabilities come out as fastText reports them (see [`ModelConfig`]).
use super::loss::{LossKind, Tree};
use super::{Head, Model, ModelConfig, TokenIndex};
use crate::error::{MmqError, Result};
use crate::text::vocab::{Vocab, FASTTEXT_LABEL_PREFIX};
use crate::text::TokenizerConfig;
use std::collections::HashMap;
use std::sync::Arc;

/// The first `i32` of every fastText model file.
pub const MAGIC: i32 = 793_712_314;
/// The file versions read (fastText 0.9's is 12).
pub const VERSIONS: [i32; 2] = [11, 12];
/// Centroids per sub-quantizer of fastText's product quantizer (8 bits).
const KSUB: usize = 256;

/// Whether `bytes` start like a fastText model file.
pub fn is_fasttext(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == MAGIC
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    what: &'a str,
}

impl<'a> Reader<'a> {
    fn bad(&self, reason: String) -> MmqError {
        MmqError::InvalidModelFile {
            path: self.what.to_string(),
            reason: format!("fastText model file: {reason}"),
        }
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        match self.at.checked_add(n).filter(|&e| e <= self.b.len()) {
            Some(end) => {
                let s = &self.b[self.at..end];
                self.at = end;
                Ok(s)
            }
            None => Err(self.bad(format!(
                "the file ends inside {field} (byte {} of {}, {n} more needed)",
                self.at,
                self.b.len()
            ))),
        }
    }

    fn i32(&mut self, field: &str) -> Result<i32> {
        Ok(i32::from_le_bytes(self.take(4, field)?.try_into().unwrap()))
    }
    fn i64(&mut self, field: &str) -> Result<i64> {
        Ok(i64::from_le_bytes(self.take(8, field)?.try_into().unwrap()))
    }
    fn f64(&mut self, field: &str) -> Result<f64> {
        Ok(f64::from_le_bytes(self.take(8, field)?.try_into().unwrap()))
    }
    fn u8(&mut self, field: &str) -> Result<u8> {
        Ok(self.take(1, field)?[0])
    }
    fn flag(&mut self, field: &str) -> Result<bool> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.bad(format!("{field} must be 0 or 1, got {v}"))),
        }
    }

    /// A count in `[0, max]`.
    fn count(&mut self, v: i64, field: &str, max: u64) -> Result<usize> {
        if v < 0 || v as u64 > max {
            return Err(self.bad(format!("{field} must be in [0, {max}], got {v}")));
        }
        Ok(v as usize)
    }

    /// `n` f32 values, each finite; `n` is checked against the bytes left first.
    fn f32s(&mut self, n: usize, field: &str) -> Result<Vec<f32>> {
        let bytes = n
            .checked_mul(4)
            .ok_or_else(|| self.bad(format!("{field}: {n} values overflow")))?;
        let raw = self.take(bytes, field)?;
        let v: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(self.bad(format!("{field} holds a non-finite value at {i}")));
        }
        Ok(v)
    }

    /// A NUL-terminated UTF-8 string.
    fn word(&mut self, field: &str) -> Result<String> {
        let rest = &self.b[self.at..];
        let Some(len) = rest.iter().position(|&c| c == 0) else {
            return Err(self.bad(format!("the file ends inside {field} (no NUL)")));
        };
        let s = std::str::from_utf8(&rest[..len])
            .map_err(|e| self.bad(format!("{field} is not UTF-8: {e}")))?
            .to_string();
        self.at += len + 1;
        Ok(s)
    }
}

/// The arguments of the file that prediction depends on.
struct Args {
    dim: usize,
    epoch: i32,
    neg: i32,
    word_ngrams: i32,
    loss: LossKind,
    bucket: u32,
    minn: i32,
    maxn: i32,
}

fn read_args(r: &mut Reader<'_>, version: i32) -> Result<Args> {
    let mut v = [0i32; 12];
    let names = [
        "dim",
        "ws",
        "epoch",
        "minCount",
        "neg",
        "wordNgrams",
        "loss",
        "model",
        "bucket",
        "minn",
        "maxn",
        "lrUpdateRate",
    ];
    for (x, name) in v.iter_mut().zip(names) {
        *x = r.i32(name)?;
    }
    r.f64("t")?;
    let [dim, _ws, epoch, _min_count, neg, word_ngrams, loss, model, bucket, minn, mut maxn, _] = v;
    if model != 3 {
        let kind = match model {
            1 => "cbow".to_string(),
            2 => "skipgram".to_string(),
            m => format!("model type {m}"),
        };
        return Err(r.bad(format!(
            "it holds a {kind} model (word vectors); mmq imports supervised classifiers only"
        )));
    }
    let loss = match loss {
        1 => LossKind::Hs,
        2 => LossKind::Ns,
        3 => LossKind::Softmax,
        4 => LossKind::Ova,
        l => {
            return Err(r.bad(format!(
                "unknown loss {l} (expected 1 hs, 2 ns, 3 softmax, 4 ova)"
            )))
        }
    };
    if version == 11 {
        // fastText: supervised models of version 11 did not use char n-grams.
        maxn = 0;
    }
    let positive = |x: i32, name: &str, max: i64| -> Result<()> {
        if x < 0 || x as i64 > max {
            return Err(r.bad(format!("{name} must be in [0, {max}], got {x}")));
        }
        Ok(())
    };
    positive(dim, "dim", super::MAX_DIM as i64)?;
    positive(bucket, "bucket", crate::text::MAX_BUCKET as i64 - 1)?;
    positive(word_ngrams, "wordNgrams", crate::text::MAX_NGRAM as i64)?;
    positive(minn, "minn", crate::text::MAX_NGRAM as i64)?;
    positive(maxn, "maxn", crate::text::MAX_NGRAM as i64)?;
    if dim == 0 {
        return Err(r.bad("dim must be >= 1, got 0".into()));
    }
    Ok(Args {
        dim: dim as usize,
        epoch,
        neg,
        word_ngrams: word_ngrams.max(1),
        loss,
        bucket: bucket as u32,
        minn,
        maxn,
    })
}

struct Dictionary {
    words: Vec<String>,
    word_counts: Vec<u64>,
    labels: Vec<String>,
    label_counts: Vec<u64>,
    prune: Option<HashMap<u32, u32>>,
}

fn read_dictionary(r: &mut Reader<'_>, bucket: u32) -> Result<Dictionary> {
    let size = r.i32("the dictionary size")?;
    let nwords = r.i32("nwords")?;
    let nlabels = r.i32("nlabels")?;
    r.i64("ntokens")?;
    let prune_size = r.i64("pruneidx_size")?;
    // An entry takes at least 10 bytes (NUL, count, type): a size beyond the bytes left
    // is refused before anything is allocated.
    let left = (r.b.len() - r.at) as u64 / 10;
    let size = r.count(size as i64, "the dictionary size", left)?;
    if nwords < 0 || nlabels < 1 || nwords as i64 + nlabels as i64 != size as i64 {
        return Err(r.bad(format!(
            "the dictionary holds {size} entries but says {nwords} words and {nlabels} labels \
             (a classifier needs at least one label)"
        )));
    }
    let mut d = Dictionary {
        words: Vec::with_capacity(nwords as usize),
        word_counts: Vec::with_capacity(nwords as usize),
        labels: Vec::with_capacity(nlabels as usize),
        label_counts: Vec::with_capacity(nlabels as usize),
        prune: None,
    };
    for i in 0..size {
        let w = r.word("a dictionary word")?;
        let count = r.i64("a word count")?;
        let kind = r.u8("an entry type")?;
        if count < 0 {
            return Err(r.bad(format!("entry {i} ({w:?}) has a negative count {count}")));
        }
        match (kind, i < nwords as usize) {
            (0, true) => {
                d.words.push(w);
                d.word_counts.push(count as u64);
            }
            (1, false) => {
                d.labels.push(w);
                d.label_counts.push(count as u64);
            }
            _ => {
                return Err(r.bad(format!(
                    "entry {i} ({w:?}) has type {kind}; the {nwords} words (type 0) must \
                     come before the {nlabels} labels (type 1)"
                )))
            }
        }
    }
    if prune_size >= 0 {
        let left = (r.b.len() - r.at) as u64 / 8;
        let n = r.count(prune_size, "pruneidx_size", left)?;
        let mut map = HashMap::with_capacity(n);
        for _ in 0..n {
            let (b, j) = (r.i32("a pruned bucket")?, r.i32("a pruned index")?);
            if b < 0 || b as u32 >= bucket.max(1) || j < 0 || j as usize >= n {
                return Err(r.bad(format!(
                    "a pruned bucket ({b} -> {j}) is outside the {bucket} buckets or {n} kept ones"
                )));
            }
            map.insert(b as u32, j as u32);
        }
        d.prune = Some(map);
    }
    Ok(d)
}

/// A product quantizer: centroids of each sub-vector (fastText's `ProductQuantizer`).
struct Pq {
    dim: usize,
    nsubq: usize,
    dsub: usize,
    lastdsub: usize,
    centroids: Vec<f32>,
}

impl Pq {
    fn read(r: &mut Reader<'_>, dim_expected: usize, field: &str) -> Result<Self> {
        let (dim, nsubq, dsub, lastdsub) = (
            r.i32("the quantizer's dim")?,
            r.i32("nsubq")?,
            r.i32("dsub")?,
            r.i32("lastdsub")?,
        );
        let ok = dim as i64 == dim_expected as i64
            && dsub >= 1
            && lastdsub >= 1
            && lastdsub <= dsub
            && nsubq >= 1
            && (nsubq as i64 - 1) * dsub as i64 + lastdsub as i64 == dim as i64;
        if !ok {
            return Err(r.bad(format!(
                "{field}: quantizer of dim {dim}, {nsubq} sub-quantizers of {dsub} (last \
                 {lastdsub}) does not fit rows of {dim_expected}"
            )));
        }
        let centroids = r.f32s(dim_expected * KSUB, field)?;
        Ok(Self {
            dim: dim as usize,
            nsubq: nsubq as usize,
            dsub: dsub as usize,
            lastdsub: lastdsub as usize,
            centroids,
        })
    }

    /// Centroid `c` of sub-quantizer `m` (fastText's `get_centroids`).
    fn centroid(&self, m: usize, c: u8) -> &[f32] {
        let c = c as usize;
        if m == self.nsubq - 1 {
            let at = m * KSUB * self.dsub + c * self.lastdsub;
            &self.centroids[at..at + self.lastdsub]
        } else {
            let at = (m * KSUB + c) * self.dsub;
            &self.centroids[at..at + self.dsub]
        }
    }

    /// Row `codes` decoded, times `norm`, into `out` (`dim` wide).
    fn decode(&self, codes: &[u8], norm: f32, out: &mut [f32]) {
        for (m, &c) in codes.iter().enumerate() {
            let at = m * self.dsub;
            for (o, &x) in out[at..].iter_mut().zip(self.centroid(m, c)) {
                *o = norm * x;
            }
        }
        debug_assert_eq!(out.len(), self.dim);
    }
}

/// A matrix, dense or quantized, as `rows × cols` dense values.
fn read_matrix(
    r: &mut Reader<'_>,
    quantized: bool,
    field: &str,
) -> Result<(usize, usize, Vec<f32>)> {
    if !quantized {
        let (m, n) = (r.i64("rows")?, r.i64("columns")?);
        let n = r.count(n, &format!("{field}'s columns"), super::MAX_DIM as u64)?;
        let left = (r.b.len() - r.at) as u64 / 4 / n.max(1) as u64;
        let m = r.count(m, &format!("{field}'s rows"), left)?;
        let v = r.f32s(m * n, field)?;
        return Ok((m, n, v));
    }
    let qnorm = r.flag("qnorm")?;
    let (m, n) = (r.i64("rows")?, r.i64("columns")?);
    let n = r.count(n, &format!("{field}'s columns"), super::MAX_DIM as u64)?;
    let codesize = r.i32("the code size")? as i64;
    let left = (r.b.len() - r.at) as u64;
    let codesize = r.count(codesize, "the code size", left)?;
    let codes = r.take(codesize, "the codes")?;
    let pq = Pq::read(r, n, field)?;
    let m = r.count(m, &format!("{field}'s rows"), codesize as u64)?;
    if m.checked_mul(pq.nsubq) != Some(codesize) {
        return Err(r.bad(format!(
            "{field}: {codesize} codes for {m} rows of {} sub-quantizers",
            pq.nsubq
        )));
    }
    let norms = if qnorm {
        let codes = r.take(m, "the norm codes")?;
        let npq = Pq::read(r, 1, "the norm quantizer")?;
        codes.iter().map(|&c| npq.centroid(0, c)[0]).collect()
    } else {
        vec![1.0; m]
    };
    let mut out = vec![0.0f32; m * n];
    for (i, row) in out.chunks_exact_mut(n.max(1)).enumerate().take(m) {
        pq.decode(&codes[i * pq.nsubq..(i + 1) * pq.nsubq], norms[i], row);
    }
    Ok((m, n, out))
}

/// The fastText model in `bytes` (`what` names it in errors) as an mmq model.
pub fn import(bytes: &[u8], what: &str) -> Result<Model> {
    let mut r = Reader {
        b: bytes,
        at: 0,
        what,
    };
    if r.i32("the magic number")? != MAGIC {
        return Err(r.bad("it does not start with fastText's magic number".into()));
    }
    let version = r.i32("the version")?;
    if !VERSIONS.contains(&version) {
        return Err(r.bad(format!(
            "format version {version} is not supported (supported: {VERSIONS:?})"
        )));
    }
    let args = read_args(&mut r, version)?;
    let dict = read_dictionary(&mut r, args.bucket)?;
    let quant_input = r.flag("the input's quantization flag")?;
    let (rows, cols, input) = read_matrix(&mut r, quant_input, "the input matrix")?;
    let quant_output = r.flag("the output's quantization flag")?;
    let (out_rows, out_cols, mut output) = read_matrix(&mut r, quant_output, "the output matrix")?;
    if r.at != bytes.len() {
        return Err(r.bad(format!(
            "{} bytes follow the output matrix",
            bytes.len() - r.at
        )));
    }
    let nlabels = dict.labels.len();
    let vocab = Vocab::new(
        dict.words,
        dict.word_counts,
        dict.prune,
        FASTTEXT_LABEL_PREFIX,
    )
    .map_err(|e| r.bad(e.to_string()))?;
    let n_ids = vocab.n_ids(args.bucket);
    if cols != args.dim || out_cols != args.dim || rows as u64 != n_ids || out_rows != nlabels {
        return Err(r.bad(format!(
            "the matrices are {rows} × {cols} and {out_rows} × {out_cols}; dim {} with {} words, \
             {} buckets and {nlabels} labels needs {n_ids} × {} and {nlabels} × {}",
            args.dim,
            vocab.nwords(),
            vocab
                .prune
                .as_ref()
                .map_or(args.bucket as usize, |p| p.len()),
            args.dim,
            args.dim
        )));
    }
    let label_counts = dict.label_counts;
    // Every loss: an mmq file refuses such counts too, so the imported model saves and
    // loads again (found by the fuzz target model_file).
    super::loss::check_counts(&label_counts).map_err(|e| r.bad(e.to_string()))?;
    let tree = (args.loss == LossKind::Hs).then(|| Tree::build(&label_counts));
    if args.loss == LossKind::Hs {
        // fastText's hs output matrix has a row per label; its tree uses the first n - 1.
        output.truncate(nlabels.saturating_sub(1) * args.dim);
    }
    let labels = dict
        .labels
        .iter()
        .map(|l| {
            l.strip_prefix(FASTTEXT_LABEL_PREFIX)
                .unwrap_or(l)
                .to_string()
        })
        .collect();
    // fastText's n-gram loop starts at length 1 (minn 0 acts as 1) and gives nothing
    // when minn > maxn.
    let (minn, maxn) = if args.maxn == 0 || args.minn > args.maxn {
        (0, 0)
    } else {
        (args.minn.max(1) as u32, args.maxn as u32)
    };
    let cfg = ModelConfig {
        dim: args.dim,
        epoch: args.epoch.max(1) as usize,
        lr: 0.1,
        loss: args.loss,
        neg: args.neg.max(1) as usize,
        threads: 1,
        seed: 0,
        tokenizer: TokenizerConfig {
            word_ngrams: args.word_ngrams as u32,
            minn,
            maxn,
            // fastText sets bucket 0 when nothing is hashed (words only); mmq needs >= 1.
            bucket: args.bucket.max(1),
            split_cjk: false,
            lowercase: false,
            split_punct: false,
            drop_punct: false,
            label_prefix: None,
        },
        head: Head::Bottleneck,
        fasttext_compat: true,
        ..Default::default()
    };
    cfg.validate().map_err(|e| r.bad(e.to_string()))?;
    let index = TokenIndex::from_ids((0..rows as u32).collect())?;
    Ok(Model {
        cfg,
        labels,
        label_counts,
        index,
        input,
        output,
        tree,
        dense: Vec::new(),
        idf: Vec::new(),
        history: Vec::new(),
        vocab: Some(Arc::new(vocab)),
        compressed: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fastText file of 3 words ("</s>", "a", "b"), 2 labels, `bucket` buckets, dim 2.
    fn file(loss: i32, bucket: i32, word_ngrams: i32, prune: Option<&[(i32, i32)]>) -> Vec<u8> {
        let mut b = Vec::new();
        let i32s = |b: &mut Vec<u8>, v: &[i32]| v.iter().for_each(|x| b.extend(x.to_le_bytes()));
        i32s(&mut b, &[MAGIC, 12]);
        // dim ws epoch minCount neg wordNgrams loss model bucket minn maxn lrUpdateRate
        i32s(
            &mut b,
            &[2, 5, 5, 1, 5, word_ngrams, loss, 3, bucket, 0, 0, 100],
        );
        b.extend(1e-4f64.to_le_bytes());
        i32s(&mut b, &[5, 3, 2]);
        b.extend(10i64.to_le_bytes());
        b.extend(prune.map_or(-1i64, |p| p.len() as i64).to_le_bytes());
        for (w, c, t) in [
            ("</s>", 4i64, 0u8),
            ("a", 3, 0),
            ("b", 1, 0),
            ("__label__x", 3, 1),
            ("__label__y", 1, 1),
        ] {
            b.extend(w.as_bytes());
            b.push(0);
            b.extend(c.to_le_bytes());
            b.push(t);
        }
        let kept = prune.map_or(bucket as usize, |p| {
            p.iter().for_each(|&(h, j)| i32s(&mut b, &[h, j]));
            p.len()
        });
        let rows = 3 + kept;
        b.push(0);
        b.extend((rows as i64).to_le_bytes());
        b.extend(2i64.to_le_bytes());
        for r in 0..rows {
            for c in 0..2 {
                b.extend(((r * 2 + c) as f32 * 0.1).to_le_bytes());
            }
        }
        b.push(0);
        b.extend(2i64.to_le_bytes());
        b.extend(2i64.to_le_bytes());
        for x in [1.0f32, -1.0, -0.5, 0.5] {
            b.extend(x.to_le_bytes());
        }
        b
    }

    #[test]
    fn words_get_dictionary_ids_and_hashed_tokens_follow_them() {
        let m = import(&file(3, 7, 2, None), "mem").unwrap();
        assert_eq!(m.labels, ["x", "y"]);
        assert_eq!(m.index.len(), 3 + 7);
        let tok = m.tokenizer().unwrap();
        let ids = tok.tokenize("a zzz b __label__x");
        // a, b and </s> by their ids; zzz (unknown) and the label give no id of their
        // own; the word bigrams (over a zzz b </s>) are 3 + hash % 7.
        assert_eq!(&ids[..3], &[1, 2, 0]);
        assert_eq!(ids.len(), 3 + 3);
        let hashes: Vec<u32> = ["a", "zzz", "b", "</s>"]
            .iter()
            .map(|w| crate::text::fnv1a(w.as_bytes()))
            .collect();
        for (i, pair) in hashes.windows(2).enumerate() {
            assert_eq!(
                ids[3 + i] as u64,
                3 + crate::text::word_ngram_hash(pair) % 7
            );
        }
        // Saved in mmq's format and read back: the same ids and numbers.
        let back = Model::from_bytes(&m.to_bytes().unwrap(), "mem").unwrap();
        assert_eq!(
            back.tokenizer().unwrap().tokenize("a zzz b"),
            tok.tokenize("a zzz b")
        );
        assert_eq!(back.input, m.input);
        assert!(back.cfg.fasttext_compat);
    }

    #[test]
    fn a_cutoff_keeps_only_its_buckets() {
        let all = import(&file(3, 7, 2, None), "mem").unwrap();
        let ids = all.tokenizer().unwrap().tokenize("a b");
        let kept = ids[3] - 3; // the bucket of the bigram "a b"
        let m = import(&file(3, 7, 2, Some(&[(kept as i32, 0)])), "mem").unwrap();
        assert_eq!(m.index.len(), 4);
        // "a b" keeps its bigram (now index 0 after the words), "b </s>" is pruned.
        assert_eq!(m.tokenizer().unwrap().tokenize("a b"), vec![1, 2, 0, 3]);
        let back = Model::from_bytes(&m.to_bytes().unwrap(), "mem").unwrap();
        assert_eq!(back.tokenizer().unwrap().tokenize("a b"), vec![1, 2, 0, 3]);
    }

    #[test]
    fn every_truncation_and_every_loss_is_handled() {
        for loss in 1..=4 {
            let b = file(loss, 3, 1, None);
            let m = import(&b, "mem").unwrap();
            assert_eq!(m.output.len(), if loss == 1 { 2 } else { 4 });
            let h = [0.3f32, -0.2];
            let top = m.predict_hidden(&h, 2, 0.0, &mut Vec::new());
            assert!(!top.is_empty() && top.iter().all(|e| e.1 > 0.0 && e.1 <= 1.0 + 1e-5));
            for n in 0..b.len() {
                let e = import(&b[..n], "mem").unwrap_err();
                assert!(matches!(e, MmqError::InvalidModelFile { .. }), "{n}: {e}");
            }
        }
        let mut b = file(3, 3, 1, None);
        b[8 + 6 * 4..8 + 7 * 4].copy_from_slice(&9i32.to_le_bytes());
        assert!(import(&b, "mem")
            .unwrap_err()
            .to_string()
            .contains("unknown loss 9"));
    }

    /// Found by the fuzz target model_file (session 12): an hs file whose label counts
    /// summed past the Huffman builder's sentinel of unbuilt nodes made a cycle in the
    /// tree, and the import never ended. The counts are now checked before the tree is
    /// built, and the builder keeps its sums below the sentinel.
    #[test]
    fn hs_label_counts_past_the_tree_builders_range_are_refused_at_once() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/fasttext_hs_huge_counts.bin"
        );
        let b = std::fs::read(path).unwrap();
        let t = std::time::Instant::now();
        let e = import(&b, "mem").unwrap_err();
        assert!(t.elapsed().as_secs() < 2, "took {:?}", t.elapsed());
        assert!(matches!(e, MmqError::InvalidModelFile { .. }), "{e}");
        // The same for the other losses: such a model could not be saved and loaded.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/fasttext_softmax_huge_counts.bin"
        );
        let e = import(&std::fs::read(path).unwrap(), "mem").unwrap_err();
        assert!(e.to_string().contains("label counts"), "{e}");
        // Huge counts on their own build a tree (no cycle) quickly.
        let tree = Tree::build(&[u64::MAX / 3, u64::MAX / 3, 7, 1]);
        assert!(tree.paths.iter().all(|p| !p.is_empty() && p.len() < 4));
    }

    #[test]
    fn fasttexts_sigmoid_table_and_log_floor() {
        use crate::model::loss::{ft_log, table_sigmoid};
        assert_eq!(table_sigmoid(-9.0), 0.0);
        assert_eq!(table_sigmoid(9.0), 1.0);
        assert_eq!(table_sigmoid(0.0), 0.5);
        // The table's step is 1/32: values within a step read the same entry.
        assert_eq!(table_sigmoid(0.001), table_sigmoid(0.03));
        assert!((ft_log(0.0) - (1e-5f32).ln()).abs() < 1e-6);
    }
}
