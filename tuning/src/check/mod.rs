//! Host checks (`mdbus tune check`): read-only inspection of `/proc` and `/sys` with a verdict,
//! the reason it matters for latency, and the fix, for each item.

mod cpu;
mod mem;
mod net;
pub(crate) mod privs;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cmdline::{Cmdline, split_isolcpus};
use crate::cpulist::{CpuSet, parse_cpu_list};
use crate::sysroot::SysRoot;

/// The verdict of one check, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As it should be for low latency.
    Pass,
    /// Costs latency or predictability, or could not be determined.
    Warn,
    /// Will break something or cost a lot: fix before trusting latency figures.
    Fail,
}

impl Status {
    /// The colourless marker used in the table: `[PASS]`, `[WARN]`, `[FAIL]`.
    pub fn marker(self) -> &'static str {
        match self {
            Status::Pass => "[PASS]",
            Status::Warn => "[WARN]",
            Status::Fail => "[FAIL]",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        })
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Stable identifier (one of [`CHECK_IDS`]).
    pub id: String,
    /// Short human title.
    pub title: String,
    /// The verdict.
    pub status: Status,
    /// True when the verdict is a warning only because something could not be read.
    pub unknown: bool,
    /// What was found on the host.
    pub found: String,
    /// Why this matters for latency.
    pub why: String,
    /// The fix (exact command or kernel parameter); absent on a pass.
    pub fix: Option<String>,
}

/// The results of all checks on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The root the files were read under (`/` on a live host).
    pub root: String,
    /// `/proc/sys/kernel/hostname`, when readable.
    pub hostname: Option<String>,
    /// `/proc/sys/kernel/osrelease`, when readable.
    pub kernel: Option<String>,
    /// One result per check, in [`CHECK_IDS`] order.
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// The worst status of all checks (`Pass` for an empty report).
    pub fn worst(&self) -> Status {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Pass)
    }

    /// The result of the check with this id.
    pub fn get(&self, id: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// How many checks have `status`.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

impl fmt::Display for Report {
    /// A table: marker, title, what was found; under each warning or failure, why and the fix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mdbus host check")?;
        if let Some(host) = &self.hostname {
            write!(f, " on {host}")?;
        }
        if let Some(kernel) = &self.kernel {
            write!(f, " (kernel {kernel})")?;
        }
        if self.root != "/" {
            write!(f, " [root {}]", self.root)?;
        }
        writeln!(f)?;
        let title_w = self.checks.iter().map(|c| c.title.len()).max().unwrap_or(5);
        writeln!(f, "{:<6}  {:<title_w$}  found", "status", "check")?;
        for check in &self.checks {
            let found = if check.unknown {
                format!("unknown: {}", check.found)
            } else {
                check.found.clone()
            };
            writeln!(
                f,
                "{:<6}  {:<title_w$}  {found}",
                check.status.marker(),
                check.title
            )?;
            if check.status != Status::Pass {
                let pad = " ".repeat(8 + title_w);
                write_wrapped(f, &pad, "why: ", &check.why)?;
                if let Some(fix) = &check.fix {
                    write_wrapped(f, &pad, "fix: ", fix)?;
                }
            }
        }
        writeln!(
            f,
            "{} checks: {} pass, {} warn, {} fail; worst: {}",
            self.checks.len(),
            self.count(Status::Pass),
            self.count(Status::Warn),
            self.count(Status::Fail),
            self.worst().marker()
        )
    }
}

/// Lines of the table are wrapped to this width (the `found` column is not).
const TABLE_WIDTH: usize = 100;

/// Writes `label` + `text` indented by `pad`, wrapped at word boundaries to [`TABLE_WIDTH`];
/// continuation lines align under the text.
fn write_wrapped(f: &mut fmt::Formatter<'_>, pad: &str, label: &str, text: &str) -> fmt::Result {
    let indent = pad.len() + label.len();
    let width = TABLE_WIDTH.saturating_sub(indent).max(40);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    for (i, line) in lines.iter().enumerate() {
        if i == 0 {
            writeln!(f, "{pad}{label}{line}")?;
        } else {
            writeln!(f, "{:indent$}{line}", "")?;
        }
    }
    Ok(())
}

/// The ids of all checks, in report order.
pub const CHECK_IDS: &[&str] = &[
    "isolated_cores",
    "irqbalance",
    "nic_irq_affinity",
    "cpu_governor",
    "c_states",
    "transparent_hugepages",
    "huge_pages",
    "swap",
    "clocksource",
    "invariant_tsc",
    "socket_buffers",
    "busy_polling",
    "numa",
    "dev_shm",
    "memlock",
    "realtime",
];

/// The verdict a single check function returns; [`run_checks`] adds id, title and why.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    status: Status,
    unknown: bool,
    found: String,
    fix: Option<String>,
}

impl Outcome {
    pub(crate) fn pass(found: impl Into<String>) -> Self {
        Outcome {
            status: Status::Pass,
            unknown: false,
            found: found.into(),
            fix: None,
        }
    }

    pub(crate) fn warn(found: impl Into<String>, fix: impl Into<String>) -> Self {
        Outcome {
            status: Status::Warn,
            unknown: false,
            found: found.into(),
            fix: Some(fix.into()),
        }
    }

    pub(crate) fn fail(found: impl Into<String>, fix: impl Into<String>) -> Self {
        Outcome {
            status: Status::Fail,
            unknown: false,
            found: found.into(),
            fix: Some(fix.into()),
        }
    }

    /// A warning because the facts could not be read; `found` says what was missing.
    pub(crate) fn unknown(found: impl Into<String>, fix: impl Into<String>) -> Self {
        Outcome {
            status: Status::Warn,
            unknown: true,
            found: found.into(),
            fix: Some(fix.into()),
        }
    }
}

/// One check: id, title, why it matters, and the function that inspects the host.
struct Spec {
    id: &'static str,
    title: &'static str,
    why: &'static str,
    run: fn(&Ctx<'_>) -> Outcome,
}

/// Facts several checks share, read once.
pub(crate) struct Ctx<'a> {
    pub(crate) sys: &'a SysRoot,
    /// The kernel command line, or why it could not be read.
    pub(crate) cmdline: Result<Cmdline, String>,
    /// Online cpus, when known.
    pub(crate) online: Option<CpuSet>,
    /// `/sys/devices/system/cpu/isolated`, or why it could not be read.
    pub(crate) sys_isolated: Result<CpuSet, String>,
    /// `/sys/devices/system/cpu/nohz_full`, or why it could not be read.
    pub(crate) sys_nohz: Result<CpuSet, String>,
}

impl<'a> Ctx<'a> {
    fn new(sys: &'a SysRoot) -> Self {
        let online = sys
            .read("/sys/devices/system/cpu/online")
            .ok()
            .and_then(|t| parse_cpu_list(&t, None).ok());
        let last = online.as_ref().and_then(|s| s.iter().next_back().copied());
        let read_set = |path: &str| -> Result<CpuSet, String> {
            let text = sys.read(path).map_err(|e| e.to_string())?;
            // The kernel writes "(null)" into nohz_full when nohz_full is off.
            if text == "(null)" {
                return Ok(CpuSet::new());
            }
            parse_cpu_list(&text, last).map_err(|e| format!("cannot parse {path}: {e}"))
        };
        Ctx {
            sys,
            cmdline: sys
                .read("/proc/cmdline")
                .map(|t| Cmdline::parse(&t))
                .map_err(|e| e.to_string()),
            sys_isolated: read_set("/sys/devices/system/cpu/isolated"),
            sys_nohz: read_set("/sys/devices/system/cpu/nohz_full"),
            online,
        }
    }

    fn last_cpu(&self) -> Option<usize> {
        self.online
            .as_ref()
            .and_then(|s| s.iter().next_back().copied())
    }

    /// A cpu-list parameter of the kernel command line: `None` when absent, `Some(Err)` when
    /// unparsable. `isolcpus` flags are stripped.
    pub(crate) fn cmdline_set(&self, key: &str) -> Option<Result<CpuSet, String>> {
        let cmdline = self.cmdline.as_ref().ok()?;
        let value = cmdline.value(key)?;
        let list = if key == "isolcpus" {
            split_isolcpus(value).1
        } else {
            value.to_string()
        };
        Some(parse_cpu_list(&list, self.last_cpu()).map_err(|e| format!("{key}={value}: {e}")))
    }

    /// Cpus kept away from general work: the kernel's isolated and nohz_full sets (from sysfs,
    /// else from the command line).
    pub(crate) fn protected(&self) -> CpuSet {
        let isolated = match &self.sys_isolated {
            Ok(set) => set.clone(),
            Err(_) => self
                .cmdline_set("isolcpus")
                .and_then(Result::ok)
                .unwrap_or_default(),
        };
        let nohz = match &self.sys_nohz {
            Ok(set) => set.clone(),
            Err(_) => self
                .cmdline_set("nohz_full")
                .and_then(Result::ok)
                .unwrap_or_default(),
        };
        isolated.union(&nohz).copied().collect()
    }

    /// Online cpus not in [`Ctx::protected`], when the online set is known.
    pub(crate) fn housekeeping(&self) -> Option<CpuSet> {
        let protected = self.protected();
        self.online
            .as_ref()
            .map(|online| online.difference(&protected).copied().collect())
    }
}

const SPECS: &[Spec] = &[
    Spec {
        id: "isolated_cores",
        title: "isolated cores",
        why: "on a shared core the scheduler, timer ticks, RCU callbacks and kernel workers \
              preempt the feed handler for tens of microseconds at a time; isolcpus, nohz_full \
              and rcu_nocbs keep them off the cores the bus runs on",
        run: cpu::isolated_cores,
    },
    Spec {
        id: "irqbalance",
        title: "irqbalance",
        why: "irqbalance moves interrupts between cpus every few seconds, so a NIC queue \
              interrupt can land on a pinned busy-polling core at any moment",
        run: cpu::irqbalance,
    },
    Spec {
        id: "nic_irq_affinity",
        title: "NIC IRQ affinity",
        why: "a NIC queue interrupt handled on an isolated core preempts the thread pinned \
              there (hard IRQ plus softirq, several microseconds per packet burst)",
        run: cpu::nic_irq_affinity,
    },
    Spec {
        id: "cpu_governor",
        title: "cpu governor",
        why: "powersave and ondemand governors lower the clock when a core looks idle; the \
              first messages after a quiet spell then run slowly while the clock ramps up",
        run: cpu::governor,
    },
    Spec {
        id: "c_states",
        title: "C-states",
        why: "a core in a deep idle state (C6 and below) takes tens to hundreds of \
              microseconds to wake, and that wake-up lands on the first packet after a pause",
        run: cpu::c_states,
    },
    Spec {
        id: "transparent_hugepages",
        title: "transparent huge pages",
        why: "with THP 'always' the kernel compacts memory in page faults and khugepaged \
              rewrites page tables in the background: millisecond stalls at random times",
        run: mem::transparent_hugepages,
    },
    Spec {
        id: "huge_pages",
        title: "huge pages",
        why: "rings on 2 MiB or 1 GiB pages need far fewer TLB entries than on 4 KiB pages, \
              cutting TLB misses on every read of a large ring",
        run: mem::huge_pages,
    },
    Spec {
        id: "swap",
        title: "swap",
        why: "a page swapped out costs a disk read (milliseconds) on next touch; memory \
              locking protects mdbus itself, but not the rest of the host",
        run: mem::swap,
    },
    Spec {
        id: "clocksource",
        title: "clocksource",
        why: "with tsc, clock_gettime is a few nanoseconds in the vDSO; with hpet or acpi_pm \
              every timestamp is a system call of about a microsecond",
        run: cpu::clocksource,
    },
    Spec {
        id: "invariant_tsc",
        title: "invariant TSC",
        why: "the benchmark harness times with the TSC; it is only a clock when it ticks at a \
              constant rate (constant_tsc) and through idle states (nonstop_tsc)",
        run: cpu::invariant_tsc,
    },
    Spec {
        id: "socket_buffers",
        title: "socket buffer limits",
        why: "rmem_max and wmem_max cap SO_RCVBUF/SO_SNDBUF; a small receive buffer overflows \
              in a market-open burst and the kernel drops packets, forcing re-requests",
        run: net::socket_buffers,
    },
    Spec {
        id: "busy_polling",
        title: "busy polling",
        why: "with busy_poll/busy_read the kernel polls the NIC queue from the reading thread \
              instead of waiting for an interrupt and a wake-up, saving several microseconds",
        run: net::busy_polling,
    },
    Spec {
        id: "numa",
        title: "NUMA layout",
        why: "a reader on another NUMA node than the ring it reads pays the interconnect on \
              every cache miss (roughly 1.5-2x the local latency)",
        run: cpu::numa,
    },
    Spec {
        id: "dev_shm",
        title: "/dev/shm",
        why: "mdbus rings live in /dev/shm; too small (Docker defaults to 64 MiB) and creating \
              a stream fails, or a page fault hits SIGBUS when the tmpfs fills",
        run: mem::dev_shm,
    },
    Spec {
        id: "memlock",
        title: "memlock limit",
        why: "lock_memory() (mlockall) keeps rings, heap and stacks resident so no page fault \
              or swap-in lands on the hot path; it fails when RLIMIT_MEMLOCK is too low",
        run: privs::memlock,
    },
    Spec {
        id: "realtime",
        title: "real-time scheduling",
        why: "SCHED_FIFO keeps ordinary tasks from preempting a critical thread; without \
              permission set_realtime() reports NotPermitted and threads stay SCHED_OTHER",
        run: privs::realtime,
    },
];

/// Runs every check against `sys` and returns the report. Reads only; never changes the host;
/// never panics on missing or malformed files (they give an `unknown` warning).
///
/// ```
/// use mdbus_tuning::{run_checks, SysRoot};
/// let report = run_checks(&SysRoot::host());
/// assert_eq!(report.checks.len(), mdbus_tuning::CHECK_IDS.len());
/// println!("{report}");
/// ```
pub fn run_checks(sys: &SysRoot) -> Report {
    let ctx = Ctx::new(sys);
    let checks = SPECS
        .iter()
        .map(|spec| {
            let outcome = (spec.run)(&ctx);
            CheckResult {
                id: spec.id.to_string(),
                title: spec.title.to_string(),
                status: outcome.status,
                unknown: outcome.unknown,
                found: outcome.found,
                why: spec.why.to_string(),
                fix: outcome.fix,
            }
        })
        .collect();
    Report {
        root: sys.root().display().to_string(),
        hostname: sys.read("/proc/sys/kernel/hostname").ok(),
        kernel: sys.read("/proc/sys/kernel/osrelease").ok(),
        checks,
    }
}

/// Formats a byte count as KiB / MiB / GiB.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = KIB * 1024;
    const GIB: u64 = MIB * 1024;
    let (unit, div) = if bytes >= GIB {
        ("GiB", GIB)
    } else if bytes >= MIB {
        ("MiB", MIB)
    } else if bytes >= KIB {
        ("KiB", KIB)
    } else {
        return format!("{bytes} B");
    };
    let value = bytes as f64 / div as f64;
    if (value - value.round()).abs() < 0.05 {
        format!("{} {unit}", value.round() as u64)
    } else {
        format!("{value:.1} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_match_ids() {
        let ids: Vec<&str> = SPECS.iter().map(|s| s.id).collect();
        assert_eq!(ids, CHECK_IDS);
    }

    #[test]
    fn bytes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(212_992), "208 KiB");
        assert_eq!(human_bytes(16 << 20), "16 MiB");
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(8 << 30), "8 GiB");
        assert_eq!(human_bytes(1536 << 20), "1.5 GiB");
    }

    #[test]
    fn worst_orders_fail_over_warn() {
        let mk = |status| CheckResult {
            id: "x".into(),
            title: "x".into(),
            status,
            unknown: false,
            found: String::new(),
            why: String::new(),
            fix: None,
        };
        let mut report = Report {
            root: "/".into(),
            hostname: None,
            kernel: None,
            checks: vec![],
        };
        assert_eq!(report.worst(), Status::Pass);
        report.checks = vec![mk(Status::Pass), mk(Status::Fail), mk(Status::Warn)];
        assert_eq!(report.worst(), Status::Fail);
        report.checks.remove(1);
        assert_eq!(report.worst(), Status::Warn);
    }
}
