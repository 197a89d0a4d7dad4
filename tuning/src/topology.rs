//! The host's cpu topology: online cpus, physical cores (SMT siblings), packages, NUMA nodes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cpulist::{CpuSet, format_cpu_list, parse_cpu_list};
use crate::error::TuneError;
use crate::sysroot::SysRoot;

/// One online logical cpu (a hardware thread).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpu {
    /// Cpu number as the kernel counts it.
    pub id: usize,
    /// `topology/core_id`.
    pub core_id: usize,
    /// `topology/physical_package_id` (the socket).
    pub package: usize,
    /// NUMA node.
    pub node: usize,
    /// `topology/thread_siblings_list`: the hardware threads of the same physical core,
    /// this cpu included.
    pub siblings: Vec<usize>,
}

/// A physical core: one or more hardware threads that share execution units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhysicalCore {
    /// The hardware threads, lowest first.
    pub cpus: Vec<usize>,
    /// NUMA node of the first thread.
    pub node: usize,
    /// Package of the first thread.
    pub package: usize,
}

/// The cpu topology of a host, as [`plan`](crate::plan()) needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Online cpus, sorted by id.
    pub cpus: Vec<Cpu>,
    /// Cpus already isolated by the kernel (`/sys/devices/system/cpu/isolated`).
    pub isolated: Vec<usize>,
    /// What could not be read and what was assumed instead.
    pub notes: Vec<String>,
}

impl Topology {
    /// Reads the topology under `sys`: `/sys/devices/system/cpu/online`, each cpu's
    /// `topology/{core_id,physical_package_id,thread_siblings_list}`, and
    /// `/sys/devices/system/node/node*/cpulist`.
    ///
    /// Missing pieces are filled in with safe assumptions (each cpu its own core, package 0,
    /// node 0) and noted in [`Topology::notes`]. Only when not even the online cpus can be found
    /// (neither `/sys/devices/system/cpu/online` nor `/proc/cpuinfo`) is it an error.
    pub fn read(sys: &SysRoot) -> Result<Topology, TuneError> {
        let mut notes = Vec::new();
        let online = match sys.read("/sys/devices/system/cpu/online") {
            Ok(text) => parse_cpu_list(&text, None).map_err(|reason| TuneError::Parse {
                path: "/sys/devices/system/cpu/online".into(),
                reason,
            })?,
            Err(err) => {
                let cpuinfo = sys.read("/proc/cpuinfo").map_err(|_| err)?;
                let count = cpuinfo
                    .lines()
                    .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
                    .count();
                notes.push(format!(
                    "/sys/devices/system/cpu/online is missing: assumed cpus 0-{} from \
                     /proc/cpuinfo",
                    count.saturating_sub(1)
                ));
                (0..count).collect()
            }
        };
        if online.is_empty() {
            return Err(TuneError::Parse {
                path: "/sys/devices/system/cpu/online".into(),
                reason: "no online cpu".into(),
            });
        }

        let node_of = read_nodes(sys, &mut notes);
        let mut cpus = Vec::new();
        let mut missing_topology = Vec::new();
        for &id in &online {
            let base = format!("/sys/devices/system/cpu/cpu{id}/topology");
            let core_id = sys.read_int(&format!("{base}/core_id")).ok();
            let package = sys.read_int(&format!("{base}/physical_package_id")).ok();
            let siblings = sys
                .read(&format!("{base}/thread_siblings_list"))
                .ok()
                .and_then(|t| parse_cpu_list(&t, None).ok());
            if core_id.is_none() || siblings.is_none() {
                missing_topology.push(id);
            }
            let mut siblings: CpuSet = siblings
                .unwrap_or_default()
                .intersection(&online)
                .copied()
                .collect();
            siblings.insert(id);
            cpus.push(Cpu {
                id,
                core_id: core_id.and_then(|v| usize::try_from(v).ok()).unwrap_or(id),
                // physical_package_id is -1 on some virtual machines.
                package: package.and_then(|v| usize::try_from(v).ok()).unwrap_or(0),
                node: node_of.get(&id).copied().unwrap_or(0),
                siblings: siblings.into_iter().collect(),
            });
        }
        if !missing_topology.is_empty() {
            notes.push(format!(
                "no core topology for cpus {}: each is taken as its own physical core",
                format_cpu_list(missing_topology)
            ));
        }
        let isolated = sys
            .read("/sys/devices/system/cpu/isolated")
            .ok()
            .and_then(|t| parse_cpu_list(&t, None).ok())
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(Topology {
            cpus,
            isolated,
            notes,
        })
    }

    /// A made-up topology: `nodes` NUMA nodes (one package each) of `cores_per_node` physical
    /// cores with `threads_per_core` hardware threads. Cpus are numbered the way Linux numbers
    /// Intel parts: first thread 0 of every core, then thread 1 of every core, so the siblings
    /// of cpu `c` are `c + k * nodes * cores_per_node`.
    ///
    /// ```
    /// use mdbus_tuning::Topology;
    /// let t = Topology::synthetic(1, 4, 2);
    /// assert_eq!(t.cpus.len(), 8);
    /// assert_eq!(t.cpus[1].siblings, vec![1, 5]);
    /// ```
    pub fn synthetic(nodes: usize, cores_per_node: usize, threads_per_core: usize) -> Topology {
        let cores = nodes * cores_per_node;
        let mut cpus = Vec::new();
        for thread in 0..threads_per_core {
            for node in 0..nodes {
                for core in 0..cores_per_node {
                    let first = node * cores_per_node + core;
                    cpus.push(Cpu {
                        id: thread * cores + first,
                        core_id: core,
                        package: node,
                        node,
                        siblings: (0..threads_per_core).map(|t| t * cores + first).collect(),
                    });
                }
            }
        }
        Topology::from_cpus(cpus)
    }

    /// A topology from a list of cpus (sorted by id; duplicate ids keep the first).
    pub fn from_cpus(mut cpus: Vec<Cpu>) -> Topology {
        cpus.sort_by_key(|c| c.id);
        cpus.dedup_by_key(|c| c.id);
        Topology {
            cpus,
            isolated: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The same topology with only `cpus` online (for example the cpus this process may run
    /// on): what a plan for this process may use.
    ///
    /// ```
    /// use mdbus_tuning::Topology;
    /// let t = Topology::synthetic(1, 4, 1).restricted_to(&[2, 3]);
    /// assert_eq!(t.cpu_ids(), vec![2, 3]);
    /// ```
    pub fn restricted_to(&self, cpus: &[usize]) -> Topology {
        Topology {
            cpus: self
                .cpus
                .iter()
                .filter(|c| cpus.contains(&c.id))
                .cloned()
                .collect(),
            isolated: self.isolated.clone(),
            notes: self.notes.clone(),
        }
    }

    /// The physical cores, ordered by their lowest cpu. Cpus that name each other as
    /// `siblings` form one core.
    pub fn physical_cores(&self) -> Vec<PhysicalCore> {
        let online: BTreeSet<usize> = self.cpus.iter().map(|c| c.id).collect();
        let mut groups: BTreeMap<Vec<usize>, PhysicalCore> = BTreeMap::new();
        for cpu in &self.cpus {
            let mut key: Vec<usize> = cpu
                .siblings
                .iter()
                .copied()
                .filter(|s| online.contains(s))
                .collect();
            key.push(cpu.id);
            key.sort_unstable();
            key.dedup();
            groups.entry(key.clone()).or_insert(PhysicalCore {
                cpus: Vec::new(),
                node: cpu.node,
                package: cpu.package,
            });
            if let Some(core) = groups.get_mut(&key) {
                core.cpus.push(cpu.id);
            }
        }
        let mut cores: Vec<PhysicalCore> = groups.into_values().collect();
        for core in &mut cores {
            core.cpus.sort_unstable();
        }
        cores.sort_by_key(|c| c.cpus.first().copied());
        cores
    }

    /// The NUMA nodes that have online cpus, sorted.
    pub fn nodes(&self) -> Vec<usize> {
        let set: BTreeSet<usize> = self.cpus.iter().map(|c| c.node).collect();
        set.into_iter().collect()
    }

    /// The online cpu ids, sorted.
    pub fn cpu_ids(&self) -> Vec<usize> {
        self.cpus.iter().map(|c| c.id).collect()
    }
}

/// Cpu -> node from `/sys/devices/system/node/node*/cpulist`.
fn read_nodes(sys: &SysRoot, notes: &mut Vec<String>) -> BTreeMap<usize, usize> {
    let mut map = BTreeMap::new();
    let Ok(names) = sys.list_dir("/sys/devices/system/node") else {
        notes.push("/sys/devices/system/node is missing: all cpus taken as NUMA node 0".into());
        return map;
    };
    for name in names {
        let Some(node) = name
            .strip_prefix("node")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let path = format!("/sys/devices/system/node/{name}/cpulist");
        match sys.read(&path).map(|t| parse_cpu_list(&t, None)) {
            Ok(Ok(cpus)) => {
                for cpu in cpus {
                    map.insert(cpu, node);
                }
            }
            Ok(Err(reason)) => notes.push(format!("cannot parse {path}: {reason}")),
            Err(err) => notes.push(err.to_string()),
        }
    }
    map
}

/// The NUMA nodes and their cpus, as `(node, cpus)` pairs; `None` when the node directory is
/// missing. Used by the checks.
pub(crate) fn node_cpus(sys: &SysRoot) -> Option<Vec<(usize, CpuSet)>> {
    let names = sys.list_dir("/sys/devices/system/node").ok()?;
    let mut nodes = Vec::new();
    for name in names {
        let Some(node) = name
            .strip_prefix("node")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let cpus = sys
            .read(&format!("/sys/devices/system/node/{name}/cpulist"))
            .ok()
            .and_then(|t| parse_cpu_list(&t, None).ok())
            .unwrap_or_default();
        nodes.push((node, cpus));
    }
    Some(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_smt_cores() {
        let t = Topology::synthetic(2, 2, 2);
        let cores = t.physical_cores();
        let cpus: Vec<Vec<usize>> = cores.iter().map(|c| c.cpus.clone()).collect();
        assert_eq!(cpus, vec![vec![0, 4], vec![1, 5], vec![2, 6], vec![3, 7]]);
        assert_eq!(cores[2].node, 1);
        assert_eq!(t.nodes(), vec![0, 1]);
    }

    #[test]
    fn siblings_outside_online_are_ignored() {
        let t = Topology::from_cpus(vec![
            Cpu {
                id: 0,
                core_id: 0,
                package: 0,
                node: 0,
                siblings: vec![0, 2],
            },
            Cpu {
                id: 1,
                core_id: 1,
                package: 0,
                node: 0,
                siblings: vec![],
            },
        ]);
        let cpus: Vec<Vec<usize>> = t.physical_cores().into_iter().map(|c| c.cpus).collect();
        assert_eq!(cpus, vec![vec![0], vec![1]]);
    }
}
