//! The core layout file: which cpu each role's threads run on.
//!
//! Written by `mdbus tune plan` ([`plan`](crate::plan())), read by the bus, the feed handlers and
//! the bench harness to pin their threads. A layout is TOML:
//!
//! ```toml
//! version = 1
//! housekeeping = [0, 4]
//! isolated = [1, 2, 5, 6]
//! kernel_cmdline = "isolcpus=managed_irq,domain,1-2,5-6 nohz_full=1-2,5-6 rcu_nocbs=1-2,5-6 irqaffinity=0,3-4,7"
//!
//! [runtime]
//! lock_memory = true
//! prefault_stack = 262144
//!
//! [roles.feed_handler]
//! kind = "feed_handler"
//! cores = [1]
//!
//! [roles.strategy]
//! kind = "strategy"
//! cores = [2, 3]
//! priority = 50        # optional: SCHED_FIFO priority for these threads
//! ```
//!
//! Instance `i` of a role runs on `cores[i]` ([`Layout::core_for`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cpulist::{MAX_CPU, format_cpu_list};
use crate::error::TuneError;
use crate::plan::RoleKind;

/// The layout file format version this crate reads and writes.
pub const LAYOUT_VERSION: u32 = 1;

/// Default stack prefault size for [`RuntimeSettings::prefault_stack`]: 256 KiB.
pub const DEFAULT_PREFAULT_STACK: usize = 256 * 1024;

/// A core layout: the cpus of each role, plus the host settings that isolate them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// File format version, [`LAYOUT_VERSION`].
    pub version: u32,
    /// Cpus left to the OS, interrupts and background work.
    pub housekeeping: Vec<usize>,
    /// Cpus to isolate from the scheduler, timers, RCU and interrupts.
    pub isolated: Vec<usize>,
    /// Kernel command line parameters that isolate [`Layout::isolated`].
    #[serde(default)]
    pub kernel_cmdline: String,
    /// Where the plan had to compromise (shared cores, spanning NUMA nodes).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Informational remarks (idle SMT siblings, cores already isolated).
    #[serde(default)]
    pub notes: Vec<String>,
    /// Commands (run as root, once per boot) that complete the isolation.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Process-wide runtime settings that [`apply_role`](crate::apply_role) applies.
    #[serde(default)]
    pub runtime: RuntimeSettings,
    /// The roles by name.
    pub roles: BTreeMap<String, RoleLayout>,
    /// Sysctls to set (for example in `/etc/sysctl.d/90-mdbus.conf`).
    #[serde(default)]
    pub sysctls: Vec<Sysctl>,
}

/// Where one role's threads run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleLayout {
    /// What the role does.
    pub kind: RoleKind,
    /// Cpu of each instance: instance `i` runs on `cores[i]`.
    pub cores: Vec<usize>,
    /// SCHED_FIFO priority (1-99) for this role's threads; absent means normal scheduling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

/// Process-wide runtime settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Lock all current and future memory (`mlockall`).
    #[serde(default = "default_true")]
    pub lock_memory: bool,
    /// Bytes of stack to touch at thread start (0: none).
    #[serde(default = "default_prefault")]
    pub prefault_stack: usize,
}

fn default_true() -> bool {
    true
}

fn default_prefault() -> usize {
    DEFAULT_PREFAULT_STACK
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            lock_memory: true,
            prefault_stack: DEFAULT_PREFAULT_STACK,
        }
    }
}

/// One sysctl with the reason for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sysctl {
    /// The key, for example `vm.stat_interval`.
    pub key: String,
    /// The value to write.
    pub value: String,
    /// Why, in one line.
    #[serde(default)]
    pub why: String,
}

impl Layout {
    /// The cpu of instance `index` of `role`, or `None` when the role is not in the layout or
    /// has fewer cores listed.
    pub fn core_for(&self, role: &str, index: usize) -> Option<usize> {
        self.roles.get(role)?.cores.get(index).copied()
    }

    /// The layout of `role`, if present.
    pub fn role(&self, role: &str) -> Option<&RoleLayout> {
        self.roles.get(role)
    }

    /// Parses and validates a layout from TOML text; `origin` names the source in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Layout, TuneError> {
        let layout: Layout = toml::from_str(text).map_err(|e| TuneError::Parse {
            path: origin.to_string(),
            reason: e.to_string(),
        })?;
        layout.validate().map_err(|reason| TuneError::Parse {
            path: origin.to_string(),
            reason,
        })?;
        Ok(layout)
    }

    /// Loads and validates a layout file.
    pub fn load(path: impl AsRef<Path>) -> Result<Layout, TuneError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TuneError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// The layout as TOML text, with a header comment. Cpu lists stay on one line; lists of
    /// sentences (warnings, notes, commands) get one line per item.
    pub fn to_toml(&self) -> String {
        #[derive(Serialize)]
        struct Head<'a> {
            version: u32,
            housekeeping: &'a [usize],
            isolated: &'a [usize],
            kernel_cmdline: &'a str,
        }
        #[derive(Serialize)]
        struct Lists<'a> {
            warnings: &'a [String],
            notes: &'a [String],
            commands: &'a [String],
        }
        #[derive(Serialize)]
        struct Tables<'a> {
            runtime: &'a RuntimeSettings,
            roles: &'a BTreeMap<String, RoleLayout>,
            sysctls: &'a [Sysctl],
        }
        let head = Head {
            version: self.version,
            housekeeping: &self.housekeeping,
            isolated: &self.isolated,
            kernel_cmdline: &self.kernel_cmdline,
        };
        let lists = Lists {
            warnings: &self.warnings,
            notes: &self.notes,
            commands: &self.commands,
        };
        let tables = Tables {
            runtime: &self.runtime,
            roles: &self.roles,
            sysctls: &self.sysctls,
        };
        // Plain strings, numbers, lists and maps: serialisation cannot fail, but an error
        // still ends up visible in the text rather than as a panic.
        let parts = [
            toml::to_string(&head),
            toml::to_string_pretty(&lists),
            toml::to_string(&tables),
        ];
        let mut out = String::from(
            "# mdbus core layout (`mdbus tune plan`). Instance i of a role runs on cores[i].\n\
             # Optional per role: priority = 1..99 (SCHED_FIFO).\n",
        );
        for part in parts {
            match part {
                Ok(text) => out.push_str(&text),
                Err(e) => out.push_str(&format!("# cannot serialise layout: {e}\n")),
            }
            if !out.ends_with("\n\n") {
                out.push('\n');
            }
        }
        out
    }

    /// Writes the layout to `path` as TOML.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), TuneError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_toml()).map_err(|source| TuneError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Checks what serde cannot: the version, cpu numbers and priorities in range.
    pub fn validate(&self) -> Result<(), String> {
        if self.version != LAYOUT_VERSION {
            return Err(format!(
                "layout version {} is not supported (this build reads version {LAYOUT_VERSION})",
                self.version
            ));
        }
        for (name, role) in &self.roles {
            if let Some(&cpu) = role.cores.iter().find(|&&c| c >= MAX_CPU) {
                return Err(format!("role {name:?}: cpu {cpu} is out of range"));
            }
            if let Some(p) = role.priority
                && !(1..=99).contains(&p)
            {
                return Err(format!(
                    "role {name:?}: priority {p} is outside 1..=99 (SCHED_FIFO)"
                ));
            }
        }
        if let Some(&cpu) = self
            .housekeeping
            .iter()
            .chain(&self.isolated)
            .find(|&&c| c >= MAX_CPU)
        {
            return Err(format!("cpu {cpu} is out of range"));
        }
        Ok(())
    }
}

impl fmt::Display for Layout {
    /// The plan as an operator reads it: roles and cores, isolation, kernel parameters,
    /// sysctls, commands, warnings.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name_w = self.roles.keys().map(|n| n.len()).max().unwrap_or(4).max(4);
        writeln!(f, "{:<name_w$}  {:<12}  cores", "role", "kind")?;
        for (name, role) in &self.roles {
            let cores: Vec<String> = role.cores.iter().map(|c| c.to_string()).collect();
            write!(
                f,
                "{name:<name_w$}  {:<12}  {}",
                role.kind.as_str(),
                cores.join(", ")
            )?;
            if let Some(p) = role.priority {
                write!(f, "  (SCHED_FIFO {p})")?;
            }
            writeln!(f)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "housekeeping cpus: {}",
            or_none(&format_cpu_list(self.housekeeping.iter().copied()))
        )?;
        writeln!(
            f,
            "isolated cpus:     {}",
            or_none(&format_cpu_list(self.isolated.iter().copied()))
        )?;
        if !self.kernel_cmdline.is_empty() {
            writeln!(
                f,
                "\nkernel command line (add, then reboot):\n  {}",
                self.kernel_cmdline
            )?;
        }
        if !self.sysctls.is_empty() {
            writeln!(f, "\nsysctls (/etc/sysctl.d/90-mdbus.conf):")?;
            let w = self
                .sysctls
                .iter()
                .map(|s| s.key.len() + s.value.len() + 3)
                .max()
                .unwrap_or(0);
            for s in &self.sysctls {
                let setting = format!("{} = {}", s.key, s.value);
                writeln!(f, "  {setting:<w$}  # {}", s.why)?;
            }
        }
        if !self.commands.is_empty() {
            writeln!(f, "\nafter each boot, as root:")?;
            for c in &self.commands {
                writeln!(f, "  {c}")?;
            }
        }
        if !self.notes.is_empty() {
            writeln!(f, "\nnotes:")?;
            for n in &self.notes {
                writeln!(f, "  - {n}")?;
            }
        }
        if !self.warnings.is_empty() {
            writeln!(f, "\nwarnings:")?;
            for w in &self.warnings {
                writeln!(f, "  - {w}")?;
            }
        }
        Ok(())
    }
}

fn or_none(s: &str) -> &str {
    if s.is_empty() { "(none)" } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Layout {
        let mut roles = BTreeMap::new();
        roles.insert(
            "feed_handler".to_string(),
            RoleLayout {
                kind: RoleKind::FeedHandler,
                cores: vec![2],
                priority: Some(50),
            },
        );
        roles.insert(
            "strategy".to_string(),
            RoleLayout {
                kind: RoleKind::Strategy,
                cores: vec![3, 4],
                priority: None,
            },
        );
        Layout {
            version: LAYOUT_VERSION,
            housekeeping: vec![0, 1],
            isolated: vec![2, 3, 4],
            kernel_cmdline: "isolcpus=2-4".into(),
            warnings: vec!["w".into()],
            notes: vec![],
            commands: vec!["echo 3 > /proc/irq/default_smp_affinity".into()],
            runtime: RuntimeSettings::default(),
            roles,
            sysctls: vec![Sysctl {
                key: "vm.stat_interval".into(),
                value: "10".into(),
                why: "fewer vmstat updates".into(),
            }],
        }
    }

    #[test]
    fn toml_round_trip_in_memory() {
        let layout = sample();
        let text = layout.to_toml();
        assert!(text.contains("[roles.feed_handler]"), "{text}");
        let back = Layout::from_toml_str(&text, "mem").unwrap();
        assert_eq!(back, layout);
        assert_eq!(back.core_for("strategy", 1), Some(4));
        assert_eq!(back.core_for("strategy", 2), None);
        assert_eq!(back.core_for("nope", 0), None);
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let layout = Layout::from_toml_str(
            "version = 1\nhousekeeping = [0]\nisolated = [1]\n\
             [roles.feed_handler]\nkind = \"feed_handler\"\ncores = [1]\n",
            "min.toml",
        )
        .unwrap();
        assert!(layout.runtime.lock_memory);
        assert_eq!(layout.runtime.prefault_stack, DEFAULT_PREFAULT_STACK);
        assert_eq!(layout.core_for("feed_handler", 0), Some(1));
    }

    #[test]
    fn bad_files_name_themselves() {
        let cases = [
            (
                "version = 2\nhousekeeping = []\nisolated = []\n[roles]\n",
                "version 2",
            ),
            (
                "version = 1\nhousekeeping = []\nisolated = []\n[roles.a]\nkind = \"strategy\"\n\
                 cores = [1]\npriority = 100\n",
                "priority 100",
            ),
            (
                "version = 1\nhousekeeping = []\nisolated = []\n[roles.a]\nkind = \"strategy\"\n\
                 core = [1]\n",
                "core",
            ),
            (
                "version = 1\nhousekeeping = []\nisolated = []\n[roles.a]\nkind = \"trader\"\n\
                 cores = [1]\n",
                "trader",
            ),
            ("not toml at all [", "bad.toml"),
        ];
        for (text, expect) in cases {
            let err = Layout::from_toml_str(text, "bad.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains("bad.toml"), "{err}");
            assert!(err.contains(expect), "{err} should mention {expect}");
        }
    }
}
