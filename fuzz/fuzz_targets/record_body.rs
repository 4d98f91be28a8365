#![no_main]
// Body in coalition::fuzzing::record_body, replayed by the stable test fuzz_regressions.
libfuzzer_sys::fuzz_target!(|data: &[u8]| coalition::fuzzing::record_body(data));
