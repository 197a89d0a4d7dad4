//! Facts about the host that a latency figure must be quoted with.

use serde::{Deserialize, Serialize};

/// What the machine was when the figures were taken.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct HostInfo {
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Logical CPUs this process may run on.
    pub cpus_available: usize,
    /// The two cores the measuring threads ran on (producer/pinger first).
    pub cores_used: Vec<usize>,
    /// Whether both threads were pinned successfully.
    pub pinned: bool,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// cpufreq scaling governor of the first core used, or `unavailable`.
    pub governor: String,
    /// `/sys/devices/system/cpu/isolated` (empty: no isolated cores).
    pub isolated_cores: String,
    /// `constant_tsc` and `nonstop_tsc` both present in `/proc/cpuinfo`.
    pub tsc_invariant: bool,
    /// The clock used: `tsc` or `monotonic`.
    pub clock: String,
    /// The kernel's current clocksource.
    pub clocksource: String,
    /// Whether `/proc/cpuinfo` has the `hypervisor` flag (a virtual machine).
    pub virtualized: bool,
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The flags line of the first processor in `/proc/cpuinfo`, split into words.
fn cpu_flags(cpuinfo: &str) -> Vec<&str> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.split_whitespace().collect())
        .unwrap_or_default()
}

/// Whether the TSC is invariant according to `/proc/cpuinfo` text.
pub fn tsc_invariant_from(cpuinfo: &str) -> bool {
    let flags = cpu_flags(cpuinfo);
    flags.contains(&"constant_tsc") && flags.contains(&"nonstop_tsc")
}

/// Whether this host's TSC is invariant (false when `/proc/cpuinfo` cannot be read).
pub fn tsc_invariant() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| tsc_invariant_from(&s))
        .unwrap_or(false)
}

/// Gathers the host facts; `cores` are the cores used, `clock` the clock source name.
pub fn collect(cores: &[usize], pinned: bool, clock: &str) -> HostInfo {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let flags = cpu_flags(&cpuinfo);
    let first = cores.first().copied().unwrap_or(0);
    HostInfo {
        cpu_model,
        cpus_available: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cores_used: cores.to_vec(),
        pinned,
        kernel: read_trim("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into()),
        governor: read_trim(&format!(
            "/sys/devices/system/cpu/cpu{first}/cpufreq/scaling_governor"
        ))
        .unwrap_or_else(|| "unavailable".into()),
        isolated_cores: read_trim("/sys/devices/system/cpu/isolated").unwrap_or_default(),
        tsc_invariant: flags.contains(&"constant_tsc") && flags.contains(&"nonstop_tsc"),
        clock: clock.to_string(),
        clocksource: read_trim("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .unwrap_or_else(|| "unknown".into()),
        virtualized: flags.contains(&"hypervisor"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invariant_tsc_needs_both_flags() {
        let both = "processor: 0\nflags\t\t: fpu tsc constant_tsc rep_good nonstop_tsc\n";
        let one = "processor: 0\nflags\t\t: fpu tsc constant_tsc rep_good\n";
        assert!(tsc_invariant_from(both));
        assert!(!tsc_invariant_from(one));
        assert!(!tsc_invariant_from(""));
    }
}
