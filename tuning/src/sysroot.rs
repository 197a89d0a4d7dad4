//! Where the checks and the topology reader get their facts from.
//!
//! Files come from a [`SysRoot`]: a root path prefix (`/` on a live host, a fixture directory in
//! tests) under which `/proc/...` and `/sys/...` are read. Facts that are not files (resource
//! limits, capabilities, the effective uid, file-system sizes, running processes) come from a
//! [`HostFacts`] implementation: [`LiveHost`] asks the kernel, [`StaticFacts`] answers from a
//! TOML file or a struct filled in by a test.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::TuneError;

/// A root path prefix plus the provider of non-file facts.
///
/// ```
/// use mdbus_tuning::SysRoot;
/// let host = SysRoot::host();
/// assert_eq!(host.path("/proc/cmdline"), std::path::Path::new("/proc/cmdline"));
/// ```
#[derive(Clone)]
pub struct SysRoot {
    root: PathBuf,
    facts: Arc<dyn HostFacts>,
}

impl fmt::Debug for SysRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SysRoot")
            .field("root", &self.root)
            .field("facts", &self.facts)
            .finish()
    }
}

impl Default for SysRoot {
    fn default() -> Self {
        SysRoot::host()
    }
}

impl SysRoot {
    /// The live host: root `/`, facts from the kernel ([`LiveHost`]).
    pub fn host() -> Self {
        SysRoot {
            root: PathBuf::from("/"),
            facts: Arc::new(LiveHost),
        }
    }

    /// A tree rooted at `root` (for example a copy of another host's `/proc` and `/sys`, or a
    /// test fixture), with the given facts provider.
    pub fn new(root: impl Into<PathBuf>, facts: impl HostFacts + 'static) -> Self {
        SysRoot {
            root: root.into(),
            facts: Arc::new(facts),
        }
    }

    /// The root path prefix.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The provider of non-file facts.
    pub fn facts(&self) -> &dyn HostFacts {
        &*self.facts
    }

    /// The real path of `host_path` (an absolute path as seen on the host) under this root.
    pub fn path(&self, host_path: &str) -> PathBuf {
        self.root.join(host_path.trim_start_matches('/'))
    }

    /// Reads a file as text, trimmed of surrounding whitespace. Errors name the host path.
    pub fn read(&self, host_path: &str) -> Result<String, TuneError> {
        std::fs::read_to_string(self.path(host_path))
            .map(|text| text.trim().to_string())
            .map_err(|source| TuneError::Read {
                path: host_path.to_string(),
                source,
            })
    }

    /// Reads a file and parses it as an integer.
    pub fn read_int(&self, host_path: &str) -> Result<i64, TuneError> {
        let text = self.read(host_path)?;
        text.parse().map_err(|_| TuneError::Parse {
            path: host_path.to_string(),
            reason: format!("{text:?} is not an integer"),
        })
    }

    /// The entry names of a directory, sorted (numbers in numeric order when both are numbers).
    pub fn list_dir(&self, host_path: &str) -> Result<Vec<String>, TuneError> {
        let read_err = |source| TuneError::Read {
            path: host_path.to_string(),
            source,
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(self.path(host_path)).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort_by(|a, b| natural_cmp(a, b));
        Ok(names)
    }

    /// Whether `host_path` exists under this root.
    pub fn exists(&self, host_path: &str) -> bool {
        self.path(host_path).exists()
    }

    /// The names (`comm`) of running processes: from [`HostFacts::processes`] when it answers,
    /// else by scanning `/proc/<pid>/comm` under the root. `None` when neither works.
    pub fn processes(&self) -> Option<Vec<String>> {
        if let Some(list) = self.facts.processes() {
            return Some(list);
        }
        let pids = self.list_dir("/proc").ok()?;
        let mut names = Vec::new();
        for pid in pids
            .iter()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        {
            // A process may exit between the listing and the read: skip it.
            if let Ok(comm) = self.read(&format!("/proc/{pid}/comm")) {
                names.push(comm);
            }
        }
        Some(names)
    }
}

/// Orders `cpu10` after `cpu9` and `10` after `9`: digit runs compare as numbers.
pub(crate) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn split(s: &str) -> (&str, Option<u64>) {
        let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (head, tail) = s.split_at(s.len() - digits);
        (head, tail.parse().ok())
    }
    let (ha, na) = split(a);
    let (hb, nb) = split(b);
    ha.cmp(hb).then(na.cmp(&nb)).then(a.cmp(b))
}

/// A resource limit that the checks ask about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// `RLIMIT_MEMLOCK`: bytes of memory that may be locked.
    Memlock,
    /// `RLIMIT_RTPRIO`: highest real-time priority an unprivileged process may set.
    Rtprio,
}

/// One side of a resource limit: a number or unlimited. In TOML and JSON it is an integer or
/// the string `"unlimited"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitValue {
    /// `RLIM_INFINITY`.
    Unlimited,
    /// A finite limit.
    Finite(u64),
}

impl LimitValue {
    /// The finite value, or `None` when unlimited.
    pub fn finite(self) -> Option<u64> {
        match self {
            LimitValue::Unlimited => None,
            LimitValue::Finite(n) => Some(n),
        }
    }

    /// Whether the value is at least `n` (unlimited always is).
    pub fn at_least(self, n: u64) -> bool {
        self.finite().is_none_or(|v| v >= n)
    }
}

impl Serialize for LimitValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LimitValue::Unlimited => s.serialize_str("unlimited"),
            LimitValue::Finite(n) => s.serialize_u64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for LimitValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(LimitValue::Finite(n)),
            Raw::Text(t) if t == "unlimited" => Ok(LimitValue::Unlimited),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "limit {t:?} must be a number or \"unlimited\""
            ))),
        }
    }
}

impl fmt::Display for LimitValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitValue::Unlimited => f.write_str("unlimited"),
            LimitValue::Finite(n) => write!(f, "{n}"),
        }
    }
}

/// A soft and hard resource limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// The limit in force (`ulimit -S`).
    pub soft: LimitValue,
    /// The ceiling the soft limit may be raised to without privilege (`ulimit -H`).
    pub hard: LimitValue,
}

/// Size and free space of a file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsSpace {
    /// Total size in bytes.
    pub total_bytes: u64,
    /// Bytes available to an unprivileged user.
    pub available_bytes: u64,
}

/// Linux capability number of `CAP_IPC_LOCK` (lock memory beyond `RLIMIT_MEMLOCK`).
pub const CAP_IPC_LOCK: u32 = 14;
/// Linux capability number of `CAP_SYS_NICE` (real-time scheduling, affinity of others).
pub const CAP_SYS_NICE: u32 = 23;

/// Facts about the host that are not plain files. Each answer is `None` when unknown.
pub trait HostFacts: fmt::Debug + Send + Sync {
    /// The soft and hard limit of `resource` for this process.
    fn rlimit(&self, resource: Resource) -> Option<Limit>;
    /// The effective user id of this process.
    fn euid(&self) -> Option<u32>;
    /// The effective capability set of this process, as a bit mask (`CapEff`).
    fn capabilities(&self) -> Option<u64>;
    /// Size and free space of the file system at `host_path` (for example `/dev/shm`).
    fn statvfs(&self, host_path: &str) -> Option<FsSpace>;
    /// Names of running processes. The default, `None`, makes
    /// [`SysRoot::processes`] scan `/proc/<pid>/comm` under the root instead.
    fn processes(&self) -> Option<Vec<String>> {
        None
    }
}

/// Facts from the running kernel: `getrlimit`, `geteuid`, `CapEff` of `/proc/self/status`,
/// `statvfs`. Processes come from the `/proc` scan.
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveHost;

impl HostFacts for LiveHost {
    fn rlimit(&self, resource: Resource) -> Option<Limit> {
        let which = match resource {
            Resource::Memlock => libc::RLIMIT_MEMLOCK,
            Resource::Rtprio => libc::RLIMIT_RTPRIO,
        };
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid, writable rlimit struct that outlives the call; getrlimit
        // only writes into it.
        let rc = unsafe { libc::getrlimit(which, &mut lim) };
        if rc != 0 {
            return None;
        }
        let conv = |v: libc::rlim_t| {
            if v == libc::RLIM_INFINITY {
                LimitValue::Unlimited
            } else {
                LimitValue::Finite(v)
            }
        };
        Some(Limit {
            soft: conv(lim.rlim_cur),
            hard: conv(lim.rlim_max),
        })
    }

    fn euid(&self) -> Option<u32> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        Some(unsafe { libc::geteuid() })
    }

    fn capabilities(&self) -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        parse_cap_eff(&status)
    }

    fn statvfs(&self, host_path: &str) -> Option<FsSpace> {
        let path = CString::new(host_path).ok()?;
        // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is a NUL-terminated string and `st` a writable statvfs, both alive for
        // the whole call.
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
        if rc != 0 {
            return None;
        }
        // The field types are u32 or u64 depending on the target; `from` is a no-op on 64-bit.
        #[allow(clippy::useless_conversion)]
        let (frsize, blocks, avail) = (
            u64::from(st.f_frsize),
            u64::from(st.f_blocks),
            u64::from(st.f_bavail),
        );
        Some(FsSpace {
            total_bytes: blocks.saturating_mul(frsize),
            available_bytes: avail.saturating_mul(frsize),
        })
    }
}

/// Reads the `CapEff:` hex mask out of a `/proc/<pid>/status` text.
pub(crate) fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// Facts given in advance: for tests, and for checking a copy of another host's `/proc` and
/// `/sys` trees. Every field is optional; what is absent is unknown.
///
/// As TOML (the fixtures' `facts.toml`):
///
/// ```toml
/// euid = 1000
/// capabilities = 0
/// memlock = { soft = 8388608, hard = "unlimited" }
/// rtprio = { soft = 0, hard = 0 }
/// processes = ["systemd", "irqbalance"]
/// [statvfs."/dev/shm"]
/// total_bytes = 8589934592
/// available_bytes = 8589934592
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StaticFacts {
    /// `RLIMIT_MEMLOCK`.
    pub memlock: Option<Limit>,
    /// `RLIMIT_RTPRIO`.
    pub rtprio: Option<Limit>,
    /// Effective uid.
    pub euid: Option<u32>,
    /// Effective capability mask.
    pub capabilities: Option<u64>,
    /// File-system sizes by host path.
    pub statvfs: BTreeMap<String, FsSpace>,
    /// Running process names; absent means "scan /proc under the root".
    pub processes: Option<Vec<String>>,
}

impl StaticFacts {
    /// Parses facts from TOML text; `origin` names the source in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, TuneError> {
        toml::from_str(text).map_err(|e| TuneError::Parse {
            path: origin.to_string(),
            reason: e.to_string(),
        })
    }

    /// Loads facts from a TOML file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, TuneError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TuneError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }
}

impl HostFacts for StaticFacts {
    fn rlimit(&self, resource: Resource) -> Option<Limit> {
        match resource {
            Resource::Memlock => self.memlock,
            Resource::Rtprio => self.rtprio,
        }
    }

    fn euid(&self) -> Option<u32> {
        self.euid
    }

    fn capabilities(&self) -> Option<u64> {
        self.capabilities
    }

    fn statvfs(&self, host_path: &str) -> Option<FsSpace> {
        self.statvfs.get(host_path).copied()
    }

    fn processes(&self) -> Option<Vec<String>> {
        self.processes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["cpu10", "cpu2", "cpu1", "cpufreq", "cpu0"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, vec!["cpu0", "cpu1", "cpu2", "cpu10", "cpufreq"]);
    }

    #[test]
    fn cap_eff_parses() {
        let status = "Name:\tx\nCapPrm:\t0000000000000000\nCapEff:\t0000000000800000\n";
        assert_eq!(parse_cap_eff(status), Some(1 << CAP_SYS_NICE));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn static_facts_toml() {
        let facts = StaticFacts::from_toml_str(
            "euid = 0\nmemlock = { soft = 65536, hard = \"unlimited\" }\n\
             [statvfs.\"/dev/shm\"]\ntotal_bytes = 10\navailable_bytes = 5\n",
            "test",
        )
        .unwrap();
        assert_eq!(facts.euid(), Some(0));
        assert_eq!(
            facts.rlimit(Resource::Memlock),
            Some(Limit {
                soft: LimitValue::Finite(65536),
                hard: LimitValue::Unlimited
            })
        );
        assert_eq!(facts.rlimit(Resource::Rtprio), None);
        assert_eq!(facts.statvfs("/dev/shm").map(|s| s.total_bytes), Some(10));
        let bad = StaticFacts::from_toml_str("memlock = { soft = \"lots\", hard = 1 }", "x.toml");
        assert!(bad.unwrap_err().to_string().contains("x.toml"));
    }

    #[test]
    fn live_host_answers() {
        let host = LiveHost;
        assert!(host.rlimit(Resource::Memlock).is_some());
        assert!(host.euid().is_some());
    }
}
