//! libFuzzer entry point; the body (and its invariants) is walvfs::fuzzing::capture_sequence.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| walvfs::fuzzing::capture_sequence(data));
