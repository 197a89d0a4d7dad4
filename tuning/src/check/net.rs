//! Network-side checks: socket buffer limits, busy polling.

use super::{Ctx, Outcome, human_bytes};

/// Recommended `net.core.rmem_max` / `wmem_max`: 16 MiB.
pub const RECOMMENDED_SOCKET_BUFFER: i64 = 16 << 20;

pub(super) fn socket_buffers(ctx: &Ctx<'_>) -> Outcome {
    let fix = format!(
        "sysctl -w net.core.rmem_max={r} net.core.wmem_max={r} (persist in /etc/sysctl.d)",
        r = RECOMMENDED_SOCKET_BUFFER
    );
    let rmem = ctx.sys.read_int("/proc/sys/net/core/rmem_max");
    let wmem = ctx.sys.read_int("/proc/sys/net/core/wmem_max");
    let (rmem, wmem) = match (rmem, wmem) {
        (Ok(r), Ok(w)) => (r, w),
        (Err(e), _) | (_, Err(e)) => return Outcome::unknown(e.to_string(), fix),
    };
    let show = |v: i64| human_bytes(u64::try_from(v).unwrap_or(0));
    let found = format!("rmem_max {}, wmem_max {}", show(rmem), show(wmem));
    if rmem >= RECOMMENDED_SOCKET_BUFFER && wmem >= RECOMMENDED_SOCKET_BUFFER {
        Outcome::pass(found)
    } else {
        Outcome::warn(
            format!(
                "{found}: below the recommended {}",
                show(RECOMMENDED_SOCKET_BUFFER)
            ),
            fix,
        )
    }
}

pub(super) fn busy_polling(ctx: &Ctx<'_>) -> Outcome {
    let fix = "sysctl -w net.core.busy_poll=50 net.core.busy_read=50 (microseconds; persist in \
               /etc/sysctl.d); receivers may instead set SO_BUSY_POLL on their sockets";
    let poll = ctx.sys.read_int("/proc/sys/net/core/busy_poll");
    let read = ctx.sys.read_int("/proc/sys/net/core/busy_read");
    let (poll, read) = match (poll, read) {
        (Ok(p), Ok(r)) => (p, r),
        (Err(e), _) | (_, Err(e)) => return Outcome::unknown(e.to_string(), fix),
    };
    let found = format!("busy_poll={poll} us, busy_read={read} us");
    if poll > 0 && read > 0 {
        Outcome::pass(found)
    } else {
        Outcome::warn(format!("{found}: off"), fix)
    }
}
