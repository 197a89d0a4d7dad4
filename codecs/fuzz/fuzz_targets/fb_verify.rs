//! The verifier path of the normalized schema on arbitrary bytes: `fb::read_verified` must
//! reject or accept without panicking, and whatever it accepts must be readable in full (every
//! field of the header and of the event, through the generated `Debug`, which walks them all)
//! and read the same through the unverified `read_trusted`.
#![no_main]

use core::fmt::{self, Write};

use mdbus_codecs::fb;

/// Compares what two renderings write without storing either (no allocation per input):
/// hashes the text with FNV-1a.
struct Fnv(u64);

impl Write for Fnv {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Ok(())
    }
}

fn render(env: &fb::Envelope<'_>) -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    write!(h, "{env:?}").expect("hashing never fails");
    h.0
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(env) = fb::read_verified(data) else {
        return;
    };
    let verified = render(&env);
    // Typed reads beyond `Debug`: the header and the event's own accessor.
    let h = env.header();
    let _ = (h.seq(), h.exchange_ts_ns(), h.recv_ts_ns(), h.stock_locate(), h.tracking_number());
    let _ = env.flags();
    if let Some(name) = env.event_type().variant_name() {
        assert!(!name.is_empty());
    }
    // SAFETY: `data` passed `read_verified` just above and is borrowed unchanged.
    let trusted = unsafe { fb::read_trusted(data) };
    assert_eq!(render(&trusted), verified);
});
