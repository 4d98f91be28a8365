#![no_main]
// Body in coalition::fuzzing::config_toml, replayed by the stable test fuzz_regressions.
libfuzzer_sys::fuzz_target!(|data: &[u8]| coalition::fuzzing::config_toml(data));
