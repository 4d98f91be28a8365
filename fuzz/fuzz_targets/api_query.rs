#![no_main]
// Body in coalition::fuzzing::api_query, replayed by the stable test fuzz_regressions.
libfuzzer_sys::fuzz_target!(|data: &[u8]| coalition::fuzzing::api_query(data));
