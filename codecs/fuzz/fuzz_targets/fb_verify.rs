//! The verifier path of the normalized schema on arbitrary bytes (see `fb_verify` in
//! `src/entries.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mdbus_codecs_fuzz::fb_verify(data));
