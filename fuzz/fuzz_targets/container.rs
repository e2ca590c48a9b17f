//! The file container under every mmq file: `io::from_bytes` (safetensors framing, mmq
//! header, format version, checksum) and `io::unpack` (composite files: late and concat
//! fusion). What reads must write back to the same header and tensors; the members of a
//! composite file go through every model loader.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mmq_core::io::{self, Tensor, CHECKSUM_KEY};

/// The tensors as (name, dtype tag, shape, bytes), in name order (f32 by bits: NaN too).
fn canon(t: &std::collections::HashMap<String, Tensor>) -> Vec<(String, u8, Vec<usize>, Vec<u8>)> {
    let mut v: Vec<_> = t
        .iter()
        .map(|(n, t)| match t {
            Tensor::F32(s, x) => (
                n.clone(),
                0,
                s.clone(),
                x.iter().flat_map(|f| f.to_le_bytes()).collect(),
            ),
            Tensor::U32(s, x) => (
                n.clone(),
                1,
                s.clone(),
                x.iter().flat_map(|f| f.to_le_bytes()).collect(),
            ),
            Tensor::U8(s, x) => (n.clone(), 2, s.clone(), x.clone()),
        })
        .collect();
    v.sort();
    v
}

fn check(data: &[u8]) -> Result<(), mmq_core::MmqError> {
    let (header, tensors) = io::from_bytes(data, "fuzz").map_err(mmq_fuzz::file_error)?;
    assert!(header.is_object());
    assert_eq!(header["format_version"], io::FORMAT_VERSION);
    // Write back and read again: the same header (but the checksum) and tensors.
    let mut list: Vec<(String, Tensor)> = tensors.clone().into_iter().collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    let again = io::to_bytes(&header, &list).expect("what was read can be written");
    let (h2, t2) = io::from_bytes(&again, "again").expect("what was written reads");
    let strip = |h: &serde_json::Value| {
        let mut h = h.clone();
        h.as_object_mut().unwrap().remove(CHECKSUM_KEY);
        h.as_object_mut().unwrap().remove("format");
        h
    };
    assert_eq!(strip(&header), strip(&h2));
    assert_eq!(h2["format"], io::FORMAT);
    assert_eq!(canon(&tensors), canon(&t2));
    assert!(
        again == io::to_bytes(&h2, &list).unwrap(),
        "write/read/write is not stable"
    );
    // A composite file: its parts round-trip through pack, and each part is tried as
    // every kind of model file.
    if let Ok((h, parts)) = io::unpack(data, "fuzz") {
        let packed = io::pack(&h, &parts).expect("unpacked parts pack");
        let (h3, p3) = io::unpack(&packed, "again").expect("packed parts unpack");
        assert_eq!(strip(&h), strip(&h3));
        assert_eq!(parts, p3);
        for (_, part) in &parts {
            // Each loader reads the framing first and refuses another kind right after,
            // so a part goes through the loader of its kind only (the others would stop
            // at the kind check); a part whose framing fails, or of no loader's kind,
            // through one of them. (Trying all four made this target 4x slower.)
            let kind = io::from_bytes(part, "part")
                .ok()
                .and_then(|(h, _)| h["kind"].as_str().map(str::to_string));
            let _ = match kind.as_deref() {
                Some("fusion_classifier") => mmq_fuzz::fusion_round_trip(part),
                Some("set_classifier") => mmq_fuzz::set_round_trip(part),
                Some("quantizer") => mmq_fuzz::quantizer_round_trip(part),
                _ => mmq_fuzz::model_round_trip(part),
            };
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    mmq_fuzz::both(data, check);
});
