//! Self-describing files: safetensors tensors plus a JSON header stored in the safetensors
//! metadata under the key `mmq`. Writes are atomic (temp file in the same folder, then
//! rename). Anything that is not such a file is an error, never a crash.
use crate::error::{MmqError, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

pub mod quant;

pub const FORMAT: &str = "mmq";
/// The version this mmq writes. Version 2 headers are strict: a reader refuses a
/// header with a key its writer never writes, or without one it always writes (see
/// [`check_keys`]), and the checksum is required. Version 1 (mmq before strict headers)
/// is read through [`migrate_v1`].
pub const FORMAT_VERSION: u64 = 2;
/// The header key of the file's checksum (see [`checksum`]): always the header's last
/// key, `…,"mmq_crc32":"89abcdef"}`. Version 1 files written before it existed have no
/// such key and load unchecked; a version 2 file without it is refused.
pub const CHECKSUM_KEY: &str = "mmq_crc32";
/// The keys [`to_bytes`] puts in every header (the framing, checked by the reader of
/// the framing, not by [`check_keys`]).
const FRAMING_KEYS: [&str; 3] = ["format", "format_version", CHECKSUM_KEY];

/// Whether `MMQ_UNSAFE_SKIP_CHECKS=1` was set when the first file was read: then the
/// checks of a file's content that cost time in proportion to its size (the checksum,
/// the finiteness of the weights) and the strict header keys are skipped. **For
/// benchmarks only** (`benches/load_checks.py` measures what the checks cost with it): a
/// corrupt file then loads silently wrong. Shapes and header numbers are still checked,
/// so nothing can crash either way.
#[doc(hidden)]
pub fn unsafe_skip_checks() -> bool {
    static SKIP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SKIP.get_or_init(|| std::env::var_os("MMQ_UNSAFE_SKIP_CHECKS").is_some_and(|v| v == "1"))
}

/// The strict schema of a header: `stored` (as read) must have exactly the keys of
/// `written` (the header this mmq writes for what was loaded from it), in every object
/// at every depth (arrays are compared element by element), but the framing keys at the
/// top. The first difference is a [`MmqError::InvalidModelFile`] naming the key by its
/// path (`config.tokenizer.bucket`, `history[0].best`): an unknown key (a typo, a file
/// from a newer mmq, an edit) or a missing one (which serde's defaults would otherwise
/// fill silently: an ns model loading as softmax).
///
/// The header's structs keep their serde defaults, because the same structs parse the
/// keyword arguments of the Python API (where every key is optional); it is the file
/// reader that is strict, against what the writer writes.
pub fn check_keys(
    stored: &serde_json::Value,
    written: &serde_json::Value,
    what: &str,
) -> Result<()> {
    check_keys_at(stored, written, "", what)
}

/// [`check_keys`] for the value at `path` of a header (`""`: the whole header).
pub fn check_keys_at(
    stored: &serde_json::Value,
    written: &serde_json::Value,
    path: &str,
    what: &str,
) -> Result<()> {
    use serde_json::Value;
    fn walk(s: &Value, w: &Value, path: &str) -> std::result::Result<(), String> {
        let at = |k: &str| {
            if path.is_empty() {
                k.to_string()
            } else {
                format!("{path}.{k}")
            }
        };
        match (s, w) {
            (Value::Object(s), Value::Object(w)) => {
                let framing = |k: &str| path.is_empty() && FRAMING_KEYS.contains(&k);
                if let Some(k) = s.keys().find(|k| !w.contains_key(*k) && !framing(k)) {
                    return Err(format!(
                        "unknown key {} (not part of format version {FORMAT_VERSION})",
                        at(k)
                    ));
                }
                if let Some(k) = w.keys().find(|k| !s.contains_key(*k)) {
                    return Err(format!(
                        "missing key {} (every file of format version {FORMAT_VERSION} has it)",
                        at(k)
                    ));
                }
                w.iter().try_for_each(|(k, wv)| walk(&s[k], wv, &at(k)))
            }
            (Value::Array(s), Value::Array(w)) => s
                .iter()
                .zip(w)
                .enumerate()
                .try_for_each(|(i, (sv, wv))| walk(sv, wv, &format!("{path}[{i}]"))),
            _ => Ok(()),
        }
    }
    if unsafe_skip_checks() {
        return Ok(());
    }
    walk(stored, written, path).map_err(|reason| MmqError::InvalidModelFile {
        path: what.to_string(),
        reason: format!("bad header: {reason}"),
    })
}

/// Read a version 1 header as version 2: version 1 readers filled a missing key with
/// its default, and version 1 writers of earlier mmq releases did not write the keys
/// added after them. Exactly those keys are filled here, with the values the version 1
/// reader gave them; any other missing key is an error as in version 2. The header is
/// marked version 2 afterwards.
///
/// Keys added during version 1: classifier `config.alpha`, `head`, `l2`, `idf`,
/// `temperature`, `modality_dropout`, and `dense`, `history`; every tokenizer's
/// `split_cjk`, `lowercase`, `split_punct`, `drop_punct`; every quantizer's `tol`,
/// `max_points_per_centroid`, `transform`; a set model's `config.blend_window` and its
/// history's `epochs`, `gain`, `overfit`.
pub fn migrate_v1(header: &mut serde_json::Value) {
    use serde_json::Value;
    fn fill(v: Option<&mut Value>, defaults: &Value, keys: &[&str]) {
        if let Some(Value::Object(o)) = v {
            for &k in keys {
                if !o.contains_key(k) {
                    o.insert(k.to_string(), defaults[k].clone());
                }
            }
        }
    }
    fn each(v: Option<&mut Value>, f: impl Fn(&mut Value)) {
        if let Some(Value::Array(a)) = v {
            a.iter_mut().for_each(f);
        }
    }
    let tok = serde_json::to_value(crate::text::TokenizerConfig::default()).unwrap_or_default();
    let tok_keys = ["split_cjk", "lowercase", "split_punct", "drop_punct"];
    let quant = crate::quant::QuantizerParams::v1_defaults();
    let quant_keys = ["tol", "max_points_per_centroid", "transform"];
    let fill_tokenizer = |h: &mut Value| fill(h.pointer_mut("/config/tokenizer"), &tok, &tok_keys);
    match header.get("kind").and_then(|k| k.as_str()).unwrap_or("") {
        "classifier" => {
            let cfg =
                serde_json::to_value(crate::model::ModelConfig::default()).unwrap_or_default();
            let keys = [
                "alpha",
                "head",
                "l2",
                "idf",
                "temperature",
                "modality_dropout",
            ];
            fill(header.get_mut("config"), &cfg, &keys);
            fill_tokenizer(header);
            let top = serde_json::json!({"dense": [], "history": []});
            fill(Some(header), &top, &["dense", "history"]);
            each(header.get_mut("dense"), |d| {
                fill(d.get_mut("quantizer"), &quant, &quant_keys)
            });
        }
        "fusion_classifier" => fill_tokenizer(header),
        "set_classifier" => {
            let cfg =
                serde_json::to_value(crate::model::sets::SetConfig::default()).unwrap_or_default();
            fill(header.get_mut("config"), &cfg, &["blend_window"]);
            fill_tokenizer(header);
            let epoch = serde_json::json!({"epochs": 1, "gain": [], "overfit": []});
            each(header.get_mut("history"), |e| {
                fill(Some(e), &epoch, &["epochs", "gain", "overfit"])
            });
            each(header.get_mut("quantizers"), |q| {
                fill(q.get_mut("params"), &quant, &quant_keys)
            });
        }
        "quantizer" => fill(header.get_mut("params"), &quant, &quant_keys),
        _ => {}
    }
    if let Some(o) = header.as_object_mut() {
        o.insert("format_version".into(), FORMAT_VERSION.into());
    }
}

/// CRC-32 (IEEE) over the mmq header string without its checksum key (byte for byte as
/// stored) and every tensor, in name order: its name, dtype name, shape (u64 LE) and
/// bytes. Stored as 8 hex digits; a mismatch on load is a
/// [`MmqError::InvalidModelFile`], so flipped bits in the weights or the header never
/// load silently.
pub fn checksum<'a>(
    header: &str,
    tensors: impl IntoIterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
) -> String {
    let mut all: Vec<_> = tensors.into_iter().collect();
    all.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Checksum::new(header);
    for (name, dtype, shape, data) in all {
        h.tensor(name, dtype, shape, data.len());
        h.bytes(data);
    }
    h.hex()
}

/// The running CRC-32 of [`checksum`], fed in the same order by the writer (whole
/// tensors) and by [`from_bytes`] (chunk by chunk, while it copies them).
struct Checksum(crc32fast::Hasher);

impl Checksum {
    fn new(header: &str) -> Self {
        let mut h = crc32fast::Hasher::new();
        h.update(header.as_bytes());
        h.update(&[0]);
        Checksum(h)
    }

    /// What precedes a tensor's bytes: its name, dtype, shape and byte length.
    fn tensor(&mut self, name: &str, dtype: Dtype, shape: &[usize], len: usize) {
        let h = &mut self.0;
        h.update(name.as_bytes());
        h.update(&[0]);
        h.update(format!("{dtype:?}").as_bytes());
        for &d in shape {
            h.update(&(d as u64).to_le_bytes());
        }
        h.update(&(len as u64).to_le_bytes());
    }

    fn bytes(&mut self, data: &[u8]) {
        self.0.update(data)
    }

    fn hex(self) -> String {
        format!("{:08x}", self.0.finalize())
    }
}

/// Bytes of a tensor checksummed and copied per chunk: the chunk the CRC has just read
/// is still in cache for the copy, so the checksum costs a fraction of a second pass
/// over the file (measured: 0.6 ms for a second pass over 5 MB, about as much as the copy).
const CHECK_CHUNK: usize = 32 << 10;

/// A tensor to write or that was read.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    F32(Vec<usize>, Vec<f32>),
    U32(Vec<usize>, Vec<u32>),
    /// Raw bytes (the parts of a composite model: whole mmq files of its members).
    U8(Vec<usize>, Vec<u8>),
}

impl Tensor {
    fn bytes(&self) -> (Dtype, &[usize], Vec<u8>) {
        match self {
            Tensor::F32(s, v) => (
                Dtype::F32,
                s,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            Tensor::U32(s, v) => (
                Dtype::U32,
                s,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            Tensor::U8(s, v) => (Dtype::U8, s, v.clone()),
        }
    }
}

/// Serialize a header (must be a JSON object with a `kind`) and named tensors to bytes.
pub fn to_bytes<S: AsRef<str>>(
    header: &serde_json::Value,
    tensors: &[(S, Tensor)],
) -> Result<Vec<u8>> {
    to_bytes_as_version(header, tensors, FORMAT_VERSION)
}

/// [`to_bytes`] with another format version in the header: for tests of the readers of
/// older versions only (what it writes is not what that version's writer wrote unless
/// the header is).
#[doc(hidden)]
pub fn to_bytes_as_version<S: AsRef<str>>(
    header: &serde_json::Value,
    tensors: &[(S, Tensor)],
    version: u64,
) -> Result<Vec<u8>> {
    let mut h = header.clone();
    let obj = h
        .as_object_mut()
        .ok_or_else(|| MmqError::InvalidInput("file header must be a JSON object".into()))?;
    obj.insert("format".into(), FORMAT.into());
    obj.insert("format_version".into(), version.into());
    let raw: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| {
            let (d, s, b) = t.bytes();
            (n.as_ref().to_string(), d, s.to_vec(), b)
        })
        .collect();
    let views: Vec<(String, TensorView)> = raw
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| MmqError::InvalidInput(format!("tensor {n}: {e}")))
        })
        .collect::<Result<_>>()?;
    obj.remove(CHECKSUM_KEY);
    let body = h.to_string();
    let sum = checksum(
        &body,
        raw.iter()
            .map(|(n, d, s, b)| (n.as_str(), *d, &s[..], &b[..])),
    );
    // `body` is a non-empty object: the checksum goes in as its last key.
    let stored = format!("{},\"{CHECKSUM_KEY}\":\"{sum}\"}}", &body[..body.len() - 1]);
    let mut meta = HashMap::new();
    meta.insert(FORMAT.to_string(), stored);
    safetensors::serialize(views, Some(meta))
        .map_err(|e| MmqError::InvalidInput(format!("cannot serialize: {e}")))
}

/// Parse bytes written by [`to_bytes`]; `what` names the source in errors.
/// The JSON header of an mmq file, checked for format and version.
fn read_header(bytes: &[u8], what: &str) -> Result<serde_json::Value> {
    Ok(read_meta(bytes, what)?.0)
}

/// The parsed header, the header string as stored, and the stored checksum (if any).
fn read_meta(bytes: &[u8], what: &str) -> Result<(serde_json::Value, String, Option<String>)> {
    let bad = |reason: String| MmqError::InvalidModelFile {
        path: what.to_string(),
        reason,
    };
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let raw = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(FORMAT))
        .ok_or_else(|| bad("a safetensors file without an mmq header (not written by mmq)".into()))?
        .clone();
    let mut header: serde_json::Value =
        serde_json::from_str(&raw).map_err(|e| bad(format!("corrupt mmq header: {e}")))?;
    if !header.is_object() {
        return Err(bad("corrupt mmq header: not a JSON object".into()));
    }
    if header.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(bad(format!(
            "bad header: key format is {}, expected \"{FORMAT}\"",
            header.get("format").unwrap_or(&serde_json::Value::Null)
        )));
    }
    // The checksum and the header string it covers (the stored one without its last key).
    let (body, sum) = match header.get(CHECKSUM_KEY) {
        None => (raw, None),
        Some(v) => {
            let sum = v
                .as_str()
                .ok_or_else(|| bad("corrupt mmq header: the checksum is not a string".into()))?
                .to_string();
            let tail = format!(",\"{CHECKSUM_KEY}\":\"{sum}\"}}");
            let Some(head) = raw.strip_suffix(&tail) else {
                return Err(bad(
                    "corrupt mmq header: its checksum is not its last key".into()
                ));
            };
            (format!("{head}}}"), Some(sum))
        }
    };
    let version = header
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    if version == 0 || version > FORMAT_VERSION {
        return Err(bad(format!(
            "format version {version} is not supported by this mmq (reads 1..={FORMAT_VERSION})"
        )));
    }
    if version == 1 {
        migrate_v1(&mut header);
    } else if sum.is_none() {
        return Err(bad(format!(
            "bad header: missing key {CHECKSUM_KEY} (every file of format version {version} has it)"
        )));
    }
    Ok((header, body, sum))
}

pub fn from_bytes(
    bytes: &[u8],
    what: &str,
) -> Result<(serde_json::Value, HashMap<String, Tensor>)> {
    let bad = |reason: String| MmqError::InvalidModelFile {
        path: what.to_string(),
        reason,
    };
    let (header, raw, stored) = read_meta(bytes, what)?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("corrupt tensors: {e}")))?;
    let mut views = st.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let checks = !unsafe_skip_checks();
    // The checksum is computed in the copy's pass, in the writer's order (tensors by
    // name); every f32 tensor of every kind of file holds weights or statistics, never
    // NaN or inf, which the same pass checks. A checksum mismatch is reported before a
    // non-finite tensor (it says more: the file is corrupt, not just its weights).
    let mut sum = stored
        .as_ref()
        .filter(|_| checks)
        .map(|_| Checksum::new(&raw));
    let mut non_finite: Option<&str> = None;
    let mut out = HashMap::new();
    for (name, view) in &views {
        let shape = view.shape().to_vec();
        let data = view.data();
        if let Some(h) = sum.as_mut() {
            h.tensor(name, view.dtype(), &shape, data.len());
        }
        let mut chunks = data.chunks(CHECK_CHUNK).inspect(|c| {
            if let Some(h) = sum.as_mut() {
                h.bytes(c)
            }
        });
        let t = match view.dtype() {
            Dtype::F32 => {
                const EXP: u32 = 0x7f80_0000;
                let mut v = Vec::with_capacity(data.len() / 4);
                let mut nf = 0u32;
                for c in &mut chunks {
                    v.extend(c.chunks_exact(4).map(|w| {
                        let b = u32::from_le_bytes(w.try_into().unwrap());
                        nf |= ((b & EXP) == EXP) as u32;
                        f32::from_bits(b)
                    }));
                }
                if nf != 0 && checks && non_finite.is_none() {
                    non_finite = Some(name);
                }
                Tensor::F32(shape, v)
            }
            Dtype::U32 => {
                let mut v = Vec::with_capacity(data.len() / 4);
                for c in &mut chunks {
                    v.extend(
                        c.chunks_exact(4)
                            .map(|w| u32::from_le_bytes(w.try_into().unwrap())),
                    );
                }
                Tensor::U32(shape, v)
            }
            Dtype::U8 => {
                let mut v = Vec::with_capacity(data.len());
                for c in &mut chunks {
                    v.extend_from_slice(c);
                }
                Tensor::U8(shape, v)
            }
            d => return Err(bad(format!("tensor {name} has unsupported dtype {d:?}"))),
        };
        out.insert(name.clone(), t);
    }
    if let (Some(stored), Some(sum)) = (&stored, sum.map(Checksum::hex)) {
        if *stored != sum {
            return Err(bad(format!(
                "checksum mismatch (stored {stored:?}, computed {sum:?}): the file is corrupt"
            )));
        }
    }
    if let Some(name) = non_finite {
        return Err(bad(format!(
            "tensor {name} holds non-finite values (NaN or infinity)"
        )));
    }
    Ok((header, out))
}

/// A named byte blob of a composite model file.
pub type Part = (String, Vec<u8>);

/// A composite model file (e.g. late fusion): a header (a JSON object with a `kind`) and
/// named byte blobs, each typically a whole mmq file of one member model.
pub fn pack(header: &serde_json::Value, parts: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let tensors: Vec<(String, Tensor)> = parts
        .iter()
        .map(|(n, b)| (n.clone(), Tensor::U8(vec![b.len()], b.clone())))
        .collect();
    to_bytes(header, &tensors)
}

/// The header and byte blobs of a file written by [`pack`]; an error for any other
/// tensor type.
pub fn unpack(bytes: &[u8], what: &str) -> Result<(serde_json::Value, Vec<Part>)> {
    let (header, tensors) = from_bytes(bytes, what)?;
    let mut parts = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        match t {
            Tensor::U8(_, b) => parts.push((name, b)),
            _ => {
                return Err(MmqError::InvalidModelFile {
                    path: what.to_string(),
                    reason: format!("part {name} of a composite model is not a byte blob"),
                })
            }
        }
    }
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((header, parts))
}

/// The configuration of a kind of classifier file: the header's `kind` tag, the noun
/// that names the kind in errors ("expected an mmq {noun}"), and the checks a loaded
/// configuration must pass.
pub trait StoredConfig: serde::de::DeserializeOwned + serde::Serialize {
    const KIND: &'static str;
    const NOUN: &'static str;
    fn check(&self) -> Result<()>;
}

/// What every classifier file holds: the header, the tensors, and the header's `config`
/// (as `C`, checked), `labels` and `label_counts` (at least 2 labels, one count each),
/// after checking that the file is of `C`'s kind.
pub struct ClassifierFile<C> {
    pub header: serde_json::Value,
    pub tensors: HashMap<String, Tensor>,
    pub cfg: C,
    pub labels: Vec<String>,
    pub label_counts: Vec<u64>,
}

pub fn read_classifier<C: StoredConfig>(bytes: &[u8], what: &str) -> Result<ClassifierFile<C>> {
    let bad = |reason: String| MmqError::InvalidModelFile {
        path: what.to_string(),
        reason,
    };
    let (header, tensors) = from_bytes(bytes, what)?;
    if header.get("kind").and_then(|k| k.as_str()) != Some(C::KIND) {
        return Err(bad(format!(
            "expected an mmq {}, found kind {}",
            C::NOUN,
            header["kind"]
        )));
    }
    let cfg: C = serde_json::from_value(header["config"].clone())
        .map_err(|e| bad(format!("bad config: {e}")))?;
    // Strict before anything else reads the configuration: a missing key names itself
    // rather than showing up as a tensor of the wrong shape (the rest of the header is
    // checked by each kind's reader against what it writes).
    let written = serde_json::to_value(&cfg).map_err(|e| bad(format!("bad config: {e}")))?;
    check_keys_at(&header["config"], &written, "config", what)?;
    cfg.check().map_err(|e| bad(e.to_string()))?;
    let labels: Vec<String> = serde_json::from_value(header["labels"].clone())
        .map_err(|e| bad(format!("bad labels: {e}")))?;
    let label_counts: Vec<u64> = serde_json::from_value(header["label_counts"].clone())
        .map_err(|e| bad(format!("bad label counts: {e}")))?;
    if labels.len() < 2 || label_counts.len() != labels.len() {
        return Err(bad(format!(
            "{} labels with {} counts",
            labels.len(),
            label_counts.len()
        )));
    }
    crate::model::loss::check_counts(&label_counts).map_err(|e| bad(e.to_string()))?;
    let mut seen = std::collections::HashSet::with_capacity(labels.len());
    if let Some(dup) = labels.iter().find(|l| !seen.insert(l.as_str())) {
        return Err(bad(format!("label '{dup}' appears twice")));
    }
    Ok(ClassifierFile {
        header,
        tensors,
        cfg,
        labels,
        label_counts,
    })
}

/// The file a save to `path` writes: `path` itself, or, when `path` is a symbolic link
/// (or a chain of them), the file the link finally points to (which may not exist yet).
/// A save writes *through* a link, so the link stays and its target is replaced.
fn save_target(path: &Path) -> Result<std::path::PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&p).map_err(|source| MmqError::Io {
                    path: p.display().to_string(),
                    source,
                })?;
                p = match p.parent() {
                    Some(d) if link.is_relative() => d.join(link),
                    _ => link,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(MmqError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other("too many levels of symbolic links"),
    })
}

/// A temp file that is removed when dropped, unless [`TempFile::keep`] was called: every
/// error path (and a panic) of a save removes its temp file.
struct TempFile(Option<std::path::PathBuf>);

impl TempFile {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A name for a temp file beside `name` that no other call (of this or another thread or
/// process) uses at the same time: `.{name}.tmp-{pid}-{thread}-{counter}-{nanos}`.
fn temp_name(name: &str) -> String {
    use std::hash::{Hash, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut h);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        ".{name}.tmp-{}-{:x}-{}-{nanos:x}",
        std::process::id(),
        h.finish() & 0xffff_ffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The process id in the name of a temp file of a save to `name` (see [`temp_name`]),
/// or `None` when `file` is not such a name.
fn temp_owner(file: &str, name: &str) -> Option<u32> {
    let rest = file.strip_prefix(&format!(".{name}.tmp-"))?;
    let f: Vec<&str> = rest.split('-').collect();
    let dec = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if f.len() != 4 || !(dec(f[0]) && hex(f[1]) && dec(f[2]) && hex(f[3])) {
        return None;
    }
    f[0].parse().ok()
}

/// Whether `dir` is on a file system other machines may write to (NFS, SMB, FUSE...),
/// where a process id in a temp name says nothing about the process that wrote it. From
/// `/proc/self/mounts` (the longest mount point above `dir`); `true` when unknown.
#[cfg(target_os = "linux")]
fn maybe_shared(dir: &Path) -> bool {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return true;
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return true;
    };
    let fs = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let (_, at, fs) = (f.next()?, f.next()?, f.next()?);
            // Spaces etc. in mount points are octal escapes (\040); such a mount point
            // never matches, and a shorter one above it decides.
            dir.starts_with(at).then_some((at.len(), fs))
        })
        .max_by_key(|m| m.0)
        .map(|m| m.1);
    match fs {
        None => true,
        Some(fs) => {
            const SHARED: [&str; 12] = [
                "nfs",
                "nfs4",
                "cifs",
                "smb3",
                "smbfs",
                "9p",
                "ceph",
                "glusterfs",
                "lustre",
                "gpfs",
                "afs",
                "virtiofs",
            ];
            SHARED.contains(&fs) || fs.starts_with("fuse")
        }
    }
}

/// Remove the temp files that saves to `name` in `dir` left when they were killed
/// (SIGKILL, a crash, power loss: no error path ran): those whose process is gone. Run
/// before each save, so a folder holds at most the temp files of live saves. Only on
/// Linux, where `/proc/<pid>` tells a live process; a temp file of this process or of a
/// live one (or of a reused pid) is left alone, and so is every temp file on a file
/// system other machines may share. Best effort: an error leaves the file.
fn remove_stale_temps(dir: &Path, name: &str) {
    #[cfg(target_os = "linux")]
    {
        if !Path::new("/proc/self").exists() || maybe_shared(dir) {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let me = std::process::id();
        for e in entries.flatten() {
            let file = e.file_name();
            let Some(pid) = file.to_str().and_then(|f| temp_owner(f, name)) else {
                continue;
            };
            let regular = e.file_type().map(|t| t.is_file()).unwrap_or(false);
            if pid != me && regular && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (dir, name);
}

/// Write bytes atomically: a temp file beside the target (created with `create_new`,
/// written and fsynced), renamed over the target, then the folder fsynced. Readers see
/// the old file or the new one, never a torn one.
///
/// Only a regular file is ever replaced: a directory, device node, fifo or socket at the
/// target is an error ([`MmqError::Io`] naming the path), and nothing is written. A
/// symbolic link is written *through*: the file it points to is replaced and the link
/// kept. The temp file is removed on every error; the temp files of saves to the same
/// name that were killed are removed by the next one (see [`remove_stale_temps`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let target = save_target(path)?;
    let io_err = |source| MmqError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::metadata(&target) {
        Ok(m) if !m.is_file() => {
            let what = if m.is_dir() {
                "a directory"
            } else {
                "not a regular file (a device, fifo or socket)"
            };
            return Err(io_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{} is {what}; mmq saves only replace regular files",
                    target.display()
                ),
            )));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    remove_stale_temps(&dir, &name);
    let tmp_path = dir.join(temp_name(&name));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp_path)
        .map_err(io_err)?;
    let tmp = TempFile(Some(tmp_path.clone()));
    f.write_all(bytes).map_err(io_err)?;
    f.sync_all().map_err(io_err)?;
    drop(f);
    std::fs::rename(&tmp_path, &target).map_err(io_err)?;
    tmp.keep();
    // Make the rename itself durable; best effort (some file systems refuse to fsync a
    // folder, and the data is already in place).
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| MmqError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The number of elements of a tensor of shape `dims` (header numbers), by checked
/// multiplication: an overflow is a [`MmqError::InvalidModelFile`].
pub fn elements(dims: &[usize], name: &str, what: &str) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| MmqError::InvalidModelFile {
            path: what.into(),
            reason: format!("tensor {name}: the header implies a shape {dims:?} that overflows"),
        })
}

/// Take a tensor out of a read map, checking its type and that it has exactly the
/// element count of the shape `dims` the header implies (computed without overflow). Its
/// values are finite: [`from_bytes`] refuses non-finite f32 tensors.
pub fn take_f32(
    t: &mut HashMap<String, Tensor>,
    name: &str,
    dims: &[usize],
    what: &str,
) -> Result<Vec<f32>> {
    let len = elements(dims, name, what)?;
    match t.remove(name) {
        // Finite: [`from_bytes`] refuses a file with a non-finite f32 tensor.
        Some(Tensor::F32(_, v)) if v.len() == len => Ok(v),
        Some(Tensor::F32(_, v)) => Err(MmqError::InvalidModelFile {
            path: what.into(),
            reason: format!("tensor {name} has {} values, expected {len}", v.len()),
        }),
        _ => Err(MmqError::InvalidModelFile {
            path: what.into(),
            reason: format!("missing f32 tensor {name}"),
        }),
    }
}

pub fn take_u32(t: &mut HashMap<String, Tensor>, name: &str, what: &str) -> Result<Vec<u32>> {
    match t.remove(name) {
        Some(Tensor::U32(_, v)) => Ok(v),
        _ => Err(MmqError::InvalidModelFile {
            path: what.into(),
            reason: format!("missing u32 tensor {name}"),
        }),
    }
}

/// The `kind` recorded in an mmq file's header ("classifier", "quantizer", ...).
pub fn peek_kind(path: &Path) -> Result<String> {
    let what = path.display().to_string();
    // A fastText model file (.bin / .ftz) is imported as a classifier.
    let mut head = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open(path) {
        use std::io::Read;
        if f.read_exact(&mut head).is_ok() && crate::model::fasttext::is_fasttext(&head) {
            return Ok("classifier".into());
        }
    }
    let header = read_header(&read(path)?, &what)?;
    header
        .get("kind")
        .and_then(|k| k.as_str())
        .map(str::to_string)
        .ok_or_else(|| MmqError::InvalidModelFile {
            path: what,
            reason: "header has no kind".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_foreign_bytes() {
        let h = serde_json::json!({"kind": "test"});
        let b = to_bytes(
            &h,
            &[
                ("a", Tensor::F32(vec![2], vec![1.0, 2.0])),
                ("b", Tensor::U32(vec![1], vec![7])),
            ],
        )
        .unwrap();
        let (hh, mut t) = from_bytes(&b, "mem").unwrap();
        assert!(take_f32(&mut t.clone(), "a", &[usize::MAX, 3], "mem").is_err());
        assert!(take_f32(&mut t.clone(), "a", &[1 << 62, 4], "mem").is_err());
        assert!(take_f32(&mut t.clone(), "a", &[3], "mem").is_err());
        assert!(hh.get(CHECKSUM_KEY).is_some());
        assert_eq!(hh["kind"], "test");
        assert_eq!(take_f32(&mut t, "a", &[2], "mem").unwrap(), vec![1.0, 2.0]);
        assert_eq!(take_u32(&mut t, "b", "mem").unwrap(), vec![7]);
        assert!(from_bytes(b"hello world, not a model", "x").is_err());
        assert!(from_bytes(&b[..b.len() / 2], "x").is_err());
        assert!(from_bytes(&[], "x").is_err());
        // A flipped bit in a tensor is caught by the checksum.
        let mut flipped = b.clone();
        let at = flipped.len() - 3;
        flipped[at] ^= 0x10;
        let e = from_bytes(&flipped, "x").unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        // So is a changed header value.
        let mut changed = b.clone();
        let at = changed.windows(4).position(|w| w == b"test").unwrap();
        changed[at + 3] = b'T';
        let e = from_bytes(&changed, "x").unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        // The same bytes every time (no map order in the file).
        assert_eq!(
            b,
            to_bytes(
                &hh,
                &[
                    ("a", Tensor::F32(vec![2], vec![1.0, 2.0])),
                    ("b", Tensor::U32(vec![1], vec![7]))
                ]
            )
            .unwrap()
        );
        // Non-finite weights are refused.
        for x in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let nan = to_bytes(&h, &[("a", Tensor::F32(vec![2], vec![1.0, x]))]).unwrap();
            let e = from_bytes(&nan, "mem").unwrap_err();
            assert!(e.to_string().contains("tensor a holds non-finite"), "{e}");
        }
        let big = to_bytes(
            &h,
            &[(
                "a",
                Tensor::F32(vec![2], vec![f32::MAX, -f32::MIN_POSITIVE]),
            )],
        );
        assert!(from_bytes(&big.unwrap(), "mem").is_ok());
        // A valid safetensors file without our header.
        let v = TensorView::new(Dtype::F32, vec![1], &[0u8; 4]).unwrap();
        let foreign = safetensors::serialize(vec![("x", v)], None).unwrap();
        assert!(from_bytes(&foreign, "x").is_err());
    }

    /// Every number of a header reads back as the f64 that was written: a load → save →
    /// load round trip changes nothing (found by the `container` fuzz target: serde_json's
    /// default float parser is best-effort and read `1.1000000014901161` one ulp off).
    #[test]
    fn header_floats_round_trip_exactly() {
        for text in [
            "1.1000000014901161",
            "0.30000000000000004",
            "2.2250738585072014e-308",
        ] {
            let h: serde_json::Value =
                serde_json::from_str(&format!("{{\"kind\":\"x\",\"lr\":{text}}}")).unwrap();
            let want: f64 = text.parse().unwrap();
            assert_eq!(h["lr"].as_f64(), Some(want), "{text}");
            let bytes = to_bytes(&h, &[("a", Tensor::F32(vec![1], vec![0.0]))]).unwrap();
            let (back, _) = from_bytes(&bytes, "mem").unwrap();
            assert_eq!(back["lr"].as_f64(), Some(want), "{text}");
        }
    }

    fn scratch(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mmq-io-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn leftovers(d: &Path) -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn write_atomic_refuses_what_is_not_a_regular_file() {
        let d = scratch("refuse");
        let sub = d.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let e = write_atomic(&sub, b"x").unwrap_err();
        assert!(matches!(e, MmqError::Io { .. }), "{e}");
        assert!(e.to_string().contains("directory"), "{e}");
        assert!(sub.is_dir());
        let e = write_atomic(Path::new("/dev/null"), b"x").unwrap_err();
        assert!(e.to_string().contains("/dev/null"), "{e}");
        // A parent that is a file: the temp file cannot be created, nothing is left.
        let f = d.join("file");
        std::fs::write(&f, b"keep").unwrap();
        assert!(write_atomic(&f.join("m.mmq"), b"x").is_err());
        assert_eq!(std::fs::read(&f).unwrap(), b"keep");
        assert!(leftovers(&d).is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn temp_names_are_recognised_exactly() {
        let t = temp_name("m.mmq");
        assert_eq!(temp_owner(&t, "m.mmq"), Some(std::process::id()));
        assert_eq!(temp_owner(&t, "m"), None);
        assert_eq!(temp_owner(".m.mmq.tmp-12-ab-3-ff", "m.mmq"), Some(12));
        for other in [
            "m.mmq",
            ".m.mmq.tmp-",
            ".m.mmq.tmp-12-ab-3",
            ".m.mmq.tmp-12-ab-3-ff-1",
            ".m.mmq.tmp-x-ab-3-ff",
            ".m.mmq.tmp-12-zz-3-ff",
            ".m.mmq.tmp-x.tmp-12-ab-3-ff",
        ] {
            assert_eq!(temp_owner(other, "m.mmq"), None, "{other}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_save_removes_the_temp_files_of_dead_saves_only() {
        let d = scratch("stale");
        if maybe_shared(&d) {
            return; // nothing is removed there, by design
        }
        // A process that has exited: its pid is not live (unless reused at once).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let files = [
            (format!(".m.mmq.tmp-{dead}-ab-0-ff"), false),
            (format!(".m.mmq.tmp-{}-ab-0-ff", live.id()), true),
            (format!(".m.mmq.tmp-{}-ab-0-ff", std::process::id()), true),
            (format!(".other.mmq.tmp-{dead}-ab-0-ff"), true),
            (format!(".m.mmq.tmp-{dead}-ab-0"), true),
        ];
        for (f, _) in &files {
            std::fs::write(d.join(f), b"partial").unwrap();
        }
        write_atomic(&d.join("m.mmq"), b"new").unwrap();
        live.kill().unwrap();
        live.wait().unwrap();
        for (f, kept) in &files {
            assert_eq!(d.join(f).exists(), *kept, "{f}");
        }
        assert_eq!(std::fs::read(d.join("m.mmq")).unwrap(), b"new");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[cfg(unix)]
    #[test]
    fn write_atomic_writes_through_symlinks_and_in_parallel() {
        let d = scratch("link");
        let target = d.join("target.mmq");
        std::fs::write(&target, b"old").unwrap();
        let link = d.join("link.mmq");
        std::os::unix::fs::symlink("target.mmq", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        let p = d.join("same.mmq");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(p, &[i; 1000]).unwrap();
                    }
                });
            }
        });
        let b = std::fs::read(&p).unwrap();
        assert!(b.len() == 1000 && b.iter().all(|&x| x == b[0]));
        assert!(leftovers(&d).is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }
}
