#![no_main]
//! Fuzz target `safetensors`: see `layerfold_core::fuzzing::Fixture::safetensors`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Any error is a correct answer to bad input; only a panic or an abort is a finding.
    let _ = layerfold_core_fuzz::fixture("safetensors").safetensors(data);
});
