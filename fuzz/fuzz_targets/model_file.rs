//! The classifier file (Model::from_bytes): text, dense (discrete fusion) and linear-head models. What loads must predict (or encode) without panicking and survive
//! save → load → save unchanged; see `mmq_fuzz::model_round_trip`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mmq_fuzz::both(data, mmq_fuzz::model_round_trip);
});
