//! Host tuning for mdbus: check the host, plan a core layout, apply it to threads.
//!
//! Three parts, each usable on its own:
//!
//! - **Checks** ([`run_checks`], `mdbus tune check`): read-only inspection of `/proc` and
//!   `/sys` — isolated cores, irqbalance and NIC interrupt affinity, cpu governor, C-states,
//!   transparent and reserved huge pages, swap, clocksource and invariant TSC, socket buffer
//!   limits, busy polling, NUMA, `/dev/shm`, memlock and real-time limits — each with a
//!   pass / warn / fail verdict, what was found, why it matters for latency and the fix.
//!   Everything is read through a [`SysRoot`] (a root prefix plus a [`HostFacts`] provider for
//!   limits, capabilities and file-system sizes), so the same code runs on a live host and on
//!   fake trees in tests. A missing file is an `unknown` warning, never a panic.
//! - **Plan** ([`plan()`], `mdbus tune plan`): from the [`Topology`] and a list of [`Role`]s,
//!   a [`Layout`] giving each latency-critical thread a whole physical core on one NUMA node,
//!   keeping core 0 for the OS, plus the kernel command line and sysctls that isolate those
//!   cores. Saved as TOML; the bus, feed handlers and bench read it to pin their threads.
//! - **Runtime** ([`apply_role`] and the functions under it): pin the calling thread, name it,
//!   lock memory, prefault its stack, and optionally run it SCHED_FIFO, with a report of what
//!   was applied and what was not.
//!
//! ```
//! use mdbus_tuning::{parse_roles, plan, run_checks, Layout, SysRoot, Topology};
//!
//! // What does this host look like?
//! let report = run_checks(&SysRoot::host());
//! println!("{report}");
//!
//! // Where should the threads go?
//! let topology = Topology::read(&SysRoot::host()).unwrap_or_else(|_| Topology::synthetic(1, 4, 1));
//! let roles = parse_roles("feed_handler,book_builder,strategy:2").unwrap();
//! let layout: Layout = plan(&topology, &roles).unwrap();
//! println!("{layout}");
//! let text = layout.to_toml();
//! assert_eq!(Layout::from_toml_str(&text, "layout.toml").unwrap(), layout);
//! ```
//!
//! In a role's thread:
//!
//! ```no_run
//! # fn main() -> Result<(), mdbus_tuning::TuneError> {
//! let layout = mdbus_tuning::Layout::load("/etc/mdbus/layout.toml")?;
//! let report = mdbus_tuning::apply_role(&layout, "strategy", 1)?.keep();
//! if !report.is_complete() {
//!     eprint!("{report}");
//! }
//! // ... hot loop ...
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod check;
pub mod cmdline;
pub mod cpulist;
pub mod error;
pub mod layout;
pub mod plan;
pub mod runtime;
pub mod sysroot;
pub mod topology;

pub use check::{CHECK_IDS, CheckResult, Report, Status, run_checks};
pub use cmdline::Cmdline;
pub use error::{PlanError, TuneError};
pub use layout::{LAYOUT_VERSION, Layout, RoleLayout, RuntimeSettings, Sysctl};
pub use plan::{PlanOptions, Role, RoleKind, parse_roles, plan, plan_with};
pub use runtime::{
    Action, RealtimeOutcome, RoleGuard, RoleReport, Step, StepOutcome, apply_role, apply_role_at,
    current_affinity, lock_memory, name_thread, pin_current_thread, prefault_stack, set_realtime,
    spawn_housekeeping, unlock_memory,
};
pub use sysroot::{
    FsSpace, HostFacts, Limit, LimitValue, LiveHost, Resource, StaticFacts, SysRoot,
};
pub use topology::{Cpu, PhysicalCore, Topology};
