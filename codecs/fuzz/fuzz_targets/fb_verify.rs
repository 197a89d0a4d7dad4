//! Slot for the FlatBuffers verifier target: feeds arbitrary bytes to the verified readers of
//! the normalized schema. Until it is filled in, it exercises nothing.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = data;
});
