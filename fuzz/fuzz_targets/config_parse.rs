//! libFuzzer entry point; the body (and its invariants) is walvfs::fuzzing::config_parse.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| walvfs::fuzzing::config_parse(data));
