//! The quantizer file (io::quant::quantizer_from_bytes): PQ and RSPQ. What loads must predict (or encode) without panicking and survive
//! save → load → save unchanged; see `mmq_fuzz::quantizer_round_trip`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mmq_fuzz::both(data, mmq_fuzz::quantizer_round_trip);
});
