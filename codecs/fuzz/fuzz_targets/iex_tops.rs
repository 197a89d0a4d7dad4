#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mdbus_codecs_fuzz::iex_tops(data));
