//! Privilege checks: locked memory and real-time scheduling.

use super::{Ctx, Outcome, human_bytes};
use crate::sysroot::{CAP_IPC_LOCK, CAP_SYS_NICE, Limit, LimitValue, Resource};

/// A finite memlock limit at or above this warns instead of failing.
const MEMLOCK_WARN_AT: u64 = 1 << 30;

fn show(v: LimitValue) -> String {
    match v {
        LimitValue::Unlimited => "unlimited".into(),
        LimitValue::Finite(n) => human_bytes(n),
    }
}

/// `soft X, hard Y` for memlock (bytes) or rtprio (plain numbers).
pub(crate) fn limit_text(limit: &Limit, bytes: bool) -> String {
    let f = |v: LimitValue| if bytes { show(v) } else { v.to_string() };
    format!("soft {}, hard {}", f(limit.soft), f(limit.hard))
}

fn has_cap(caps: Option<u64>, cap: u32) -> Option<bool> {
    caps.map(|c| c & (1u64 << cap) != 0)
}

pub(super) fn memlock(ctx: &Ctx<'_>) -> Outcome {
    let fix = "ulimit -l unlimited (shell); LimitMEMLOCK=infinity (systemd unit); \
               '<user> - memlock unlimited' in /etc/security/limits.conf; --ulimit memlock=-1 \
               (Docker); or grant CAP_IPC_LOCK";
    let facts = ctx.sys.facts();
    let caps = facts.capabilities();
    let euid = facts.euid();
    let limit = facts.rlimit(Resource::Memlock);
    let limit_desc = limit
        .as_ref()
        .map(|l| format!("RLIMIT_MEMLOCK {}", limit_text(l, true)))
        .unwrap_or_else(|| "RLIMIT_MEMLOCK unknown".into());
    match has_cap(caps, CAP_IPC_LOCK) {
        Some(true) => {
            return Outcome::pass(format!("CAP_IPC_LOCK: no limit applies ({limit_desc})"));
        }
        None if euid == Some(0) => {
            return Outcome::pass(format!("root: no limit applies ({limit_desc})"));
        }
        _ => {}
    }
    let who = match (euid, has_cap(caps, CAP_IPC_LOCK)) {
        (Some(0), Some(false)) => "root without CAP_IPC_LOCK (container?), ",
        _ => "",
    };
    let Some(limit) = limit else {
        return Outcome::unknown(format!("{who}{limit_desc}"), fix);
    };
    let found = format!("{who}{limit_desc}");
    match limit.soft {
        LimitValue::Unlimited => Outcome::pass(found),
        LimitValue::Finite(soft) => {
            let raisable = if limit.hard.at_least(soft.saturating_add(1)) {
                " (the hard limit allows raising it: setrlimit or ulimit -l)"
            } else {
                ""
            };
            if soft >= MEMLOCK_WARN_AT {
                Outcome::warn(
                    format!("{found}: lock_memory() fails once the process maps more{raisable}"),
                    fix,
                )
            } else {
                Outcome::fail(
                    format!("{found}: lock_memory() will fail (ENOMEM){raisable}"),
                    fix,
                )
            }
        }
    }
}

pub(super) fn realtime(ctx: &Ctx<'_>) -> Outcome {
    let fix = "'<user> - rtprio 99' in /etc/security/limits.conf; LimitRTPRIO=99 (systemd \
               unit); setcap cap_sys_nice+ep <binary>; --cap-add SYS_NICE (Docker)";
    let facts = ctx.sys.facts();
    let caps = facts.capabilities();
    let euid = facts.euid();
    let throttle = match (
        ctx.sys.read_int("/proc/sys/kernel/sched_rt_runtime_us"),
        ctx.sys.read_int("/proc/sys/kernel/sched_rt_period_us"),
    ) {
        (Ok(-1), _) => "; RT throttling off (sched_rt_runtime_us=-1)".to_string(),
        (Ok(rt), Ok(period)) => format!(
            "; RT throttling: {rt} of every {period} us (a 100% busy SCHED_FIFO thread is \
             paused for the rest)"
        ),
        _ => String::new(),
    };
    match has_cap(caps, CAP_SYS_NICE) {
        Some(true) => return Outcome::pass(format!("CAP_SYS_NICE: SCHED_FIFO 1-99{throttle}")),
        None if euid == Some(0) => {
            return Outcome::pass(format!("root: SCHED_FIFO 1-99{throttle}"));
        }
        _ => {}
    }
    let who = match (euid, has_cap(caps, CAP_SYS_NICE)) {
        (Some(0), Some(false)) => "root without CAP_SYS_NICE (container?), ",
        _ => "",
    };
    let Some(limit) = facts.rlimit(Resource::Rtprio) else {
        return Outcome::unknown(format!("{who}RLIMIT_RTPRIO unknown{throttle}"), fix);
    };
    let found = format!("{who}RLIMIT_RTPRIO {}", limit_text(&limit, false));
    match limit.soft {
        LimitValue::Unlimited => Outcome::pass(format!("{found}: SCHED_FIFO 1-99{throttle}")),
        LimitValue::Finite(n) if n > 0 => {
            Outcome::pass(format!("{found}: SCHED_FIFO 1-{n}{throttle}"))
        }
        LimitValue::Finite(_) => Outcome::warn(
            format!("{found}: no real-time priority allowed{throttle}"),
            fix,
        ),
    }
}
