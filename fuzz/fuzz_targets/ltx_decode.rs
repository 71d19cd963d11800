//! libFuzzer entry point; the body (and its invariants) is walvfs::fuzzing::ltx_decode.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| walvfs::fuzzing::ltx_decode(data));
