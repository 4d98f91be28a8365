#![no_main]
// Body in coalition::fuzzing::sealed_open, replayed by the stable test fuzz_regressions.
libfuzzer_sys::fuzz_target!(|data: &[u8]| coalition::fuzzing::sealed_open(data));
