//! The set-model file (SetModel::from_bytes): bag, deepset, attention, G-Blend, quantizers. What loads must predict (or encode) without panicking and survive
//! save → load → save unchanged; see `mmq_fuzz::set_round_trip`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mmq_fuzz::both(data, mmq_fuzz::set_round_trip);
});
