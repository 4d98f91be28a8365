#![no_main]
// Body in coalition::fuzzing::sync_response, replayed by the stable test fuzz_regressions.
libfuzzer_sys::fuzz_target!(|data: &[u8]| coalition::fuzzing::sync_response(data));
