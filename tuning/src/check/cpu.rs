//! Cpu-side checks: isolation, interrupts, frequency, idle states, clocks, NUMA.

use std::collections::{BTreeMap, BTreeSet};

use super::{Ctx, Outcome};
use crate::cpulist::{CpuSet, format_cpu_list, parse_cpu_list};
use crate::topology::node_cpus;

const PLAN_HINT: &str = "run `mdbus tune plan --roles ...` for the exact lists";

fn list(set: &CpuSet) -> String {
    let s = format_cpu_list(set.iter().copied());
    if s.is_empty() { "none".into() } else { s }
}

pub(super) fn isolated_cores(ctx: &Ctx<'_>) -> Outcome {
    let cmd_iso = ctx.cmdline_set("isolcpus");
    let cmd_nohz = ctx.cmdline_set("nohz_full");
    let cmd_rcu = ctx.cmdline_set("rcu_nocbs");
    let example_fix = format!(
        "add to the kernel command line: isolcpus=managed_irq,domain,<cpus> nohz_full=<cpus> \
         rcu_nocbs=<cpus> irqaffinity=<housekeeping cpus> ({PLAN_HINT}), then reboot"
    );

    if ctx.cmdline.is_err() && ctx.sys_isolated.is_err() && ctx.sys_nohz.is_err() {
        return Outcome::unknown(
            format!(
                "{}; {}",
                ctx.cmdline.as_ref().err().cloned().unwrap_or_default(),
                ctx.sys_isolated.as_ref().err().cloned().unwrap_or_default()
            ),
            example_fix,
        );
    }
    let mut problems = Vec::new();
    for parsed in [&cmd_iso, &cmd_nohz, &cmd_rcu].into_iter().flatten() {
        if let Err(e) = parsed {
            problems.push(format!("cannot parse {e}"));
        }
    }
    let isolated = match &ctx.sys_isolated {
        Ok(set) => set.clone(),
        Err(_) => cmd_iso.clone().and_then(Result::ok).unwrap_or_default(),
    };
    let nohz = match &ctx.sys_nohz {
        Ok(set) => set.clone(),
        Err(_) => cmd_nohz.clone().and_then(Result::ok).unwrap_or_default(),
    };
    // nohz_full implies rcu_nocbs for its cpus.
    let rcu: CpuSet = cmd_rcu
        .clone()
        .and_then(Result::ok)
        .unwrap_or_default()
        .union(&nohz)
        .copied()
        .collect();
    let protected: CpuSet = isolated.union(&nohz).copied().collect();
    let found = format!(
        "isolated {}; nohz_full {}; rcu_nocbs {}",
        list(&isolated),
        list(&nohz),
        list(&rcu)
    );

    if protected.is_empty() {
        let mut found = "no isolated cores: every cpu takes scheduler, tick, RCU and kworker \
                         work"
            .to_string();
        if !problems.is_empty() {
            found.push_str(&format!(" ({})", problems.join("; ")));
        }
        return Outcome::warn(found, example_fix);
    }
    if let Some(online) = &ctx.online
        && online.difference(&protected).next().is_none()
    {
        return Outcome::fail(
            format!("{found}: every online cpu is isolated, none is left for housekeeping"),
            format!("leave cpu 0 (and its SMT sibling) out of isolcpus/nohz_full ({PLAN_HINT})"),
        );
    }
    if protected.contains(&0) {
        problems.push("cpu 0 is isolated (it takes boot-time and legacy work)".into());
    }
    let no_tick: CpuSet = isolated.difference(&nohz).copied().collect();
    if !no_tick.is_empty() {
        problems.push(format!("cpus {} still take the timer tick", list(&no_tick)));
    }
    let no_rcu: CpuSet = protected.difference(&rcu).copied().collect();
    if !no_rcu.is_empty() {
        problems.push(format!("cpus {} still run RCU callbacks", list(&no_rcu)));
    }
    if let (Some(Ok(cmd)), Ok(sys)) = (&cmd_iso, &ctx.sys_isolated)
        && cmd != sys
    {
        problems.push(format!(
            "isolcpus={} on the command line but the kernel reports {} (reboot pending?)",
            list(cmd),
            list(sys)
        ));
    }
    if problems.is_empty() {
        Outcome::pass(found)
    } else {
        Outcome::warn(
            format!("{found}: {}", problems.join("; ")),
            format!(
                "use the same cpu list for isolcpus, nohz_full and rcu_nocbs, keep cpu 0 out \
                 ({PLAN_HINT}), then reboot"
            ),
        )
    }
}

pub(super) fn irqbalance(ctx: &Ctx<'_>) -> Outcome {
    let Some(procs) = ctx.sys.processes() else {
        return Outcome::unknown(
            "cannot list processes (/proc unreadable)",
            "check by hand: pgrep -x irqbalance",
        );
    };
    if procs.iter().any(|p| p == "irqbalance") {
        let protected = ctx.protected();
        let mut found = "irqbalance is running".to_string();
        if !protected.is_empty() {
            found.push_str(&format!(
                "; it skips isolated cpus {} in recent versions but keeps re-spreading the \
                 NIC queues you pinned",
                list(&protected)
            ));
        }
        Outcome::warn(
            found,
            "systemctl disable --now irqbalance, then pin the NIC IRQs to housekeeping cpus \
             (see NIC IRQ affinity); or set IRQBALANCE_BANNED_CPULIST=<isolated cpus> in \
             /etc/default/irqbalance",
        )
    } else {
        Outcome::pass("irqbalance is not running")
    }
}

/// One NIC interrupt: number and the name in /proc/interrupts.
struct NicIrq {
    irq: u32,
    name: String,
}

/// Patterns of NIC queue interrupt names (driver conventions).
const NIC_PATTERNS: &[&str] = &[
    "txrx",
    "-rx-",
    "-tx-",
    "mlx5_comp",
    "mlx4-",
    "-input.",
    "-output.",
    "iwlwifi",
];

fn nic_irqs(ctx: &Ctx<'_>) -> Result<Vec<NicIrq>, String> {
    let sys = ctx.sys;
    // Interfaces with a device behind them (lo, bridges, veth have none).
    let mut ifaces = Vec::new();
    let mut msi: BTreeSet<u32> = BTreeSet::new();
    if let Ok(names) = sys.list_dir("/sys/class/net") {
        for name in names.into_iter().filter(|n| n != "lo") {
            let device = format!("/sys/class/net/{name}/device");
            if !sys.exists(&device) {
                continue;
            }
            for dir in [
                format!("{device}/msi_irqs"),
                format!("{device}/../msi_irqs"),
            ] {
                if let Ok(irqs) = sys.list_dir(&dir) {
                    msi.extend(irqs.iter().filter_map(|i| i.parse::<u32>().ok()));
                }
            }
            ifaces.push(name);
        }
    }
    let text = sys.read("/proc/interrupts").map_err(|e| e.to_string())?;
    let mut lines = text.lines();
    let ncpus = lines.next().map_or(0, |h| h.split_whitespace().count());
    let mut found = Vec::new();
    for line in lines {
        let Some((irq, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(irq) = irq.trim().parse::<u32>() else {
            continue; // NMI, LOC, ... are not device interrupts
        };
        // The per-cpu counts, then chip, hwirq, type and the action names.
        let desc: Vec<&str> = rest.split_whitespace().skip(ncpus).collect();
        let name = desc.last().copied().unwrap_or("").to_string();
        let lower = desc.join(" ").to_ascii_lowercase();
        let by_iface = ifaces.iter().any(|i| {
            desc.iter().any(|d| {
                d.strip_prefix(i.as_str())
                    .is_some_and(|tail| tail.is_empty() || tail.starts_with(['-', '@', ',']))
            })
        });
        let by_pattern = NIC_PATTERNS.iter().any(|p| lower.contains(p));
        if msi.contains(&irq) || by_iface || by_pattern {
            found.push(NicIrq { irq, name });
        }
    }
    Ok(found)
}

pub(super) fn nic_irq_affinity(ctx: &Ctx<'_>) -> Outcome {
    let irqs = match nic_irqs(ctx) {
        Ok(irqs) => irqs,
        Err(e) => {
            return Outcome::unknown(
                e,
                "check by hand: grep -E 'TxRx|rx|tx|mlx5_comp' /proc/interrupts and cat \
                 /proc/irq/<n>/smp_affinity_list",
            );
        }
    };
    if irqs.is_empty() {
        if ctx.sys.list_dir("/sys/class/net").is_err() {
            return Outcome::unknown(
                "no NIC interrupts recognised and /sys/class/net is missing",
                "check by hand: cat /proc/interrupts",
            );
        }
        return Outcome::pass(
            "no NIC queue interrupts in /proc/interrupts (virtual NIC or kernel bypass)",
        );
    }
    let protected = ctx.protected();
    let hk = ctx
        .housekeeping()
        .map(|s| list(&s))
        .unwrap_or_else(|| "0".into());
    let mut on_isolated = Vec::new();
    let mut unreadable = Vec::new();
    let mut spread: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for nic in &irqs {
        let path = format!("/proc/irq/{}/smp_affinity_list", nic.irq);
        match ctx.sys.read(&path).map(|t| parse_cpu_list(&t, None)) {
            Ok(Ok(cpus)) => {
                if cpus.intersection(&protected).next().is_some() {
                    on_isolated.push(format!("{} ({}) -> {}", nic.irq, nic.name, list(&cpus)));
                }
                spread.entry(list(&cpus)).or_default().push(nic.irq);
            }
            _ => unreadable.push(nic.irq),
        }
    }
    let ids: Vec<String> = irqs.iter().map(|n| n.irq.to_string()).collect();
    let pin_fix = format!(
        "for irq in {}; do echo {hk} > /proc/irq/$irq/smp_affinity_list; done (and stop \
         irqbalance so it stays)",
        ids.join(" ")
    );
    let summary = {
        let mut parts: Vec<String> = spread
            .iter()
            .map(|(cpus, irqs)| format!("{} on {cpus}", plural(irqs.len(), "IRQ")))
            .collect();
        if !unreadable.is_empty() {
            parts.push(format!("{} unreadable", plural(unreadable.len(), "IRQ")));
        }
        format!("{} NIC IRQs: {}", irqs.len(), parts.join(", "))
    };
    if !on_isolated.is_empty() {
        let shown: Vec<&String> = on_isolated.iter().take(6).collect();
        let more = on_isolated.len().saturating_sub(shown.len());
        let mut found = format!(
            "NIC IRQs can run on isolated cpus {}: {}",
            list(&protected),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        if more > 0 {
            found.push_str(&format!(" and {more} more"));
        }
        return Outcome::fail(found, pin_fix);
    }
    if protected.is_empty() {
        return Outcome::warn(
            format!("{summary}; no isolated cores, so they share cpus with every thread"),
            format!("isolate cores first (see isolated cores), then {pin_fix}"),
        );
    }
    if !unreadable.is_empty() {
        return Outcome::unknown(
            summary,
            "check by hand: cat /proc/irq/<n>/smp_affinity_list",
        );
    }
    Outcome::pass(format!(
        "{summary}; none on isolated cpus {}",
        list(&protected)
    ))
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Online cpus, or the `cpuN` directories when `online` is unknown.
fn cpu_ids(ctx: &Ctx<'_>) -> Vec<usize> {
    if let Some(online) = &ctx.online {
        return online.iter().copied().collect();
    }
    ctx.sys
        .list_dir("/sys/devices/system/cpu")
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.strip_prefix("cpu").and_then(|i| i.parse().ok()))
        .collect()
}

pub(super) fn governor(ctx: &Ctx<'_>) -> Outcome {
    let fix = "cpupower frequency-set -g performance (or: echo performance | tee \
               /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor; tuned-adm profile \
               latency-performance makes it stick)";
    let mut by_gov: BTreeMap<String, CpuSet> = BTreeMap::new();
    let mut missing = CpuSet::new();
    for cpu in cpu_ids(ctx) {
        match ctx.sys.read(&format!(
            "/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
        )) {
            Ok(g) if !g.is_empty() => {
                by_gov.entry(g).or_default().insert(cpu);
            }
            _ => {
                missing.insert(cpu);
            }
        }
    }
    if by_gov.is_empty() {
        return Outcome::unknown(
            "no cpufreq scaling_governor in sysfs (virtual machine or container: the host \
             decides the clock)",
            "on bare metal load the cpufreq driver (intel_pstate, amd-pstate, acpi-cpufreq) and \
             set the performance governor; in a VM ask for dedicated, non-throttled cpus",
        );
    }
    let found: Vec<String> = by_gov
        .iter()
        .map(|(g, cpus)| format!("{g} on {}", list(cpus)))
        .collect();
    let mut found = found.join(", ");
    if !missing.is_empty() {
        found.push_str(&format!("; no governor for {}", list(&missing)));
    }
    if by_gov.keys().all(|g| g == "performance") {
        Outcome::pass(found)
    } else {
        Outcome::warn(found, fix)
    }
}

/// Deepest idle state allowed on any cpu with an exit latency at or below this counts as
/// shallow (POLL and C1 on current Intel and AMD parts).
const SHALLOW_IDLE_US: u64 = 2;

pub(super) fn c_states(ctx: &Ctx<'_>) -> Outcome {
    let fix = "add intel_idle.max_cstate=1 processor.max_cstate=1 to the kernel command line \
               (or keep /dev/cpu_dma_latency open with 0 from a running process, as tuned's \
               latency-performance profile does); idle=poll removes idle entirely at the \
               cost of power";
    let cmd = ctx.cmdline.as_ref().ok();
    let param = |k: &str| cmd.and_then(|c| c.value(k)).map(|v| format!("{k}={v}"));
    let params: Vec<String> = [
        "idle",
        "cpuidle.off",
        "intel_idle.max_cstate",
        "processor.max_cstate",
    ]
    .iter()
    .filter_map(|k| param(k))
    .collect();
    if cmd.and_then(|c| c.value("idle")) == Some("poll") {
        return Outcome::pass("idle=poll: cpus never enter an idle state");
    }

    // Deepest enabled state per cpu from sysfs.
    let mut deepest: BTreeMap<(u64, String), CpuSet> = BTreeMap::new();
    for cpu in cpu_ids(ctx) {
        let base = format!("/sys/devices/system/cpu/cpu{cpu}/cpuidle");
        let Ok(states) = ctx.sys.list_dir(&base) else {
            continue;
        };
        let mut worst: Option<(u64, String)> = None;
        for state in states.iter().filter(|s| s.starts_with("state")) {
            let dir = format!("{base}/{state}");
            let disabled = ctx
                .sys
                .read(&format!("{dir}/disable"))
                .map(|d| d != "0")
                .unwrap_or(false);
            let Ok(latency) = ctx
                .sys
                .read(&format!("{dir}/latency"))
                .map(|l| l.parse::<u64>())
            else {
                continue;
            };
            let Ok(latency) = latency else { continue };
            if disabled {
                continue;
            }
            let name = ctx
                .sys
                .read(&format!("{dir}/name"))
                .unwrap_or_else(|_| state.clone());
            if worst.as_ref().is_none_or(|(l, _)| latency > *l) {
                worst = Some((latency, name));
            }
        }
        if let Some(w) = worst {
            deepest.entry(w).or_default().insert(cpu);
        }
    }
    let params_text = if params.is_empty() {
        String::new()
    } else {
        format!(" ({})", params.join(" "))
    };
    if let Some(((latency, name), _)) = deepest.iter().next_back() {
        let per: Vec<String> = deepest
            .iter()
            .map(|((l, n), cpus)| format!("{n} ({l} us) on {}", list(cpus)))
            .collect();
        let found = format!(
            "deepest enabled idle state: {}{params_text}",
            per.join(", ")
        );
        return if *latency <= SHALLOW_IDLE_US {
            Outcome::pass(found)
        } else {
            Outcome::warn(
                format!("{found}; waking from {name} takes up to {latency} us"),
                fix,
            )
        };
    }
    let limited = cmd.is_some_and(|c| {
        c.value("cpuidle.off") == Some("1")
            || c.value("processor.max_cstate") == Some("1")
            || c.value("intel_idle.max_cstate") == Some("1")
    });
    if limited {
        return Outcome::pass(format!("limited on the kernel command line:{params_text}"));
    }
    match ctx
        .sys
        .read("/sys/devices/system/cpu/cpuidle/current_driver")
    {
        Ok(driver) if driver == "none" => Outcome::warn(
            "no cpuidle driver: idle is plain HLT; in a virtual machine each wake-up goes \
             through the hypervisor",
            "on bare metal: intel_idle.max_cstate=1 processor.max_cstate=1; in a guest: load \
             cpuidle-haltpoll (or idle=poll on cores that must never sleep)",
        ),
        Ok(driver) => Outcome::unknown(
            format!("cpuidle driver {driver} but no per-cpu idle states readable"),
            fix,
        ),
        Err(e) => Outcome::unknown(format!("no cpuidle information ({e})"), fix),
    }
}

pub(super) fn clocksource(ctx: &Ctx<'_>) -> Outcome {
    let path = "/sys/devices/system/clocksource/clocksource0/current_clocksource";
    let fix_base = "echo tsc > /sys/devices/system/clocksource/clocksource0/current_clocksource \
                    (to keep it: clocksource=tsc tsc=reliable on the kernel command line)";
    let current = match ctx.sys.read(path) {
        Ok(c) => c,
        Err(e) => return Outcome::unknown(e.to_string(), format!("check by hand; {fix_base}")),
    };
    let available = ctx
        .sys
        .read("/sys/devices/system/clocksource/clocksource0/available_clocksource")
        .map(|a| format!(" (available: {a})"))
        .unwrap_or_default();
    let found = format!("{current}{available}");
    match current.as_str() {
        "tsc" | "arch_sys_counter" => Outcome::pass(found),
        "kvm-clock" | "hyperv_clocksource_tsc_page" | "xen" => Outcome::warn(
            format!("{found}: a paravirtual clock, read in the vDSO but slower than the TSC"),
            format!("if the hypervisor exposes an invariant TSC: {fix_base}"),
        ),
        "hpet" | "acpi_pm" | "jiffies" | "refined-jiffies" | "pit" => Outcome::fail(
            format!("{found}: every clock_gettime is a system call"),
            fix_base,
        ),
        _ => Outcome::warn(found, fix_base),
    }
}

pub(super) fn invariant_tsc(ctx: &Ctx<'_>) -> Outcome {
    let fix = "nothing to set in software: use a CPU (or a hypervisor setting, e.g. QEMU -cpu \
               host,+invtsc) that provides an invariant TSC; until then compare timings only \
               within one run";
    let cpuinfo = match ctx.sys.read("/proc/cpuinfo") {
        Ok(c) => c,
        Err(e) => return Outcome::unknown(e.to_string(), fix),
    };
    let Some(flags) = cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "flags").then_some(value)
    }) else {
        return Outcome::unknown(
            "no x86 'flags' line in /proc/cpuinfo (not an x86 cpu?)",
            fix,
        );
    };
    let flags: BTreeSet<&str> = flags.split_whitespace().collect();
    let constant = flags.contains("constant_tsc");
    let nonstop = flags.contains("nonstop_tsc");
    match (constant, nonstop) {
        (true, true) => Outcome::pass("constant_tsc and nonstop_tsc"),
        (true, false) => Outcome::warn(
            "constant_tsc but no nonstop_tsc: the TSC may stop in deep idle states",
            format!("limit C-states (intel_idle.max_cstate=1) or {fix}"),
        ),
        (false, _) => Outcome::fail(
            "no constant_tsc: the TSC rate follows the cpu clock and is not a time base",
            fix,
        ),
    }
}

pub(super) fn numa(ctx: &Ctx<'_>) -> Outcome {
    let Some(nodes) = node_cpus(ctx.sys) else {
        return Outcome::unknown(
            "/sys/devices/system/node is missing: assuming one node",
            "check by hand: lscpu | grep -i numa",
        );
    };
    let with_cpus: Vec<&(usize, CpuSet)> = nodes.iter().filter(|(_, c)| !c.is_empty()).collect();
    let found: Vec<String> = nodes
        .iter()
        .map(|(n, cpus)| format!("node{n}: {}", list(cpus)))
        .collect();
    let found = format!("{} ({})", plural(nodes.len(), "node"), found.join("; "));
    if with_cpus.len() <= 1 {
        return Outcome::pass(found);
    }
    let protected = ctx.protected();
    let spanned: Vec<String> = with_cpus
        .iter()
        .filter(|(_, cpus)| cpus.intersection(&protected).next().is_some())
        .map(|(n, _)| n.to_string())
        .collect();
    if spanned.len() > 1 {
        Outcome::warn(
            format!(
                "{found}; isolated cpus {} span nodes {}",
                list(&protected),
                spanned.join(", ")
            ),
            "keep each feed handler and its readers on one node (the NIC's node: cat \
             /sys/class/net/<if>/device/numa_node); `mdbus tune plan` does",
        )
    } else {
        Outcome::pass(format!(
            "{found}; place each feed and its readers on one node (`mdbus tune plan` does)"
        ))
    }
}
