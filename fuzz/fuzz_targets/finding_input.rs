#![no_main]
// Body in coalition::fuzzing::finding_input, replayed by the stable test fuzz_regressions.
libfuzzer_sys::fuzz_target!(|data: &[u8]| coalition::fuzzing::finding_input(data));
