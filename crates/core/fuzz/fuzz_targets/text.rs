#![no_main]
//! Fuzz target `text`: see `layerfold_core::fuzzing::Fixture::text`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Any error is a correct answer to bad input; only a panic or an abort is a finding.
    let _ = layerfold_core_fuzz::fixture("text").text(data);
});
