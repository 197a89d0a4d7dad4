//! Where a command's threads run: the one helper behind `--layout FILE` (and `MDBUS_LAYOUT`)
//! of `mdbus bench ring|replay|all`, `mdbus replay` and `mdbus demo`.
//!
//! A command names its long-running threads and, for each, the roles of a core layout
//! (`mdbus tune plan --out FILE`) it may take its cpu from, first match wins:
//!
//! | command | thread | layout roles |
//! |---|---|---|
//! | `bench ring` | producer (pinger) | `producer`, else `feed_handler` |
//! | `bench ring` | consumer (echo) | `consumer`, else `strategy` |
//! | `bench replay`, `demo` | feed handler | `feed_handler` |
//! | `bench replay`, `demo` | book builder | `book_builder` |
//! | `bench replay`, `demo` | strategy | `strategy` |
//! | `replay` | feed handler | `feed_handler` |
//! | `replay --book` | book builder | `book_builder` |
//! | `bench udp` (4 cpus) | producer | `producer`, else `feed_handler` |
//! | `bench udp` (4 cpus) | sender | `sender` |
//! | `bench udp` (4 cpus) | receiver | `receiver` |
//! | `bench udp` (4 cpus) | consumer | `consumer`, else `strategy` |
//! | `bench udp` (2 cpus) | producer+consumer | `producer`, else `feed_handler` |
//! | `bench udp` (2 cpus) | sender+receiver | `sender`, `receiver`, `consumer` or `strategy` |
//!
//! Each thread uses instance 0 of its role. The precedence is: an explicit `--cores` /
//! `--cpus` flag, then `--layout FILE`, then `$MDBUS_LAYOUT`, then the command's default.
//! With a layout, every thread calls [`mdbus_tuning::apply_role`] (or
//! [`mdbus_tuning::apply_role_at`] when a flag chose its cpu) at start: it is named
//! `<role>-0`, pinned, memory is locked and the stack prefaulted when the layout's `[runtime]`
//! asks, and it runs SCHED_FIFO when the role has a `priority`. What could not be applied (no
//! permission for SCHED_FIFO, a memlock limit) is collected as a warning for the command's
//! report; a layout that names a cpu this process cannot run on is an error before any
//! thread starts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mdbus_tuning::{Action, Layout, StepOutcome};
use serde::{Deserialize, Serialize};

/// The environment variable that names the layout file when `--layout` is not given.
pub const LAYOUT_ENV: &str = "MDBUS_LAYOUT";

/// `--layout FILE`, defaulting to `$MDBUS_LAYOUT`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LayoutArg {
    /// Pin the threads to the cores of their roles in this core layout (written by
    /// `mdbus tune plan --out FILE`) and apply its runtime settings (SCHED_FIFO priority,
    /// mlockall, stack prefault, thread names); an explicit --cpus still chooses the cores
    /// [default: $MDBUS_LAYOUT when set].
    #[arg(long, value_name = "FILE")]
    pub layout: Option<PathBuf>,
}

impl LayoutArg {
    /// The layout file to use: `--layout`, else a non-empty `$MDBUS_LAYOUT`.
    pub fn path(&self) -> Option<PathBuf> {
        self.layout.clone().or_else(|| {
            std::env::var_os(LAYOUT_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }
}

/// A long-running thread of a command and the layout roles it may take its cpu from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadRole {
    /// What the command calls the thread (`producer`, `feed handler`).
    pub thread: &'static str,
    /// Role names looked up in the layout, in order; the first one present is used.
    pub roles: &'static [&'static str],
}

/// Where one thread runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedThread {
    /// What the command calls the thread.
    pub thread: String,
    /// The layout role it took (instance 0), if any.
    pub role: Option<String>,
    /// Its cpu.
    pub cpu: usize,
    /// Whether the cpu came from the layout (false: from a flag or the command's default).
    pub from_layout: bool,
}

/// The layout a run used, as recorded in its report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutUse {
    /// The layout file.
    pub file: String,
    /// Each thread's role and cpu.
    pub threads: Vec<PinnedThread>,
}

/// What can be wrong with a placement.
#[derive(Debug, thiserror::Error)]
pub enum PinningError {
    /// The layout file could not be read or is not a valid layout.
    #[error("layout: {0}")]
    Layout(#[source] mdbus_tuning::TuneError),
    /// The layout lacks every role a thread may use.
    #[error(
        "layout {file}: no role {wanted} for the {thread} thread (the layout has: {known}); \
         plan one with `mdbus tune plan --roles {hint} --out FILE`"
    )]
    MissingRole {
        /// The layout file.
        file: String,
        /// The thread.
        thread: &'static str,
        /// The roles looked for, quoted and joined with "or".
        wanted: String,
        /// The roles the layout has.
        known: String,
        /// A role list for `tune plan`.
        hint: String,
    },
    /// A cpu the placement needs is one this process cannot run on.
    #[error(
        "{origin}: the {thread} thread is on cpu {cpu}, which this host does not have or this \
         process may not use (it may use cpus {allowed})"
    )]
    NoSuchCpu {
        /// Where the cpu came from (`layout FILE (role "strategy")`, `--cpus`).
        origin: String,
        /// The thread.
        thread: &'static str,
        /// The cpu.
        cpu: usize,
        /// The cpus this process may use.
        allowed: String,
    },
    /// The cpus this process may use could not be read.
    #[error("cannot read this process's cpu affinity: {0}")]
    Affinity(#[source] mdbus_tuning::TuneError),
}

/// How a command's threads are pinned: one entry per [`ThreadRole`], in the same order.
#[derive(Debug)]
pub struct Pinning {
    layout: Option<(PathBuf, Layout)>,
    threads: Vec<(ThreadRole, PinnedThread)>,
    pin: bool,
    /// What could not be applied -> the threads it happened to.
    warnings: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

/// The cpus this process may run on.
fn allowed_cpus() -> Result<Vec<usize>, PinningError> {
    mdbus_tuning::current_affinity().map_err(PinningError::Affinity)
}

impl Pinning {
    /// Threads left where the OS puts them.
    pub fn unpinned(threads: &[ThreadRole]) -> Pinning {
        Pinning {
            layout: None,
            threads: threads
                .iter()
                .map(|t| {
                    let p = PinnedThread {
                        thread: t.thread.to_string(),
                        role: None,
                        cpu: 0,
                        from_layout: false,
                    };
                    (*t, p)
                })
                .collect(),
            pin: false,
            warnings: Mutex::default(),
        }
    }

    /// Each thread pinned to its cpu in `cpus` (one per thread; from a flag or a default), no
    /// layout. The cpus are not checked here: pinning to a missing cpu fails in the thread.
    pub fn pinned(threads: &[ThreadRole], cpus: &[usize]) -> Pinning {
        let mut p = Pinning::unpinned(threads);
        for ((_, t), &cpu) in p.threads.iter_mut().zip(cpus) {
            t.cpu = cpu;
        }
        p.pin = true;
        p
    }

    /// The placement by a layout file. With `cpus` (an explicit flag, one per thread) the
    /// threads run there and the layout's roles, where present, give the rest of their
    /// settings; without, every thread needs one of its roles in the layout and runs on its
    /// first core, which must be a cpu this process may use.
    pub fn from_layout(
        path: &Path,
        threads: &[ThreadRole],
        cpus: Option<&[usize]>,
    ) -> Result<Pinning, PinningError> {
        let layout = Layout::load(path).map_err(PinningError::Layout)?;
        let file = path.display().to_string();
        let allowed = match cpus {
            Some(_) => Vec::new(),
            None => allowed_cpus()?,
        };
        let mut placed = Vec::with_capacity(threads.len());
        for (i, t) in threads.iter().enumerate() {
            let role = t
                .roles
                .iter()
                .find(|r| layout.core_for(r, 0).is_some())
                .map(|r| r.to_string());
            let (cpu, from_layout) = match (cpus.and_then(|c| c.get(i)), &role) {
                (Some(&cpu), _) => (cpu, false),
                (None, Some(r)) => {
                    let cpu = layout.core_for(r, 0).unwrap_or_default();
                    if !allowed.contains(&cpu) {
                        return Err(PinningError::NoSuchCpu {
                            origin: format!("layout {file} (role {r:?})"),
                            thread: t.thread,
                            cpu,
                            allowed: mdbus_tuning::cpulist::format_cpu_list(
                                allowed.iter().copied(),
                            ),
                        });
                    }
                    (cpu, true)
                }
                (None, None) => {
                    return Err(PinningError::MissingRole {
                        file,
                        thread: t.thread,
                        wanted: t
                            .roles
                            .iter()
                            .map(|r| format!("{r:?}"))
                            .collect::<Vec<_>>()
                            .join(" or "),
                        known: if layout.roles.is_empty() {
                            "no roles".into()
                        } else {
                            layout.roles.keys().cloned().collect::<Vec<_>>().join(", ")
                        },
                        hint: threads
                            .iter()
                            .map(|t| t.roles.last().copied().unwrap_or("strategy"))
                            .collect::<Vec<_>>()
                            .join(","),
                    });
                }
            };
            placed.push((
                *t,
                PinnedThread {
                    thread: t.thread.to_string(),
                    role,
                    cpu,
                    from_layout,
                },
            ));
        }
        Ok(Pinning {
            layout: Some((path.to_path_buf(), layout)),
            threads: placed,
            pin: true,
            warnings: Mutex::default(),
        })
    }

    /// The usual choice: `cpus` from an explicit flag (empty: none) win, then the layout of
    /// `layout` (`--layout`, else `$MDBUS_LAYOUT`), then `default` (`None`: unpinned).
    /// Explicit cpus are checked against the cpus this process may use.
    pub fn choose(
        layout: &LayoutArg,
        threads: &[ThreadRole],
        cpus: Option<Vec<usize>>,
        default: impl FnOnce() -> Result<Option<Vec<usize>>, PinningError>,
    ) -> Result<Pinning, PinningError> {
        if let Some(cpus) = &cpus {
            let allowed = allowed_cpus()?;
            for (t, &cpu) in threads.iter().zip(cpus) {
                if !allowed.contains(&cpu) {
                    return Err(PinningError::NoSuchCpu {
                        origin: "--cpus".into(),
                        thread: t.thread,
                        cpu,
                        allowed: mdbus_tuning::cpulist::format_cpu_list(allowed.iter().copied()),
                    });
                }
            }
        }
        match (layout.path(), cpus) {
            (Some(path), cpus) => Pinning::from_layout(&path, threads, cpus.as_deref()),
            (None, Some(cpus)) => Ok(Pinning::pinned(threads, &cpus)),
            (None, None) => Ok(match default()? {
                Some(cpus) => Pinning::pinned(threads, &cpus),
                None => Pinning::unpinned(threads),
            }),
        }
    }

    /// Whether threads are pinned at all.
    pub fn pins(&self) -> bool {
        self.pin
    }

    /// The cpu of thread `i` (0 when unpinned).
    pub fn cpu(&self, i: usize) -> usize {
        self.threads.get(i).map_or(0, |(_, t)| t.cpu)
    }

    /// Every thread's cpu, in order.
    pub fn cpus(&self) -> Vec<usize> {
        self.threads.iter().map(|(_, t)| t.cpu).collect()
    }

    /// Whether a layout file is in use.
    pub fn has_layout(&self) -> bool {
        self.layout.is_some()
    }

    /// The layout and each thread's place in it, for a report; `None` without a layout.
    pub fn layout_use(&self) -> Option<LayoutUse> {
        let (path, _) = self.layout.as_ref()?;
        Some(LayoutUse {
            file: path.display().to_string(),
            threads: self.threads.iter().map(|(_, t)| t.clone()).collect(),
        })
    }

    /// One line naming the layout and where each thread runs; `None` without a layout.
    pub fn describe(&self) -> Option<String> {
        let (path, _) = self.layout.as_ref()?;
        let each: Vec<String> = self
            .threads
            .iter()
            .map(|(_, t)| {
                let src = match (&t.role, t.from_layout) {
                    (Some(r), true) => format!("role {r}[0]"),
                    (Some(r), false) => format!("--cpus, settings of role {r}[0]"),
                    (None, _) => "--cpus, no role in the layout".into(),
                };
                format!("{} on cpu {} ({src})", t.thread, t.cpu)
            })
            .collect();
        Some(format!("layout {}: {}", path.display(), each.join("; ")))
    }

    /// Called first thing in thread `i`, which keeps the settings until it exits. With a
    /// layout, applies the thread's role ([`mdbus_tuning::apply_role`]) and records what
    /// could not be applied; without, pins to the thread's cpu when pinning. Returns whether
    /// the thread is pinned to its cpu.
    pub fn enter(&self, i: usize) -> bool {
        let Some((_, t)) = self.threads.get(i) else {
            return false;
        };
        if !self.pin {
            return false;
        }
        let layout = self.layout.as_ref().map(|(_, l)| l);
        match (layout, &t.role) {
            (Some(layout), Some(role)) => {
                match mdbus_tuning::apply_role_at(layout, role, 0, t.cpu) {
                    Ok(guard) => {
                        let report = guard.keep();
                        for step in &report.steps {
                            match &step.outcome {
                                StepOutcome::Warning(d) | StepOutcome::Failed(d) => {
                                    self.warn(t, format!("{}: {d}", step.action));
                                }
                                StepOutcome::Applied(_) | StepOutcome::NotRequested(_) => {}
                            }
                        }
                        matches!(report.outcome(Action::Pin), Some(StepOutcome::Applied(_)))
                    }
                    Err(e) => {
                        self.warn(t, e.to_string());
                        self.pin_plain(t)
                    }
                }
            }
            _ => self.pin_plain(t),
        }
    }

    fn pin_plain(&self, t: &PinnedThread) -> bool {
        match mdbus_tuning::pin_current_thread(t.cpu) {
            Ok(()) => true,
            Err(e) => {
                self.warn(t, e.to_string());
                false
            }
        }
    }

    fn warn(&self, t: &PinnedThread, what: String) {
        let who = match &t.role {
            Some(r) => format!("{} ({r})", t.thread),
            None => t.thread.clone(),
        };
        if let Ok(mut map) = self.warnings.lock() {
            map.entry(what).or_default().insert(who);
        }
    }

    /// What the threads could not apply, each distinct warning once with the threads it
    /// concerns (`producer (feed_handler), consumer (strategy): real-time: ...`).
    pub fn warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(what, who)| {
                        format!(
                            "{}: {what}",
                            who.iter().cloned().collect::<Vec<_>>().join(", ")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RING: [ThreadRole; 2] = [
        ThreadRole {
            thread: "producer",
            roles: &["producer", "feed_handler"],
        },
        ThreadRole {
            thread: "consumer",
            roles: &["consumer", "strategy"],
        },
    ];

    fn write_layout(dir: &Path, roles: &[(&str, &str, usize)]) -> PathBuf {
        let mut text = String::from(
            "version = 1\nhousekeeping = []\nisolated = []\n[runtime]\nlock_memory = false\n\
             prefault_stack = 0\n",
        );
        for (name, kind, cpu) in roles {
            text.push_str(&format!(
                "[roles.{name}]\nkind = \"{kind}\"\ncores = [{cpu}]\n"
            ));
        }
        let path = dir.join("layout.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn roles_are_looked_up_in_order_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = allowed_cpus().unwrap()[0];
        let path = write_layout(
            dir.path(),
            &[
                ("feed_handler", "feed_handler", cpu),
                ("strategy", "strategy", cpu),
                ("consumer", "strategy", cpu),
            ],
        );
        let p = Pinning::from_layout(&path, &RING, None).unwrap();
        assert_eq!(p.cpus(), vec![cpu, cpu]);
        let used = p.layout_use().unwrap();
        assert_eq!(used.threads[0].role.as_deref(), Some("feed_handler"));
        assert_eq!(used.threads[1].role.as_deref(), Some("consumer"));
        assert!(used.threads.iter().all(|t| t.from_layout));

        // An explicit flag chooses the cpus, even ones the layout does not name.
        let p = Pinning::from_layout(&path, &RING, Some(&[7, 9])).unwrap();
        assert_eq!(p.cpus(), vec![7, 9]);
        assert!(!p.layout_use().unwrap().threads[0].from_layout);
        assert!(p.describe().unwrap().contains("producer on cpu 7"));

        // The thread applies its role: pinned to the cpu, named after the role.
        let p = Pinning::from_layout(&path, &RING, None).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(p.enter(1));
                assert_eq!(mdbus_tuning::current_affinity().unwrap(), vec![cpu]);
            });
        });
        assert!(p.warnings().is_empty(), "{:?}", p.warnings());
    }

    #[test]
    fn missing_roles_and_cpus_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_layout(dir.path(), &[("feed_handler", "feed_handler", 0)]);
        let e = Pinning::from_layout(&path, &RING, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"consumer\" or \"strategy\"") && e.contains("layout.toml"),
            "{e}"
        );
        assert!(e.contains("feed_handler,strategy"), "{e}");

        let path = write_layout(
            dir.path(),
            &[
                ("feed_handler", "feed_handler", 0),
                ("strategy", "strategy", 60_000),
            ],
        );
        let e = Pinning::from_layout(&path, &RING, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cpu 60000") && e.contains("consumer") && e.contains("\"strategy\""),
            "{e}"
        );

        std::fs::write(&path, "version = 1\nroles = 3\n").unwrap();
        let e = Pinning::from_layout(&path, &RING, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("layout: ") && e.contains("layout.toml"),
            "{e}"
        );

        let e = Pinning::from_layout(&dir.path().join("none.toml"), &RING, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.toml"), "{e}");

        let e = Pinning::choose(&LayoutArg::default(), &RING, Some(vec![0, 60_000]), || {
            Ok(None)
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--cpus") && e.contains("60000"), "{e}");
    }
}
