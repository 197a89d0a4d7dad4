//! Proposing a core layout for a set of roles on a topology.
//!
//! The rules, in order:
//! 1. The physical core of the lowest cpu (cpu 0 and its SMT siblings) stays with the OS.
//! 2. Each latency-critical role instance gets a whole physical core; its SMT siblings are
//!    isolated too and left idle. Roles are served in data-flow order (feed handler, receiver,
//!    book builder, sender, strategy), so when cores run short the first ones keep theirs.
//! 3. All of them on one NUMA node when one node has room: the OS core's node first, else the
//!    lowest node that fits, else spread over the nodes with a warning.
//! 4. Short of whole cores, split the last cores into SMT siblings. Short of threads, run on
//!    the OS core's cpus too (beside the OS, not isolated), one thread each; short even of
//!    those, a strategy shares the cpu of the first feed handler (or receiver), the
//!    arrangement `mdbus demo` runs on two cpus, and other roles time-share the last cpu.
//!    Each compromise is a warning in the layout.
//! 5. Background roles are not isolated: they run on the housekeeping cpus.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::cpulist::{cpu_mask_hex, format_cpu_list};
use crate::error::PlanError;
use crate::layout::{LAYOUT_VERSION, Layout, RoleLayout, RuntimeSettings, Sysctl};
use crate::topology::{PhysicalCore, Topology};

/// What a role does, which decides how it is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleKind {
    /// Receives exchange multicast, sequences, decodes and publishes.
    FeedHandler,
    /// Receives bus traffic from another host.
    Receiver,
    /// Builds order books from the normalized stream.
    BookBuilder,
    /// Sends bus streams to other hosts.
    Sender,
    /// A trading strategy reading the bus.
    Strategy,
    /// Not latency critical (recorder, retransmission server, statistics): housekeeping cpus.
    Background,
}

impl RoleKind {
    /// All kinds, in placement priority order.
    pub const ALL: [RoleKind; 6] = [
        RoleKind::FeedHandler,
        RoleKind::Receiver,
        RoleKind::BookBuilder,
        RoleKind::Sender,
        RoleKind::Strategy,
        RoleKind::Background,
    ];

    /// Whether the role gets an isolated, whole physical core.
    pub fn is_latency_critical(self) -> bool {
        self != RoleKind::Background
    }

    /// The snake_case name used in layouts and role lists.
    pub fn as_str(self) -> &'static str {
        match self {
            RoleKind::FeedHandler => "feed_handler",
            RoleKind::Receiver => "receiver",
            RoleKind::BookBuilder => "book_builder",
            RoleKind::Sender => "sender",
            RoleKind::Strategy => "strategy",
            RoleKind::Background => "background",
        }
    }

    fn rank(self) -> usize {
        RoleKind::ALL
            .iter()
            .position(|&k| k == self)
            .unwrap_or(usize::MAX)
    }
}

impl fmt::Display for RoleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RoleKind {
    type Err = PlanError;

    /// Accepts the snake_case name, `-` for `_`, and plurals (`strategies`, `receivers`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        let kind = match norm.as_str() {
            "feed_handler" | "feed_handlers" | "feed" => RoleKind::FeedHandler,
            "receiver" | "receivers" => RoleKind::Receiver,
            "book_builder" | "book_builders" | "book" => RoleKind::BookBuilder,
            "sender" | "senders" => RoleKind::Sender,
            "strategy" | "strategies" => RoleKind::Strategy,
            "background" => RoleKind::Background,
            _ => return Err(PlanError::UnknownKind(s.trim().to_string())),
        };
        Ok(kind)
    }
}

/// A role to place: `count` threads of one kind under one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Name in the layout (`[roles.<name>]`): ASCII letters, digits, `_`, `-`.
    pub name: String,
    /// What it does.
    pub kind: RoleKind,
    /// Number of threads (instances).
    pub count: usize,
}

impl Role {
    /// A role.
    pub fn new(name: impl Into<String>, kind: RoleKind, count: usize) -> Role {
        Role {
            name: name.into(),
            kind,
            count,
        }
    }
}

/// Parses a role list as the CLI takes it: comma separated `[name=]kind[:count]`.
///
/// ```
/// use mdbus_tuning::{parse_roles, RoleKind};
/// let roles = parse_roles("feed_handler,book_builder,strategy:2,alpha=strategy").unwrap();
/// assert_eq!(roles.len(), 4);
/// assert_eq!(roles[2].name, "strategy");
/// assert_eq!(roles[2].count, 2);
/// assert_eq!(roles[3].name, "alpha");
/// assert_eq!(roles[3].kind, RoleKind::Strategy);
/// ```
pub fn parse_roles(spec: &str) -> Result<Vec<Role>, PlanError> {
    let mut roles = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, rest) = match item.split_once('=') {
            Some((name, rest)) => (Some(name.trim()), rest.trim()),
            None => (None, item),
        };
        let (kind_text, count) = match rest.split_once(':') {
            Some((kind, count)) => {
                let count = count
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| PlanError::BadRoleSpec {
                        spec: item.to_string(),
                        reason: format!("count {:?} is not a number", count.trim()),
                    })?;
                (kind.trim(), count)
            }
            None => (rest, 1),
        };
        let kind: RoleKind = kind_text.parse()?;
        let name = name.map_or_else(|| kind.as_str().to_string(), str::to_string);
        roles.push(Role::new(name, kind, count));
    }
    if roles.is_empty() {
        return Err(PlanError::NoRoles);
    }
    validate_roles(&roles)?;
    Ok(roles)
}

fn validate_roles(roles: &[Role]) -> Result<(), PlanError> {
    if roles.is_empty() {
        return Err(PlanError::NoRoles);
    }
    let mut seen = BTreeSet::new();
    for role in roles {
        let name_ok = !role.name.is_empty()
            && role
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err(PlanError::BadName(role.name.clone()));
        }
        if role.count == 0 {
            return Err(PlanError::ZeroCount(role.name.clone()));
        }
        if !seen.insert(role.name.as_str()) {
            return Err(PlanError::DuplicateRole(role.name.clone()));
        }
    }
    Ok(())
}

/// Options for [`plan_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Put the latency-critical roles on this NUMA node (for example the NIC's node,
    /// `/sys/class/net/<if>/device/numa_node`) instead of choosing one.
    pub prefer_node: Option<usize>,
}

/// Proposes a core layout for `roles` on `topology`, with default [`PlanOptions`].
///
/// ```
/// use mdbus_tuning::{plan, parse_roles, Topology};
/// let topology = Topology::synthetic(1, 8, 2); // 8 cores, 16 threads
/// let layout = plan(&topology, &parse_roles("feed_handler,book_builder,strategy:2").unwrap()).unwrap();
/// assert_eq!(layout.core_for("feed_handler", 0), Some(1));
/// assert_eq!(layout.core_for("strategy", 1), Some(4));
/// assert!(layout.warnings.is_empty());
/// assert!(layout.kernel_cmdline.contains("nohz_full=1-4,9-12"));
/// ```
pub fn plan(topology: &Topology, roles: &[Role]) -> Result<Layout, PlanError> {
    plan_with(topology, roles, &PlanOptions::default())
}

/// One latency-critical thread to place.
#[derive(Debug, Clone, Copy)]
struct Instance {
    role: usize,
    index: usize,
}

/// Proposes a core layout for `roles` on `topology`; see the module docs for the rules.
pub fn plan_with(
    topology: &Topology,
    roles: &[Role],
    options: &PlanOptions,
) -> Result<Layout, PlanError> {
    validate_roles(roles)?;
    let cores = topology.physical_cores();
    let Some(os_core) = cores.first().cloned() else {
        return Err(PlanError::NoCpus);
    };
    let candidates = &cores[1..];

    let mut order: Vec<usize> = (0..roles.len())
        .filter(|&i| roles[i].kind.is_latency_critical())
        .collect();
    order.sort_by_key(|&i| roles[i].kind.rank());
    let critical: Vec<Instance> = order
        .iter()
        .flat_map(|&role| (0..roles[role].count).map(move |index| Instance { role, index }))
        .collect();

    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    let ordered = order_by_node(
        candidates,
        critical.len(),
        os_core.node,
        options.prefer_node,
        &mut warnings,
    )?;

    let mut assigned: Vec<Vec<usize>> = roles.iter().map(|r| vec![0; r.count]).collect();
    let mut isolated = BTreeSet::new();
    let label = |inst: &Instance| format!("{}[{}]", roles[inst.role].name, inst.index);
    let demand = critical.len();
    let total_threads: usize = ordered.iter().map(|c| c.cpus.len()).sum();

    if demand > 0 && demand <= ordered.len() {
        // Rule 2: a whole core each.
        for (inst, core) in critical.iter().zip(&ordered) {
            assigned[inst.role][inst.index] = core.cpus[0];
            isolated.extend(core.cpus.iter().copied());
        }
        let idle: Vec<usize> = ordered[..demand]
            .iter()
            .flat_map(|c| c.cpus[1..].iter().copied())
            .collect();
        if !idle.is_empty() {
            notes.push(format!(
                "cpus {} are the SMT siblings of role cores: isolated and left idle so they do \
                 not steal execution units (or boot with nosmt)",
                format_cpu_list(idle)
            ));
        }
    } else if demand > 0 && demand <= total_threads {
        // Rule 4a: split the last cores into their hardware threads until everyone fits.
        let capacity = |split: usize| -> usize {
            let whole = ordered.len() - split;
            whole + ordered[whole..].iter().map(|c| c.cpus.len()).sum::<usize>()
        };
        let mut split = 0;
        while split < ordered.len() && capacity(split) < demand {
            split += 1;
        }
        let whole = ordered.len() - split;
        let mut slots: Vec<(usize, usize)> = Vec::new(); // (cpu, core index in `ordered`)
        for (i, core) in ordered.iter().enumerate() {
            if i < whole {
                slots.push((core.cpus[0], i));
            } else {
                slots.extend(core.cpus.iter().map(|&cpu| (cpu, i)));
            }
        }
        let mut by_core: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (inst, &(cpu, core)) in critical.iter().zip(&slots) {
            assigned[inst.role][inst.index] = cpu;
            by_core.entry(core).or_default().push(label(inst));
        }
        for core in &ordered {
            isolated.extend(core.cpus.iter().copied());
        }
        for (core, who) in by_core {
            if core >= whole && who.len() > 1 {
                warnings.push(format!(
                    "not enough physical cores: {} share physical core {{cpus {}}} as SMT \
                     siblings, each slowing the other",
                    who.join(" and "),
                    format_cpu_list(ordered[core].cpus.iter().copied())
                ));
            }
        }
    } else if demand > 0 {
        // Rule 4b: fewer cpus than threads. Use the OS core's cpus too, one thread each,
        // before two threads share one; then a strategy shares its feed's cpu.
        let mut pool: Vec<usize> = Vec::new();
        for core in &ordered {
            isolated.extend(core.cpus.iter().copied());
            pool.extend(core.cpus.iter().copied());
        }
        if pool.is_empty() {
            warnings.push(format!(
                "no cpu outside the housekeeping core {{cpus {}}}: latency-critical roles run \
                 beside the OS and nothing is isolated",
                format_cpu_list(os_core.cpus.iter().copied())
            ));
        }
        // The OS core's siblings first, its lowest cpu (cpu 0) last.
        let mut os_pool = os_core.cpus.clone();
        os_pool.rotate_left(1);
        let beside_os = !pool.is_empty();
        pool.extend(os_pool);
        let mut on_cpu: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let mut feed_cpu = None;
        for (n, inst) in critical.iter().enumerate() {
            let kind = roles[inst.role].kind;
            let cpu = match pool.get(n) {
                Some(&cpu) => cpu,
                None if kind == RoleKind::Strategy => feed_cpu.unwrap_or(pool[pool.len() - 1]),
                None => pool[pool.len() - 1],
            };
            if feed_cpu.is_none() && matches!(kind, RoleKind::FeedHandler | RoleKind::Receiver) {
                feed_cpu = Some(cpu);
            }
            assigned[inst.role][inst.index] = cpu;
            on_cpu.entry(cpu).or_default().push(label(inst));
        }
        for (cpu, who) in &on_cpu {
            if beside_os && os_core.cpus.contains(cpu) {
                warnings.push(format!(
                    "not enough cpus: {} runs on cpu {cpu} beside the OS (interrupts, timers, \
                     housekeeping), not isolated",
                    who.join(", ")
                ));
            }
            if who.len() > 1 {
                warnings.push(format!(
                    "not enough cpus: {} time-share cpu {cpu}; busy-polling threads on one cpu \
                     starve each other, so give them a yielding or blocking wait strategy, or \
                     run a strategy on its feed's thread (`mdbus demo` runs the strategy in the \
                     feed handler's waits)",
                    who.join(", ")
                ));
            }
        }
    }

    // Rule 5: everything not isolated is housekeeping; background roles go there, away from
    // the lowest cpu first.
    let housekeeping: Vec<usize> = topology
        .cpu_ids()
        .into_iter()
        .filter(|c| !isolated.contains(c))
        .collect();
    let mut bg_pool: Vec<usize> = housekeeping
        .iter()
        .copied()
        .filter(|c| !os_core.cpus.contains(c))
        .collect();
    let mut os_rest = os_core.cpus.clone();
    os_rest.rotate_left(1);
    bg_pool.extend(os_rest.into_iter().filter(|c| housekeeping.contains(c)));
    let mut next_bg = 0;
    for (role, cores) in roles.iter().zip(assigned.iter_mut()) {
        if role.kind.is_latency_critical() {
            continue;
        }
        for slot in cores.iter_mut() {
            // bg_pool is never empty: the OS core is never isolated.
            if let Some(&cpu) = bg_pool.get(next_bg % bg_pool.len().max(1)) {
                *slot = cpu;
            }
            next_bg += 1;
        }
    }

    if !topology.isolated.is_empty() {
        let now: Vec<usize> = isolated.iter().copied().collect();
        if now != topology.isolated {
            notes.push(format!(
                "the kernel isolates cpus {} now; this plan isolates {}",
                format_cpu_list(topology.isolated.iter().copied()),
                if now.is_empty() {
                    "none".to_string()
                } else {
                    format_cpu_list(now)
                }
            ));
        }
    }

    let isolated: Vec<usize> = isolated.into_iter().collect();
    let (kernel_cmdline, sysctls, commands) = isolation_settings(&isolated, &housekeeping);
    if isolated.is_empty() && demand > 0 {
        warnings.push("nothing is isolated, so no kernel parameters are proposed".into());
    }
    let roles = roles
        .iter()
        .zip(assigned)
        .map(|(role, cores)| {
            (
                role.name.clone(),
                RoleLayout {
                    kind: role.kind,
                    cores,
                    priority: None,
                },
            )
        })
        .collect();
    Ok(Layout {
        version: LAYOUT_VERSION,
        housekeeping,
        isolated,
        kernel_cmdline,
        warnings,
        notes,
        commands,
        runtime: RuntimeSettings::default(),
        roles,
        sysctls,
    })
}

/// Candidate cores in the order they should be handed out: the chosen NUMA node first.
fn order_by_node(
    candidates: &[PhysicalCore],
    demand: usize,
    os_node: usize,
    prefer: Option<usize>,
    warnings: &mut Vec<String>,
) -> Result<Vec<PhysicalCore>, PlanError> {
    let mut by_node: BTreeMap<usize, Vec<PhysicalCore>> = BTreeMap::new();
    for core in candidates {
        by_node.entry(core.node).or_default().push(core.clone());
    }
    if let Some(node) = prefer
        && !by_node.contains_key(&node)
    {
        return Err(PlanError::UnknownNode(node));
    }
    let fits = |node: &usize| by_node.get(node).is_some_and(|c| c.len() >= demand);
    let primary = prefer
        .or_else(|| Some(os_node).filter(fits))
        .or_else(|| by_node.keys().copied().find(fits))
        .or_else(|| {
            by_node
                .iter()
                .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(a.0)))
                .map(|(&n, _)| n)
        });
    let mut nodes: Vec<usize> = by_node.keys().copied().collect();
    nodes.sort_by(|a, b| {
        let key = |n: &usize| (Some(*n) != primary, std::cmp::Reverse(by_node[n].len()), *n);
        key(a).cmp(&key(b))
    });
    let mut ordered = Vec::new();
    let mut used_nodes = BTreeSet::new();
    for node in nodes {
        for core in &by_node[&node] {
            if ordered.len() < demand {
                used_nodes.insert(node);
            }
            ordered.push(core.clone());
        }
    }
    if used_nodes.len() > 1 {
        let list: Vec<String> = used_nodes.iter().map(|n| n.to_string()).collect();
        warnings.push(format!(
            "the latency-critical roles span NUMA nodes {}: rings read across nodes pay the \
             interconnect on every cache miss; keep each feed and its readers on one node",
            list.join(", ")
        ));
    }
    Ok(ordered)
}

/// Kernel command line, sysctls and boot-time commands that isolate `isolated`.
fn isolation_settings(
    isolated: &[usize],
    housekeeping: &[usize],
) -> (String, Vec<Sysctl>, Vec<String>) {
    let sysctl = |key: &str, value: String, why: &str| Sysctl {
        key: key.to_string(),
        value,
        why: why.to_string(),
    };
    let hk = format_cpu_list(housekeeping.iter().copied());
    let mut sysctls = vec![
        sysctl(
            "net.core.rmem_max",
            "16777216".into(),
            "lets receivers ask for 16 MiB socket buffers to ride out bursts",
        ),
        sysctl(
            "net.core.wmem_max",
            "16777216".into(),
            "lets senders ask for 16 MiB socket buffers",
        ),
        sysctl(
            "net.core.busy_poll",
            "50".into(),
            "poll/select busy-poll the NIC queue for 50 us before sleeping",
        ),
        sysctl(
            "net.core.busy_read",
            "50".into(),
            "blocking reads busy-poll the NIC queue for 50 us before sleeping",
        ),
        sysctl(
            "kernel.numa_balancing",
            "0".into(),
            "no NUMA hinting page faults on pinned threads",
        ),
        sysctl(
            "vm.swappiness",
            "1".into(),
            "swap only under real memory pressure",
        ),
    ];
    if isolated.is_empty() {
        return (String::new(), sysctls, Vec::new());
    }
    let iso = format_cpu_list(isolated.iter().copied());
    let cmdline = format!(
        "isolcpus=managed_irq,domain,{iso} nohz_full={iso} rcu_nocbs={iso} irqaffinity={hk}"
    );
    sysctls.push(sysctl(
        "kernel.watchdog_cpumask",
        hk.clone(),
        "run the lockup watchdog only on housekeeping cpus",
    ));
    sysctls.push(sysctl(
        "vm.stat_interval",
        "10".into(),
        "fold per-cpu vm statistics every 10 s, not every second",
    ));
    let mask = cpu_mask_hex(housekeeping.iter().copied());
    let commands = vec![
        "systemctl disable --now irqbalance".to_string(),
        format!("echo {mask} > /sys/devices/virtual/workqueue/cpumask"),
        format!("echo {mask} > /proc/irq/default_smp_affinity"),
        format!(
            "for irq in /proc/irq/[0-9]*; do echo {hk} > $irq/smp_affinity_list 2>/dev/null; done"
        ),
    ];
    (cmdline, sysctls, commands)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_print() {
        for kind in RoleKind::ALL {
            assert_eq!(kind.as_str().parse::<RoleKind>().unwrap(), kind);
        }
        assert_eq!(
            "Strategies".parse::<RoleKind>().unwrap(),
            RoleKind::Strategy
        );
        assert_eq!(
            "book-builder".parse::<RoleKind>().unwrap(),
            RoleKind::BookBuilder
        );
        assert!(matches!(
            "trader".parse::<RoleKind>(),
            Err(PlanError::UnknownKind(_))
        ));
    }

    #[test]
    fn role_lists_reject_bad_items() {
        assert_eq!(parse_roles(""), Err(PlanError::NoRoles));
        assert!(matches!(
            parse_roles("strategy:x"),
            Err(PlanError::BadRoleSpec { .. })
        ));
        assert_eq!(
            parse_roles("strategy:0"),
            Err(PlanError::ZeroCount("strategy".into()))
        );
        assert_eq!(
            parse_roles("strategy,strategy"),
            Err(PlanError::DuplicateRole("strategy".into()))
        );
        assert_eq!(
            parse_roles("a b=strategy"),
            Err(PlanError::BadName("a b".into()))
        );
        assert!(matches!(
            parse_roles("x=trader"),
            Err(PlanError::UnknownKind(_))
        ));
    }

    #[test]
    fn settings_name_the_sets() {
        let (cmd, sysctls, commands) = isolation_settings(&[2, 3, 4], &[0, 1]);
        assert_eq!(
            cmd,
            "isolcpus=managed_irq,domain,2-4 nohz_full=2-4 rcu_nocbs=2-4 irqaffinity=0-1"
        );
        assert!(
            sysctls
                .iter()
                .any(|s| s.key == "kernel.watchdog_cpumask" && s.value == "0-1")
        );
        assert!(
            commands
                .iter()
                .any(|c| c == "echo 3 > /proc/irq/default_smp_affinity")
        );
        let (cmd, _, commands) = isolation_settings(&[], &[0, 1]);
        assert!(cmd.is_empty() && commands.is_empty());
    }
}
