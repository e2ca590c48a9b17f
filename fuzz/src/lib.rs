//! Shared pieces of the fuzz targets: re-signing a mutated file (so that mutations of the
//! header values and the weights get past the checksum and reach the validation of what
//! they say), and the properties every model that loads must have.
//!
//! Each file target runs its loader twice per input: on the bytes as given (the
//! safetensors framing, the header parsing and the checksum check itself), then on the
//! same bytes with their checksum recomputed ([`resign`]), so that the validation behind
//! the checksum is fuzzed too. Whatever loads must predict without panicking, give
//! probabilities of the right shape, and survive save → load → save byte for byte.
use mmq_core::io::{self, CHECKSUM_KEY};
use mmq_core::model::fusion::FusionModel;
use mmq_core::model::sets::{ModalityKind, ModalityRows, SetModel};
use mmq_core::model::Model;
use mmq_core::quant::Quantizer;
use mmq_core::text::Tokenizer;
use mmq_core::MmqError;

/// The text every loaded model predicts.
pub const TEXT: &str = "great phone, love it! 東京の天気 DON'T buy 😀 ok";

/// `data` with the checksum in its mmq header recomputed over its header and tensors (as
/// [`io::to_bytes`] would have written it), or `None` when the bytes are not a
/// safetensors file with a checksummed mmq header (the loader rejects those anyway).
pub fn resign(data: &[u8]) -> Option<Vec<u8>> {
    let n = usize::try_from(u64::from_le_bytes(data.get(..8)?.try_into().ok()?)).ok()?;
    let head_end = n.checked_add(8)?;
    let mut outer: serde_json::Value = serde_json::from_slice(data.get(8..head_end)?).ok()?;
    let raw = outer
        .get("__metadata__")?
        .get(io::FORMAT)?
        .as_str()?
        .to_string();
    // The stored header is `{…,"mmq_crc32":"…"}`; the checksum covers `{…}`.
    let key = format!(",\"{CHECKSUM_KEY}\":\"");
    let at = raw.rfind(&key)?;
    if !raw[at + key.len()..].ends_with("\"}") {
        return None;
    }
    let head = &raw[..at];
    let body = format!("{head}}}");
    let st = safetensors::SafeTensors::deserialize(data).ok()?;
    let views = st.tensors();
    let sum = io::checksum(
        &body,
        views
            .iter()
            .map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())),
    );
    let stored = format!("{head}{key}{sum}\"}}");
    outer["__metadata__"][io::FORMAT] = serde_json::Value::String(stored);
    let header = serde_json::to_vec(&outer).ok()?;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&data[head_end..]);
    Some(out)
}

/// Run `load_and_check` on `data`, then on `data` re-signed. A re-signed file must never
/// fail its checksum.
pub fn both(data: &[u8], load_and_check: impl Fn(&[u8]) -> Result<(), MmqError>) {
    let _ = load_and_check(data);
    if let Some(signed) = resign(data) {
        if let Err(e) = load_and_check(&signed) {
            let msg = e.to_string();
            assert!(
                !msg.contains("checksum mismatch"),
                "a re-signed file fails its checksum: {msg}"
            );
        }
    }
}

/// Every error of a loader is a model-file error (what the bindings map to
/// `ModelFileError`), never another kind.
pub fn file_error(e: MmqError) -> MmqError {
    assert!(
        matches!(e, MmqError::InvalidModelFile { .. }),
        "a loader returned an error that is not InvalidModelFile: {e:?}"
    );
    e
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The tokenizer of a loaded model: its config was validated on load.
fn tokenizer(cfg: &mmq_core::text::TokenizerConfig) -> Tokenizer {
    let t = Tokenizer::new(cfg.clone()).expect("a loaded model's tokenizer config is valid");
    let ids = t.tokenize(TEXT);
    assert!(ids.iter().all(|&i| i < cfg.bucket), "a token id >= bucket");
    t
}

/// Codes of one vector and their token ids (`j·k + c`), checked against `q`'s shape.
fn encode_one(q: &Quantizer, value: f32) -> (Vec<u16>, Vec<u32>) {
    let x = vec![value; q.d()];
    let codes = q.encode(&x, 1).expect("a loaded quantizer encodes");
    assert_eq!(codes.len(), q.m());
    assert!(codes.iter().all(|&c| (c as usize) < q.k()), "a code >= k");
    let ids = q
        .token_ids(&codes)
        .expect("codes of this quantizer have token ids");
    assert!(ids.iter().all(|&i| (i as usize) < q.m() * q.k()));
    (codes, ids)
}

/// What every loaded classifier must do.
pub fn check_model(m: &Model) -> Vec<u32> {
    let nl = m.n_labels();
    let tok = tokenizer(&m.cfg.tokenizer);
    let mut tokens = tok.tokenize(TEXT);
    for d in &m.dense {
        let (codes, _) = encode_one(&d.quantizer, 0.25);
        for (j, &c) in codes.iter().enumerate() {
            let id = d.token(j, c);
            assert!(
                id >= m.cfg.tokenizer.bucket,
                "a dense token inside the text buckets"
            );
            assert_eq!(d.code_of(id), Some((j, c as usize)));
            tokens.push(id);
        }
    }
    tokens.extend(m.index.ids.iter().take(16));
    let mut hidden = vec![0.0; m.width()];
    let mut buf = Vec::new();
    m.hidden(&tokens, None, &mut hidden);
    // hs ranks by a tree search that leaves `buf` alone; every loss ranks each label once.
    let ranked = m.predict_hidden(&hidden, nl, 0.0, &mut buf);
    assert!(ranked.len() <= nl && ranked.iter().all(|&(l, _)| (l as usize) < nl));
    let mut seen = vec![false; nl];
    assert!(
        ranked
            .iter()
            .all(|&(l, _)| !std::mem::replace(&mut seen[l as usize], true)),
        "a label ranked twice"
    );
    let mut all = Vec::new();
    m.probs(&hidden, &mut all);
    assert_eq!(all.len(), nl, "one probability per label");
    let weights = vec![0.5; tokens.len()];
    m.hidden(&tokens, Some(&weights), &mut hidden);
    m.predict_hidden(&hidden, 1, f32::NAN, &mut buf);
    m.hidden(&[], None, &mut hidden);
    let mut probs = Vec::new();
    m.probs(&hidden, &mut probs);
    m.hidden(&tokens, None, &mut hidden);
    m.probs(&hidden, &mut probs);
    bits(&probs)
}

/// Load a classifier; check it, and that save → load gives the same bytes and the same
/// probabilities.
pub fn model_round_trip(data: &[u8]) -> Result<(), MmqError> {
    let m = Model::from_bytes(data, "fuzz").map_err(file_error)?;
    let p = check_model(&m);
    let b1 = m.to_bytes().expect("a loaded model saves");
    let m2 = Model::from_bytes(&b1, "again").expect("a saved model loads");
    assert_eq!(
        p,
        check_model(&m2),
        "a save/load round trip changed predictions"
    );
    assert!(b1 == m2.to_bytes().unwrap(), "save/load/save is not stable");
    Ok(())
}

pub fn check_fusion(m: &FusionModel) -> Vec<u32> {
    let nl = m.n_labels();
    let tok = tokenizer(&m.cfg.tokenizer);
    let mut tokens = tok.tokenize(TEXT);
    tokens.extend(m.index.ids.iter().take(16));
    let dense = vec![0.5f32; m.dense_dim];
    m.check_dense(&dense)
        .expect("a finite vector of the model's length");
    assert!(m.check_dense(&dense[1..]).is_err());
    let mut out = Vec::new();
    for d in [None, Some(&dense[..])] {
        let ranked = m.predict(&tokens, d, nl, 0.0);
        assert!(ranked.len() <= nl && ranked.iter().all(|&(l, _)| (l as usize) < nl));
    }
    m.probs(&tokens, Some(&dense), &mut out);
    assert_eq!(out.len(), nl, "one probability per label");
    bits(&out)
}

pub fn fusion_round_trip(data: &[u8]) -> Result<(), MmqError> {
    let m = FusionModel::from_bytes(data, "fuzz").map_err(file_error)?;
    let p = check_fusion(&m);
    let b1 = m.to_bytes().expect("a loaded model saves");
    let m2 = FusionModel::from_bytes(&b1, "again").expect("a saved model loads");
    assert_eq!(
        p,
        check_fusion(&m2),
        "a save/load round trip changed predictions"
    );
    assert!(b1 == m2.to_bytes().unwrap(), "save/load/save is not stable");
    Ok(())
}

pub fn check_set(m: &SetModel) -> Vec<u32> {
    let nl = m.n_labels();
    let tok = tokenizer(&m.cfg.tokenizer);
    let ids: Vec<Vec<u32>> = m
        .cfg
        .modalities
        .iter()
        .enumerate()
        .map(|(k, md)| {
            let mut v: Vec<u32> = m.indexes[k].ids.iter().take(8).copied().collect();
            match (md.kind, &m.quantizers[k]) {
                (ModalityKind::Text, _) => v.extend(tok.tokenize(TEXT)),
                (ModalityKind::Dense, Some(q)) => v.extend(encode_one(q, 0.5).1),
                _ => v.push(12345),
            }
            v
        })
        .collect();
    let offsets: Vec<[usize; 2]> = ids.iter().map(|v| [0, v.len()]).collect();
    let rows: Vec<ModalityRows> = ids
        .iter()
        .zip(&offsets)
        .map(|(v, o)| ModalityRows { offsets: o, ids: v })
        .collect();
    let probs = m.probs_batch(&rows).expect("one row of every modality");
    assert_eq!(probs.len(), 1);
    assert_eq!(probs[0].len(), nl, "one probability per label");
    let ranked = m.predict_batch(&rows, nl, 0.0).unwrap();
    assert!(ranked[0].iter().all(|&(l, _)| (l as usize) < nl));
    assert!(
        m.probs_batch(&rows[1..]).is_err(),
        "a missing modality is an error"
    );
    let raw: Vec<&[u32]> = ids.iter().map(|v| &v[..]).collect();
    assert!(m.explain_modalities(&raw, nl).is_err());
    if m.cfg.loss == mmq_core::model::loss::LossKind::Hs {
        // hs has no output row per label: explaining is refused, never a panic.
        assert!(m.explain_modalities(&raw, nl - 1).is_err());
        return bits(&probs[0]);
    }
    let (shares, _) = m
        .explain_modalities(&raw, nl - 1)
        .expect("a label in range");
    assert_eq!(shares.len(), raw.len());
    // A row where every modality is missing.
    let empty: Vec<&[u32]> = ids.iter().map(|_| &[][..]).collect();
    m.explain_modalities(&empty, 0).unwrap();
    bits(&probs[0])
}

pub fn set_round_trip(data: &[u8]) -> Result<(), MmqError> {
    let m = SetModel::from_bytes(data, "fuzz").map_err(file_error)?;
    let p = check_set(&m);
    let b1 = m.to_bytes().expect("a loaded model saves");
    let m2 = SetModel::from_bytes(&b1, "again").expect("a saved model loads");
    assert_eq!(
        p,
        check_set(&m2),
        "a save/load round trip changed predictions"
    );
    assert!(b1 == m2.to_bytes().unwrap(), "save/load/save is not stable");
    Ok(())
}

pub fn check_quantizer(q: &Quantizer) -> Vec<u32> {
    let (codes, _) = encode_one(q, 0.5);
    let x: Vec<f32> = (0..2 * q.d()).map(|i| (i % 7) as f32 - 3.0).collect();
    let codes2 = q.encode(&x, 2).expect("two rows encode");
    let dec = q
        .decode(&codes2, 2)
        .expect("codes of this quantizer decode");
    assert_eq!(dec.len(), 2 * q.d());
    q.quantization_error(&x, 2).expect("two rows have an error");
    assert!(q.encode(&x[1..], 2).is_err(), "a short input is an error");
    let bad = vec![q.k() as u16; q.m()];
    if q.k() <= u16::MAX as usize {
        assert!(q.decode(&bad, 1).is_err(), "a code >= k is an error");
    }
    let mut v = bits(&q.decode(&codes, 1).unwrap());
    v.extend(codes.iter().map(|&c| c as u32));
    v
}

pub fn quantizer_round_trip(data: &[u8]) -> Result<(), MmqError> {
    use mmq_core::io::quant::{quantizer_from_bytes, quantizer_to_bytes};
    let q = quantizer_from_bytes(data, "fuzz").map_err(file_error)?;
    let p = check_quantizer(&q);
    let b1 = quantizer_to_bytes(&q).expect("a loaded quantizer saves");
    let q2 = quantizer_from_bytes(&b1, "again").expect("a saved quantizer loads");
    assert_eq!(
        p,
        check_quantizer(&q2),
        "a save/load round trip changed codes"
    );
    assert_eq!(q.params(), q2.params());
    assert!(
        b1 == quantizer_to_bytes(&q2).unwrap(),
        "save/load/save is not stable"
    );
    Ok(())
}
