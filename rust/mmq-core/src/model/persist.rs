//! Model <-> bytes, through the self-describing file format of [`crate::io`].
use super::dense::DenseInput;
use super::loss::Tree;
use super::{EpochRecord, Model, ModelConfig, TokenIndex};
use crate::error::{MmqError, Result};
use crate::io::quant::{quantizer_from_parts, quantizer_header, quantizer_parts};
use crate::io::{self, Tensor};
use crate::text::vocab::Vocab;
use serde_json::json;
use std::sync::Arc;

/// The tensors of an imported model's dictionary: its words (each followed by a NUL),
/// their counts (low and high 32 bits) and, after a cutoff, the kept buckets (bucket,
/// index).
fn vocab_tensors(v: &Vocab) -> Result<Vec<(String, Tensor)>> {
    let mut words = Vec::new();
    for w in &v.words {
        if w.as_bytes().contains(&0) {
            return Err(MmqError::InvalidInput(format!(
                "the vocabulary word {w:?} holds a NUL byte"
            )));
        }
        words.extend_from_slice(w.as_bytes());
        words.push(0);
    }
    let counts = v
        .counts
        .iter()
        .flat_map(|&c| [c as u32, (c >> 32) as u32])
        .collect();
    let mut t = vec![
        (
            "vocab.words".to_string(),
            Tensor::U8(vec![words.len()], words),
        ),
        (
            "vocab.counts".to_string(),
            Tensor::U32(vec![v.counts.len(), 2], counts),
        ),
    ];
    if let Some(p) = &v.prune {
        let mut pairs: Vec<(u32, u32)> = p.iter().map(|(&b, &j)| (b, j)).collect();
        pairs.sort_unstable();
        let flat = pairs.iter().flat_map(|&(b, j)| [b, j]).collect();
        t.push((
            "vocab.prune".to_string(),
            Tensor::U32(vec![pairs.len(), 2], flat),
        ));
    }
    Ok(t)
}

/// The dictionary of an imported model, from its header entry `h` and its tensors.
fn read_vocab(
    h: &serde_json::Value,
    t: &mut std::collections::HashMap<String, Tensor>,
    what: &str,
) -> Result<Vocab> {
    let bad = |reason: String| MmqError::InvalidModelFile {
        path: what.to_string(),
        reason: format!("vocabulary: {reason}"),
    };
    let n = h["words"]
        .as_u64()
        .ok_or_else(|| bad("no word count".into()))? as usize;
    let prefix = h["label_prefix"]
        .as_str()
        .ok_or_else(|| bad("no label prefix".into()))?;
    let pruned = h["pruned"]
        .as_bool()
        .ok_or_else(|| bad("no pruned flag".into()))?;
    let Some(Tensor::U8(_, bytes)) = t.remove("vocab.words") else {
        return Err(bad("missing u8 tensor vocab.words".into()));
    };
    if bytes.last().is_some_and(|&b| b != 0) {
        return Err(bad("the words do not end with a NUL".into()));
    }
    let words: Vec<String> = bytes
        .split(|&b| b == 0)
        .take(bytes.iter().filter(|&&b| b == 0).count())
        .map(|w| {
            String::from_utf8(w.to_vec()).map_err(|e| bad(format!("a word is not UTF-8: {e}")))
        })
        .collect::<Result<_>>()?;
    if words.len() != n {
        return Err(bad(format!("{} words, the header says {n}", words.len())));
    }
    let c = io::take_u32(t, "vocab.counts", what)?;
    if c.len() != 2 * n {
        return Err(bad(format!("{} count halves for {n} words", c.len())));
    }
    let counts = c
        .chunks_exact(2)
        .map(|p| p[0] as u64 | (p[1] as u64) << 32)
        .collect();
    let prune = if pruned {
        let p = io::take_u32(t, "vocab.prune", what)?;
        if p.len() % 2 != 0 {
            return Err(bad("vocab.prune holds an odd number of values".into()));
        }
        let k = p.len() / 2;
        let mut map = std::collections::HashMap::with_capacity(k);
        for pair in p.chunks_exact(2) {
            if pair[1] as usize >= k || map.insert(pair[0], pair[1]).is_some() {
                return Err(bad(format!("bad kept bucket {} -> {}", pair[0], pair[1])));
            }
        }
        Some(map)
    } else {
        None
    };
    Vocab::new(words, counts, prune, prefix).map_err(|e| bad(e.to_string()))
}

impl io::StoredConfig for ModelConfig {
    const KIND: &'static str = "classifier";
    const NOUN: &'static str = "classifier";
    fn check(&self) -> Result<()> {
        self.validate()
    }
}

impl Model {
    /// The file header (without the framing keys [`io::to_bytes`] adds).
    fn header(&self) -> Result<serde_json::Value> {
        let dense = self
            .dense
            .iter()
            .map(|d| {
                let params = quantizer_header(&d.quantizer)?;
                Ok(json!({"name": d.name, "offset": d.offset, "quantizer": params}))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut h = json!({
            "kind": <ModelConfig as io::StoredConfig>::KIND,
            "config": self.cfg,
            "labels": self.labels,
            "label_counts": self.label_counts,
            "dense": dense,
            "history": self.history,
        });
        if let Some(v) = &self.vocab {
            h["vocab"] = json!({"words": v.words.len(), "label_prefix": v.label_prefix,
                                "pruned": v.prune.is_some()});
        }
        if let Some(q) = self.compressed_header()? {
            h["quantized"] = q;
        }
        Ok(h)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (i, d) in self.dense.iter().enumerate() {
            let (_, t) = quantizer_parts(&d.quantizer, &format!("dense.{i}."))?;
            tensors.extend(t);
        }
        let header = self.header()?;
        let rows = self.index.len();
        if let Some(c) = &self.compressed {
            tensors.extend(self.compressed_tensors(c)?);
        } else {
            tensors.push((
                "input".into(),
                Tensor::F32(vec![rows, self.width()], self.input.clone()),
            ));
            tensors.push((
                "output".into(),
                Tensor::F32(vec![self.n_out(), self.width()], self.output.clone()),
            ));
            tensors.push((
                "token_ids".into(),
                Tensor::U32(vec![rows], self.index.ids.clone()),
            ));
        }
        if !self.idf.is_empty() {
            tensors.push(("idf".into(), Tensor::F32(vec![rows], self.idf.clone())));
        }
        if let Some(v) = &self.vocab {
            tensors.extend(vocab_tensors(v)?);
        }
        io::to_bytes(&header, &tensors)
    }

    /// The model in `bytes`: an mmq classifier file, or a fastText `.bin` / `.ftz`
    /// (imported: [`super::fasttext`]).
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self> {
        if super::fasttext::is_fasttext(bytes) {
            return super::fasttext::import(bytes, what);
        }
        let bad = |reason: String| MmqError::InvalidModelFile {
            path: what.to_string(),
            reason,
        };
        let io::ClassifierFile {
            header,
            tensors: mut t,
            cfg,
            labels,
            label_counts,
        } = io::read_classifier::<ModelConfig>(bytes, what)?;
        let quantized = header.get("quantized").cloned();
        let ids = match quantized {
            Some(_) => Vec::new(),
            None => io::take_u32(&mut t, "token_ids", what)?,
        };
        let tree = (cfg.loss == super::loss::LossKind::Hs).then(|| Tree::build(&label_counts));
        let mut dense = Vec::new();
        if let Some(list) = header.get("dense").and_then(|d| d.as_array()) {
            for (i, d) in list.iter().enumerate() {
                let name = d["name"]
                    .as_str()
                    .ok_or_else(|| bad(format!("dense column {i} has no name")))?;
                let offset = d["offset"]
                    .as_u64()
                    .and_then(|o| u32::try_from(o).ok())
                    .ok_or_else(|| bad(format!("dense column {i} has no offset below 2^32")))?;
                let q =
                    quantizer_from_parts(&d["quantizer"], &mut t, &format!("dense.{i}."), what)?;
                dense.push(DenseInput {
                    name: name.to_string(),
                    quantizer: q,
                    offset,
                });
            }
        }
        // The dense columns' id ranges must be the ones fitting lays out (after the text
        // buckets, one after another): anything else makes codes collide with text.
        let expected = super::dense::assign_offsets(
            cfg.tokenizer.bucket,
            dense
                .iter()
                .map(|d| (d.name.clone(), d.quantizer.clone()))
                .collect(),
        )
        .map_err(|e| bad(e.to_string()))?;
        if expected
            .iter()
            .zip(&dense)
            .any(|(e, d)| e.offset != d.offset)
        {
            return Err(bad(
                "the dense columns' token offsets do not follow the text buckets".into(),
            ));
        }
        let mut m = Model {
            dense,
            index: TokenIndex::from_ids(ids).map_err(|e| bad(e.to_string()))?,
            cfg,
            labels,
            label_counts,
            input: Vec::new(),
            output: Vec::new(),
            tree,
            idf: Vec::new(),
            history: Vec::new(),
            vocab: None,
            compressed: None,
        };
        match &quantized {
            Some(q) => m.read_compressed(q, &mut t, what)?,
            None => {
                m.input = io::take_f32(&mut t, "input", &[m.index.len(), m.width()], what)?;
                m.output = io::take_f32(&mut t, "output", &[m.n_out(), m.width()], what)?;
            }
        }
        if m.cfg.head == super::Head::Linear && m.cfg.idf {
            m.idf = io::take_f32(&mut t, "idf", &[m.index.len()], what)?;
        }
        m.history = EpochRecord::read_all(&header, "history", what)?;
        if let Some(h) = header.get("vocab") {
            m.vocab = Some(Arc::new(read_vocab(h, &mut t, what)?));
        }
        io::check_keys(&header, &m.header()?, what)?;
        Ok(m)
    }

    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        io::write_atomic(path, &self.to_bytes()?)
    }

    pub fn load(path: &std::path::Path) -> Result<Self> {
        Self::from_bytes(&io::read(path)?, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EpochRecord;

    fn model() -> Model {
        let dim = 2;
        Model {
            cfg: ModelConfig {
                dim,
                ..Default::default()
            },
            labels: vec!["a".into(), "b".into()],
            label_counts: vec![3, 1],
            index: TokenIndex::from_ids(vec![5, 9]).unwrap(),
            input: vec![0.1, -0.2, 0.3, 0.4],
            output: vec![0.5, 0.6, -0.7, 0.8],
            tree: None,
            dense: vec![],
            idf: vec![],
            history: vec![EpochRecord {
                epoch: 0,
                train_loss: 0.5,
                valid_loss: 0.6,
                valid_accuracy: 0.75,
                best: true,
            }],
            vocab: None,
            compressed: None,
        }
    }

    /// Found by the fuzz target model_file (save → load round trip): a history number
    /// beyond f32's range (1e39) loaded as infinity, was saved as null, and the saved
    /// file did not load ("bad history: invalid type: null, expected f32").
    #[test]
    fn a_history_number_beyond_f32_is_refused_on_load() {
        let b = model().to_bytes().unwrap();
        let back = Model::from_bytes(&b, "mem").unwrap();
        assert_eq!(back.history, model().history);
        assert_eq!(back.to_bytes().unwrap(), b);
        for field in ["train_loss", "valid_loss", "valid_accuracy"] {
            let (mut header, tensors) = io::from_bytes(&b, "mem").unwrap();
            header["history"][0][field] = json!(1e39);
            let mut tensors: Vec<_> = tensors.into_iter().collect();
            tensors.sort_by(|a, b| a.0.cmp(&b.0));
            let edited = io::to_bytes(&header, &tensors).unwrap();
            let e = Model::from_bytes(&edited, "mem").unwrap_err();
            assert!(matches!(e, MmqError::InvalidModelFile { .. }), "{e}");
            assert!(
                e.to_string().contains("finite 32-bit float"),
                "{field}: {e}"
            );
        }
    }

    /// A label prefix is kept by the file; without one the header has no such key (files
    /// of earlier versions load unchanged), and a bad one in a file is refused.
    #[test]
    fn the_label_prefix_is_stored_only_when_set() {
        let plain = model().to_bytes().unwrap();
        let (h, _) = io::from_bytes(&plain, "mem").unwrap();
        assert!(h["config"]["tokenizer"].get("label_prefix").is_none());
        let mut m = model();
        m.cfg.tokenizer.label_prefix = Some("#lbl#".into());
        let b = m.to_bytes().unwrap();
        let back = Model::from_bytes(&b, "mem").unwrap();
        assert_eq!(back.cfg.tokenizer.label_prefix.as_deref(), Some("#lbl#"));
        assert!(back.cfg.tokenizer.same_ids(&model().cfg.tokenizer));
        let bad = edited(&b, io::FORMAT_VERSION, |h| {
            h["config"]["tokenizer"]["label_prefix"] = json!("a b")
        });
        refused(&bad, "label_prefix must be");
    }

    /// The header of `b` edited by `edit`, written back (re-signed) as `version`.
    fn edited(b: &[u8], version: u64, edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
        let (mut header, tensors) = io::from_bytes(b, "mem").unwrap();
        edit(&mut header);
        let mut tensors: Vec<_> = tensors.into_iter().collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        io::to_bytes_as_version(&header, &tensors, version).unwrap()
    }

    fn remove(h: &mut serde_json::Value, pointer: &str) {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        h.pointer_mut(parent)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove(key)
            .unwrap();
    }

    fn refused(b: &[u8], says: &str) {
        let e = Model::from_bytes(b, "mem").unwrap_err();
        assert!(matches!(e, MmqError::InvalidModelFile { .. }), "{e}");
        assert!(e.to_string().contains(says), "expected {says:?} in: {e}");
    }

    #[test]
    fn headers_are_strict_unknown_and_missing_keys_are_refused() {
        let mut m = model();
        m.cfg.loss = crate::model::loss::LossKind::Ns;
        let b = m.to_bytes().unwrap();
        assert!(Model::from_bytes(&edited(&b, 2, |_| {}), "mem").is_ok());
        for (at, key, says) in [
            ("", "extra", "unknown key extra"),
            ("/config", "dimension", "unknown key config.dimension"),
            (
                "/config/tokenizer",
                "buckets",
                "unknown key config.tokenizer.buckets",
            ),
            ("/history/0", "note", "unknown key history[0].note"),
        ] {
            let b = edited(&b, 2, |h| {
                h.pointer_mut(at).unwrap()[key] = json!(1);
            });
            refused(&b, says);
        }
        for (pointer, says) in [
            ("/config/loss", "missing key config.loss"),
            (
                "/config/tokenizer/bucket",
                "missing key config.tokenizer.bucket",
            ),
            ("/config/dim", "missing key config.dim"),
            ("/dense", "missing key dense"),
            ("/history", "missing key history"),
            // serde names a key missing from a struct without defaults itself.
            ("/history/0/best", "bad history: missing field `best`"),
        ] {
            refused(&edited(&b, 2, |h| remove(h, pointer)), says);
        }
        // A version 2 file needs its checksum.
        let (mut header, _) = io::from_bytes(&b, "mem").unwrap();
        header.as_object_mut().unwrap().remove(io::CHECKSUM_KEY);
        let views: Vec<(String, safetensors::tensor::TensorView)> = vec![];
        let mut meta = std::collections::HashMap::new();
        meta.insert("mmq".to_string(), header.to_string());
        let bare = safetensors::serialize(views, Some(meta)).unwrap();
        refused(&bare, "missing key mmq_crc32");
    }

    #[test]
    fn a_version_1_header_is_migrated_and_only_its_later_keys_are_filled() {
        let m = model();
        let b = m.to_bytes().unwrap();
        // A version 1 writer of an earlier release: no keys added during version 1.
        let v1 = edited(&b, 1, |h| {
            for p in [
                "/config/alpha",
                "/config/head",
                "/config/l2",
                "/config/idf",
                "/config/temperature",
                "/config/modality_dropout",
                "/config/tokenizer/split_cjk",
                "/config/tokenizer/lowercase",
                "/config/tokenizer/split_punct",
                "/config/tokenizer/drop_punct",
                "/dense",
                "/history",
            ] {
                remove(h, p);
            }
        });
        let back = Model::from_bytes(&v1, "mem").unwrap();
        assert_eq!(back.input, m.input);
        assert!(back.history.is_empty());
        assert_eq!(back.cfg.tokenizer, m.cfg.tokenizer);
        assert_eq!(back.cfg.temperature, 1.0);
        // Saved again, it is a version 2 file.
        let (h, _) = io::from_bytes(&back.to_bytes().unwrap(), "mem").unwrap();
        assert_eq!(h["format_version"], 2);
        // A key that every version 1 writer wrote is not filled in.
        refused(
            &edited(&b, 1, |h| remove(h, "/config/loss")),
            "missing key config.loss",
        );
        refused(
            &edited(&b, 1, |h| h["config"]["extra"] = json!(0)),
            "unknown key config.extra",
        );
        // Neither version 0 nor 3 is read.
        refused(&edited(&b, 3, |_| {}), "format version 3 is not supported");
    }
}
