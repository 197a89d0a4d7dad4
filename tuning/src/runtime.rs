//! Runtime functions every long-running role calls at thread start: pin, name, lock memory,
//! prefault the stack, real-time priority; and [`apply_role`], which does the ones a
//! [`Layout`] asks for and reports what it did.
//!
//! All of these are setup-time calls (system calls, small allocations); none belongs on a hot
//! path.

use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::check::privs::limit_text;
use crate::error::TuneError;
use crate::layout::Layout;
use crate::sysroot::{HostFacts, LiveHost, Resource};

/// Longest thread name Linux keeps (16 bytes with the terminating NUL).
pub const THREAD_NAME_MAX: usize = 15;

fn cpu_setsize() -> usize {
    usize::try_from(libc::CPU_SETSIZE).unwrap_or(1024)
}

/// The cpus the calling thread may run on (`sched_getaffinity`).
pub fn current_affinity() -> Result<Vec<usize>, TuneError> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a writable cpu_set_t and the size passed is its exact size; pid 0 means
    // the calling thread.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(TuneError::Sched {
            call: "sched_getaffinity",
            source: io::Error::last_os_error(),
        });
    }
    let mut cpus = Vec::new();
    for cpu in 0..cpu_setsize() {
        // SAFETY: `cpu` is below CPU_SETSIZE, so CPU_ISSET indexes inside the set.
        if unsafe { libc::CPU_ISSET(cpu, &set) } {
            cpus.push(cpu);
        }
    }
    Ok(cpus)
}

/// Restricts the calling thread to `cpus` (used to restore a saved mask).
fn set_affinity(cpus: &[usize]) -> Result<(), TuneError> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus.iter().filter(|&&c| c < cpu_setsize()) {
        // SAFETY: `cpu` is below CPU_SETSIZE, so CPU_SET indexes inside the set.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 means the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(TuneError::Sched {
            call: "sched_setaffinity",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Pins the calling thread to one cpu and checks with `sched_getaffinity` that the kernel
/// applied exactly that.
///
/// Fails when the cpu does not exist, is offline, or is outside this process's cpuset (a
/// container limited with `--cpuset-cpus`, `taskset`).
pub fn pin_current_thread(core: usize) -> Result<(), TuneError> {
    if core >= cpu_setsize() {
        return Err(TuneError::Pin {
            core,
            reason: format!("beyond CPU_SETSIZE ({})", cpu_setsize()),
        });
    }
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        let err = io::Error::last_os_error();
        return Err(TuneError::Pin {
            core,
            reason: format!(
                "sched_setaffinity: {err} (is the cpu online and inside this process's cpuset? \
                 see /sys/fs/cgroup/cpuset.cpus.effective)"
            ),
        });
    }
    let actual = current_affinity()?;
    if actual != [core] {
        return Err(TuneError::PinNotApplied { core, actual });
    }
    Ok(())
}

/// Starts a thread for housekeeping a hot thread hands off (preparing memory, say), so that
/// it neither takes the hot thread's cpu nor outranks it: the new thread runs under the normal
/// scheduler (SCHED_OTHER) on the cpus the process's main thread may use, less the caller's
/// own cpu when the caller is pinned to one and others remain. Settings it cannot change are
/// left as inherited (the work is the same, only placed worse).
pub fn spawn_housekeeping<T, F>(name: &str, f: F) -> io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let caller = current_affinity().ok();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            leave_hot_cpu(caller.as_deref());
            f()
        })
}

/// What [`spawn_housekeeping`]'s thread does first: normal scheduling, the main thread's
/// cpus, not the spawner's pinned one (`caller`: the spawner's cpus).
fn leave_hot_cpu(caller: Option<&[usize]>) {
    restore_sched(libc::SCHED_OTHER, 0);
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: getpid has no preconditions and cannot fail.
    let main = unsafe { libc::getpid() };
    // SAFETY: `set` is a writable cpu_set_t of the size passed; `main` names the process's
    // main thread, whose mask is read, not changed.
    let rc = unsafe { libc::sched_getaffinity(main, size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return;
    }
    let mut cpus: Vec<usize> = (0..cpu_setsize())
        // SAFETY: `cpu` is below CPU_SETSIZE, so CPU_ISSET indexes inside the set.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect();
    if let Some(&[pinned]) = caller
        && cpus.len() > 1
    {
        cpus.retain(|&c| c != pinned);
    }
    let _ = set_affinity(&cpus);
}

/// What [`set_realtime`] achieved. Missing permission is a warning value, not an error: the
/// thread keeps running under normal scheduling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[must_use]
pub enum RealtimeOutcome {
    /// The thread now runs SCHED_FIFO at this priority.
    Applied {
        /// The priority set.
        priority: i32,
    },
    /// The kernel said EPERM; the thread keeps its old policy.
    NotPermitted {
        /// The priority asked for.
        priority: i32,
        /// What the limits are and how to grant the permission.
        hint: String,
    },
}

/// Switches the calling thread to SCHED_FIFO at `priority` (1-99).
///
/// Returns [`RealtimeOutcome::NotPermitted`] (not an error) when the process lacks
/// CAP_SYS_NICE and RLIMIT_RTPRIO is below `priority`. An out-of-range priority is an error.
///
/// A SCHED_FIFO thread that never blocks is paused by RT throttling for
/// `1 - sched_rt_runtime_us / sched_rt_period_us` of each period (5% by default); busy-polling
/// threads on isolated cores usually do better at normal priority.
pub fn set_realtime(priority: i32) -> Result<RealtimeOutcome, TuneError> {
    // SAFETY: sched_get_priority_min/max only read their argument.
    let min = unsafe { libc::sched_get_priority_min(libc::SCHED_FIFO) };
    // SAFETY: as above.
    let max = unsafe { libc::sched_get_priority_max(libc::SCHED_FIFO) };
    if priority < min || priority > max {
        return Err(TuneError::InvalidPriority { priority, min, max });
    }
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a valid sched_param for the duration of the call; pid 0 is the
    // calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        return Ok(RealtimeOutcome::Applied { priority });
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EPERM) {
        let limit = LiveHost
            .rlimit(Resource::Rtprio)
            .map(|l| limit_text(&l, false))
            .unwrap_or_else(|| "unknown".into());
        return Ok(RealtimeOutcome::NotPermitted {
            priority,
            hint: format!(
                "sched_setscheduler(SCHED_FIFO, {priority}): permission denied; RLIMIT_RTPRIO \
                 {limit}; grant CAP_SYS_NICE or raise rtprio (limits.conf, LimitRTPRIO=, \
                 --cap-add SYS_NICE); in a cgroup-v1 container the cgroup also needs \
                 cpu.rt_runtime_us"
            ),
        });
    }
    Err(TuneError::Sched {
        call: "sched_setscheduler",
        source: err,
    })
}

/// The calling thread's scheduling policy and priority.
fn current_sched() -> Option<(libc::c_int, libc::c_int)> {
    // SAFETY: pid 0 is the calling thread; no memory is passed.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy < 0 {
        return None;
    }
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a writable sched_param; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_getparam(0, &mut param) };
    (rc == 0).then_some((policy, param.sched_priority))
}

fn restore_sched(policy: libc::c_int, priority: libc::c_int) {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread. Best effort.
    let _ = unsafe { libc::sched_setscheduler(0, policy, &param) };
}

static MEMORY_LOCKED: AtomicBool = AtomicBool::new(false);

/// Locks all current and future pages of the process in memory (`mlockall(MCL_CURRENT |
/// MCL_FUTURE)`), so no page fault or swap-in lands on a hot path.
///
/// On failure (EPERM, ENOMEM) the error carries the memlock limit and how to raise it.
/// Process-wide: one call covers every thread.
pub fn lock_memory() -> Result<(), TuneError> {
    // SAFETY: mlockall takes only flags and touches no memory of ours.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if rc == 0 {
        MEMORY_LOCKED.store(true, Ordering::Relaxed);
        return Ok(());
    }
    let source = io::Error::last_os_error();
    let limit = LiveHost
        .rlimit(Resource::Memlock)
        .map(|l| limit_text(&l, true))
        .unwrap_or_else(|| "unknown".into());
    Err(TuneError::LockMemory { source, limit })
}

/// Undoes [`lock_memory`] (`munlockall`).
pub fn unlock_memory() -> Result<(), TuneError> {
    // SAFETY: munlockall takes no arguments and touches no memory of ours.
    let rc = unsafe { libc::munlockall() };
    if rc != 0 {
        return Err(TuneError::Sched {
            call: "munlockall",
            source: io::Error::last_os_error(),
        });
    }
    MEMORY_LOCKED.store(false, Ordering::Relaxed);
    Ok(())
}

/// Stack left below this point is kept untouched by [`prefault_stack`].
const STACK_MARGIN: usize = 128 * 1024;
/// What [`prefault_stack`] touches at most when the stack size cannot be found.
const STACK_UNKNOWN_CAP: usize = 256 * 1024;
const PREFAULT_CHUNK: usize = 4096;

/// Bytes of stack between the caller's frame and the lowest address of the thread's stack.
fn stack_room() -> Option<usize> {
    let marker = 0u8;
    let here = std::ptr::addr_of!(marker) as usize;
    // SAFETY: pthread_attr_t is a plain C struct; pthread_getattr_np initialises it below.
    let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    // SAFETY: `attr` is writable and `me` is the calling thread.
    if unsafe { libc::pthread_getattr_np(me, &mut attr) } != 0 {
        return None;
    }
    let mut addr: *mut libc::c_void = std::ptr::null_mut();
    let mut size: libc::size_t = 0;
    // SAFETY: `attr` was initialised by pthread_getattr_np; `addr` and `size` are writable.
    let rc = unsafe { libc::pthread_attr_getstack(&attr, &mut addr, &mut size) };
    // SAFETY: `attr` was initialised by pthread_getattr_np and is destroyed once.
    unsafe { libc::pthread_attr_destroy(&mut attr) };
    if rc != 0 {
        return None;
    }
    let low = addr as usize;
    (here > low && here - low <= size).then(|| here - low)
}

/// Touches `bytes` of the calling thread's stack below the current frame, so those pages are
/// resident (and locked, after [`lock_memory`]) before the hot loop runs. Clamped to leave a
/// safety margin above the end of the stack; returns the bytes actually touched.
pub fn prefault_stack(bytes: usize) -> usize {
    let room = stack_room().map_or(STACK_UNKNOWN_CAP, |r| r.saturating_sub(STACK_MARGIN));
    let bytes = bytes.min(room);
    touch_stack(bytes.div_ceil(PREFAULT_CHUNK));
    bytes
}

/// Recurses `frames` times with a page-sized buffer per frame.
#[inline(never)]
fn touch_stack(frames: usize) {
    if frames == 0 {
        return;
    }
    let mut page = [0u8; PREFAULT_CHUNK];
    std::hint::black_box(&mut page);
    touch_stack(frames - 1);
    // Using the buffer after the call keeps the frame (no tail call, no elision).
    std::hint::black_box(&page);
}

/// Truncates `name` to at most [`THREAD_NAME_MAX`] bytes on a character boundary.
pub fn truncate_thread_name(name: &str) -> &str {
    let mut end = name.len().min(THREAD_NAME_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Names the calling thread (visible in `top -H`, `ps -L`, `perf`), truncated to 15 bytes.
/// Returns the name applied. A name with a NUL byte is an error.
pub fn name_thread(name: &str) -> Result<String, TuneError> {
    let short = truncate_thread_name(name);
    let cname = CString::new(short).map_err(|_| TuneError::ThreadName {
        name: name.to_string(),
        reason: "contains a NUL byte".into(),
    })?;
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    // SAFETY: `cname` is NUL-terminated, at most 16 bytes with the NUL, and alive for the call.
    let rc = unsafe { libc::pthread_setname_np(me, cname.as_ptr()) };
    if rc != 0 {
        return Err(TuneError::ThreadName {
            name: name.to_string(),
            reason: io::Error::from_raw_os_error(rc).to_string(),
        });
    }
    Ok(short.to_string())
}

/// The calling thread's name.
pub fn thread_name() -> Option<String> {
    let mut buf = [0 as libc::c_char; 64];
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    // SAFETY: `buf` is writable for the length passed.
    let rc = unsafe { libc::pthread_getname_np(me, buf.as_mut_ptr(), buf.len()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: on success pthread_getname_np wrote a NUL-terminated string into `buf`.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// One of the settings [`apply_role`] handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// [`name_thread`].
    NameThread,
    /// [`pin_current_thread`].
    Pin,
    /// [`lock_memory`].
    LockMemory,
    /// [`prefault_stack`].
    PrefaultStack,
    /// [`set_realtime`].
    Realtime,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::NameThread => "name thread",
            Action::Pin => "pin",
            Action::LockMemory => "lock memory",
            Action::PrefaultStack => "prefault stack",
            Action::Realtime => "real-time",
        })
    }
}

/// How one setting went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result", content = "detail")]
pub enum StepOutcome {
    /// Done.
    Applied(String),
    /// The layout does not ask for it.
    NotRequested(String),
    /// Asked for but not permitted; the thread runs without it.
    Warning(String),
    /// Asked for and failed.
    Failed(String),
}

/// One line of a [`RoleReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Which setting.
    pub action: Action,
    /// How it went.
    pub outcome: StepOutcome,
}

/// What [`apply_role`] applied to the calling thread and what it did not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleReport {
    /// The role name.
    pub role: String,
    /// The instance index.
    pub index: usize,
    /// One step per setting, in the order applied.
    pub steps: Vec<Step>,
}

impl RoleReport {
    /// True when nothing failed (warnings such as a refused real-time priority allowed).
    pub fn is_ok(&self) -> bool {
        !self
            .steps
            .iter()
            .any(|s| matches!(s.outcome, StepOutcome::Failed(_)))
    }

    /// True when every requested setting was applied.
    pub fn is_complete(&self) -> bool {
        self.steps.iter().all(|s| {
            matches!(
                s.outcome,
                StepOutcome::Applied(_) | StepOutcome::NotRequested(_)
            )
        })
    }

    /// The outcome of `action`, if it was attempted.
    pub fn outcome(&self, action: Action) -> Option<&StepOutcome> {
        self.steps
            .iter()
            .find(|s| s.action == action)
            .map(|s| &s.outcome)
    }
}

impl fmt::Display for RoleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "role {}[{}]:", self.role, self.index)?;
        for step in &self.steps {
            let (tag, detail) = match &step.outcome {
                StepOutcome::Applied(d) => ("ok  ", d),
                StepOutcome::NotRequested(d) => ("--  ", d),
                StepOutcome::Warning(d) => ("WARN", d),
                StepOutcome::Failed(d) => ("FAIL", d),
            };
            writeln!(f, "  [{tag}] {:<14} {detail}", step.action.to_string())?;
        }
        Ok(())
    }
}

/// What the thread had before [`apply_role`], restored when the guard drops.
#[derive(Debug)]
struct Saved {
    affinity: Option<Vec<usize>>,
    sched: Option<(libc::c_int, libc::c_int)>,
    name: Option<String>,
}

/// The result of [`apply_role`]: the report, and the thread's previous affinity, scheduling
/// policy and name, restored on drop. Call [`RoleGuard::keep`] for a thread that keeps the
/// role until it exits. Memory locking and stack prefaulting are not undone.
///
/// Not `Send`: it restores the thread it was created on.
#[derive(Debug)]
#[must_use = "dropping the guard restores the thread's previous settings at once"]
pub struct RoleGuard {
    report: RoleReport,
    saved: Option<Saved>,
    _not_send: PhantomData<*const ()>,
}

impl RoleGuard {
    /// What was applied.
    pub fn report(&self) -> &RoleReport {
        &self.report
    }

    /// Keeps the settings for the rest of the thread's life and returns the report.
    pub fn keep(mut self) -> RoleReport {
        self.saved = None;
        std::mem::replace(
            &mut self.report,
            RoleReport {
                role: String::new(),
                index: 0,
                steps: Vec::new(),
            },
        )
    }
}

impl Drop for RoleGuard {
    fn drop(&mut self) {
        let Some(saved) = self.saved.take() else {
            return;
        };
        // Best effort: a failed restore leaves the thread as the role set it.
        if let Some((policy, priority)) = saved.sched {
            restore_sched(policy, priority);
        }
        if let Some(cpus) = saved.affinity {
            let _ = set_affinity(&cpus);
        }
        if let Some(name) = saved.name {
            let _ = name_thread(&name);
        }
    }
}

/// Applies instance `index` of `role` from `layout` to the calling thread: names it
/// `<role>-<index>`, pins it to `layout.core_for(role, index)`, locks memory and prefaults the
/// stack when `[runtime]` asks, and sets SCHED_FIFO when the role has a `priority`.
///
/// Only a role missing from the layout is an error; everything else is recorded in the
/// report, so a process can log it and carry on.
///
/// ```no_run
/// # fn main() -> Result<(), mdbus_tuning::TuneError> {
/// let layout = mdbus_tuning::Layout::load("layout.toml")?;
/// let report = mdbus_tuning::apply_role(&layout, "feed_handler", 0)?.keep();
/// eprint!("{report}");
/// # Ok(()) }
/// ```
pub fn apply_role(layout: &Layout, role: &str, index: usize) -> Result<RoleGuard, TuneError> {
    apply_role_with(layout, role, index, layout.core_for(role, index))
}

/// [`apply_role`], but pins the thread to `core` instead of the core the layout gives the
/// instance: for a command whose explicit `--cpus` flag wins over the layout's cores while the
/// layout's runtime settings (memory locking, stack prefault, SCHED_FIFO priority, thread
/// name) still apply.
///
/// ```no_run
/// # fn main() -> Result<(), mdbus_tuning::TuneError> {
/// let layout = mdbus_tuning::Layout::load("layout.toml")?;
/// let report = mdbus_tuning::apply_role_at(&layout, "strategy", 0, 3)?.keep();
/// eprint!("{report}");
/// # Ok(()) }
/// ```
pub fn apply_role_at(
    layout: &Layout,
    role: &str,
    index: usize,
    core: usize,
) -> Result<RoleGuard, TuneError> {
    apply_role_with(layout, role, index, Some(core))
}

fn apply_role_with(
    layout: &Layout,
    role: &str,
    index: usize,
    core: Option<usize>,
) -> Result<RoleGuard, TuneError> {
    let Some(role_layout) = layout.role(role) else {
        return Err(TuneError::UnknownRole {
            role: role.to_string(),
            known: layout.roles.keys().cloned().collect::<Vec<_>>().join(", "),
        });
    };
    let saved = Saved {
        affinity: current_affinity().ok(),
        sched: current_sched(),
        name: thread_name(),
    };
    let mut steps = Vec::new();
    let mut step = |action, outcome| steps.push(Step { action, outcome });

    step(
        Action::NameThread,
        match name_thread(&format!("{role}-{index}")) {
            Ok(name) => StepOutcome::Applied(name),
            Err(e) => StepOutcome::Failed(e.to_string()),
        },
    );

    // Pin before touching memory, so first-touch pages land on the core's NUMA node.
    step(
        Action::Pin,
        match core {
            None => StepOutcome::Warning(format!(
                "no core for instance {index} (the layout lists {} for {role})",
                role_layout.cores.len()
            )),
            Some(core) => match pin_current_thread(core) {
                Ok(()) => StepOutcome::Applied(format!("cpu {core}")),
                Err(e) => StepOutcome::Failed(e.to_string()),
            },
        },
    );

    step(
        Action::LockMemory,
        if !layout.runtime.lock_memory {
            StepOutcome::NotRequested("runtime.lock_memory = false".into())
        } else if MEMORY_LOCKED.load(Ordering::Relaxed) {
            StepOutcome::Applied("already locked by this process".into())
        } else {
            match lock_memory() {
                Ok(()) => StepOutcome::Applied("mlockall(MCL_CURRENT|MCL_FUTURE)".into()),
                Err(e) => StepOutcome::Failed(e.to_string()),
            }
        },
    );

    step(
        Action::PrefaultStack,
        if layout.runtime.prefault_stack == 0 {
            StepOutcome::NotRequested("runtime.prefault_stack = 0".into())
        } else {
            let asked = layout.runtime.prefault_stack;
            let done = prefault_stack(asked);
            if done >= asked {
                StepOutcome::Applied(format!("{done} bytes"))
            } else {
                StepOutcome::Warning(format!(
                    "{done} of {asked} bytes (clamped to the thread's stack)"
                ))
            }
        },
    );

    step(
        Action::Realtime,
        match role_layout.priority {
            None => StepOutcome::NotRequested("no priority in the layout".into()),
            Some(p) => match set_realtime(p) {
                Ok(RealtimeOutcome::Applied { priority }) => {
                    StepOutcome::Applied(format!("SCHED_FIFO {priority}"))
                }
                Ok(RealtimeOutcome::NotPermitted { hint, .. }) => StepOutcome::Warning(hint),
                Err(e) => StepOutcome::Failed(e.to_string()),
            },
        },
    );

    Ok(RoleGuard {
        report: RoleReport {
            role: role.to_string(),
            index,
            steps,
        },
        saved: Some(saved),
        _not_send: PhantomData,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn housekeeping_leaves_the_pinned_caller_s_cpu_and_priority() {
        let all = current_affinity().expect("affinity");
        let cpu = all[0];
        pin_current_thread(cpu).expect("pin");
        let (cpus, policy) = spawn_housekeeping("mdbus-test-hk", || {
            (current_affinity().expect("affinity"), current_sched())
        })
        .expect("spawn")
        .join()
        .expect("join");
        set_affinity(&all).expect("restore");
        assert_eq!(policy.map(|p| p.0), Some(libc::SCHED_OTHER));
        if all.len() > 1 {
            assert!(!cpus.contains(&cpu), "{cpus:?} holds the caller's {cpu}");
            assert!(!cpus.is_empty());
        } else {
            assert_eq!(cpus, all);
        }
    }

    #[test]
    fn names_truncate_on_char_boundaries() {
        assert_eq!(truncate_thread_name("feed_handler-0"), "feed_handler-0");
        assert_eq!(
            truncate_thread_name("book_builder-12345"),
            "book_builder-12"
        );
        // 'é' is two bytes and would straddle byte 15.
        assert_eq!(truncate_thread_name("abcdefghijklmné"), "abcdefghijklmn");
    }

    #[test]
    fn prefault_is_clamped_and_survives_huge_requests() {
        let touched = prefault_stack(64 * 1024);
        assert_eq!(touched, 64 * 1024);
        // A request larger than any stack is clamped instead of overflowing.
        let touched = prefault_stack(usize::MAX / 2);
        assert!(touched < usize::MAX / 2);
    }

    #[test]
    fn bad_priority_is_an_error() {
        assert!(matches!(
            set_realtime(0),
            Err(TuneError::InvalidPriority { .. })
        ));
        assert!(matches!(
            set_realtime(1000),
            Err(TuneError::InvalidPriority { .. })
        ));
    }

    #[test]
    fn apply_role_at_pins_to_the_given_core_with_the_layouts_settings() {
        std::thread::spawn(|| {
            let cpu = current_affinity().unwrap()[0];
            // The layout puts the role elsewhere; the explicit core wins.
            let layout = Layout::from_toml_str(
                &format!(
                    "version = 1\nhousekeeping = []\nisolated = []\n[runtime]\n\
                     lock_memory = false\nprefault_stack = 65536\n[roles.probe]\n\
                     kind = \"strategy\"\ncores = [{}]\n",
                    cpu + 1000
                ),
                "mem",
            )
            .unwrap();
            let report = apply_role_at(&layout, "probe", 0, cpu).unwrap().keep();
            assert_eq!(
                report.outcome(Action::Pin),
                Some(&StepOutcome::Applied(format!("cpu {cpu}")))
            );
            assert_eq!(
                report.outcome(Action::PrefaultStack),
                Some(&StepOutcome::Applied("65536 bytes".into()))
            );
            assert_eq!(current_affinity().unwrap(), vec![cpu]);
            assert_eq!(thread_name().as_deref(), Some("probe-0"));
            assert!(apply_role_at(&layout, "nope", 0, cpu).is_err());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn nul_in_name_is_an_error() {
        assert!(name_thread("a\0b").is_err());
    }
}
