//! JSON configuration parsing and validate(): the model, fusion, set and tokenizer
//! configs and quantizer parameters, as a file header or the bindings' `config_json`
//! give them. A config that validates must serialize and parse back to itself (and
//! validate again); a valid tokenizer config builds a tokenizer; quantizer parameters
//! that pass `Quantizer::from_parts` (with zero centroids) give a quantizer that encodes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mmq_core::model::fusion::FusionConfig;
use mmq_core::model::sets::SetConfig;
use mmq_core::model::ModelConfig;
use mmq_core::quant::{Quantizer, QuantizerParams};
use mmq_core::text::{Tokenizer, TokenizerConfig};
use serde::{de::DeserializeOwned, Serialize};

/// Parse; if valid, check the serialize → parse round trip. Returns the value if valid.
fn round_trip<T: Serialize + DeserializeOwned>(
    data: &[u8],
    validate: impl Fn(&T) -> mmq_core::Result<()>,
) -> Option<T> {
    let v: T = serde_json::from_slice(data).ok()?;
    validate(&v).ok()?;
    let s = serde_json::to_string(&v).expect("a valid config serializes");
    let back: T = serde_json::from_str(&s).expect("a serialized config parses");
    validate(&back).expect("a round-tripped valid config is valid");
    assert_eq!(
        s,
        serde_json::to_string(&back).unwrap(),
        "config round trip"
    );
    Some(v)
}

fuzz_target!(|data: &[u8]| {
    if let Some(c) = round_trip::<ModelConfig>(data, |c| c.validate()) {
        Tokenizer::new(c.tokenizer).expect("a valid model config has a valid tokenizer");
    }
    if let Some(c) = round_trip::<FusionConfig>(data, |c| c.validate()) {
        assert!(c.rank() >= 1);
        Tokenizer::new(c.tokenizer).expect("a valid fusion config has a valid tokenizer");
    }
    if let Some(c) = round_trip::<SetConfig>(data, |c| c.validate()) {
        assert!(!c.modalities.is_empty());
        Tokenizer::new(c.tokenizer).expect("a valid set config has a valid tokenizer");
    }
    if let Some(c) = round_trip::<TokenizerConfig>(data, |c| c.validate()) {
        let t = Tokenizer::new(c.clone()).expect("a valid tokenizer config builds");
        assert!(t.tokenize("a b 東京 c!").iter().all(|&i| i < c.bucket));
    }
    if let Ok(p) = serde_json::from_slice::<QuantizerParams>(data) {
        // Bound the arrays this harness allocates (a file's tensors bound them on load).
        let total = p
            .subspaces
            .iter()
            .try_fold(0usize, |a, s| s.len().checked_mul(p.k)?.checked_add(a));
        if let Some(total) = total.filter(|&t| t <= 1 << 20 && p.d <= 1 << 16) {
            if let Ok(q) = Quantizer::from_parts(p.clone(), vec![0.0; total], vec![0.0; p.d]) {
                assert_eq!(q.params(), &p);
                let codes = q.encode(&vec![1.0; q.d()], 1).expect("encodes");
                assert!(codes.iter().all(|&c| (c as usize) < q.k()));
                q.decode(&codes, 1).expect("decodes");
            }
        }
    }
});
