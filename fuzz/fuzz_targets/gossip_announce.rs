#![no_main]
// Body in coalition::fuzzing::gossip_announce, replayed by the stable test fuzz_regressions.
libfuzzer_sys::fuzz_target!(|data: &[u8]| coalition::fuzzing::gossip_announce(data));
