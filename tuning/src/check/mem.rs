//! Memory-side checks: THP, huge pages, swap, /dev/shm.

use super::{Ctx, Outcome, human_bytes};

/// The bracketed choice of a sysfs selector such as `always [madvise] never`.
pub(crate) fn selected(text: &str) -> Option<&str> {
    let start = text.find('[')?;
    let end = text[start..].find(']')? + start;
    Some(&text[start + 1..end])
}

pub(super) fn transparent_hugepages(ctx: &Ctx<'_>) -> Outcome {
    let fix = "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled; echo defer+madvise \
               > /sys/kernel/mm/transparent_hugepage/defrag (at boot: \
               transparent_hugepage=madvise); 'never' is stricter still";
    let read = |name: &str| -> Result<String, String> {
        let path = format!("/sys/kernel/mm/transparent_hugepage/{name}");
        let text = ctx.sys.read(&path).map_err(|e| e.to_string())?;
        selected(&text)
            .map(str::to_string)
            .ok_or_else(|| format!("cannot parse {path}: {text:?}"))
    };
    let (enabled, defrag) = match (read("enabled"), read("defrag")) {
        (Ok(e), Ok(d)) => (e, d),
        (Err(e), _) | (_, Err(e)) => return Outcome::unknown(e, fix),
    };
    let found = format!("enabled={enabled}, defrag={defrag}");
    match (enabled.as_str(), defrag.as_str()) {
        ("always", "always") => Outcome::fail(
            format!("{found}: every anonymous fault may compact memory synchronously"),
            fix,
        ),
        ("always", _) => Outcome::warn(
            format!("{found}: khugepaged collapses pages under running threads"),
            fix,
        ),
        (_, "always") => Outcome::warn(
            format!("{found}: faults in madvised regions may compact memory synchronously"),
            fix,
        ),
        _ => Outcome::pass(found),
    }
}

/// Reads a `Key: value [kB]` field of `/proc/meminfo`, in its own unit.
pub(crate) fn meminfo_field(meminfo: &str, key: &str) -> Option<Result<u64, String>> {
    let line = meminfo
        .lines()
        .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))?;
    let value = line.split_once(':').map_or("", |(_, v)| v).trim();
    let number = value.split_whitespace().next().unwrap_or("");
    Some(
        number
            .parse::<u64>()
            .map_err(|_| format!("/proc/meminfo {key}: {value:?} is not a number")),
    )
}

pub(super) fn huge_pages(ctx: &Ctx<'_>) -> Outcome {
    let fix = "sysctl -w vm.nr_hugepages=1024 (2 GiB of 2 MiB pages; persist in \
               /etc/sysctl.d), or hugepages=1024 on the kernel command line so they are \
               reserved before memory fragments";
    let meminfo = match ctx.sys.read("/proc/meminfo") {
        Ok(m) => m,
        Err(e) => return Outcome::unknown(e.to_string(), fix),
    };
    let field = |key| match meminfo_field(&meminfo, key) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(e),
        None => Err(format!("/proc/meminfo has no {key}")),
    };
    let (total, free, size_kb) = match (
        field("HugePages_Total"),
        field("HugePages_Free"),
        field("Hugepagesize"),
    ) {
        (Ok(t), Ok(f), Ok(s)) => (t, f, s),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Outcome::unknown(e, fix),
    };
    let page = human_bytes(size_kb.saturating_mul(1024));
    if total == 0 {
        return Outcome::warn(
            format!("no huge pages reserved (HugePages_Total 0, page size {page})"),
            fix,
        );
    }
    let found = format!(
        "{free} of {total} {page} pages free ({} free)",
        human_bytes(free.saturating_mul(size_kb).saturating_mul(1024))
    );
    if free == 0 {
        Outcome::warn(format!("{found}: all in use"), fix)
    } else {
        Outcome::pass(found)
    }
}

/// Swappiness at or below this counts as "swap only under pressure".
const LOW_SWAPPINESS: i64 = 10;

pub(super) fn swap(ctx: &Ctx<'_>) -> Outcome {
    let fix = "swapoff -a and remove swap from /etc/fstab, or sysctl -w vm.swappiness=1; \
               lock_memory() keeps mdbus itself resident either way";
    let swaps = match ctx.sys.read("/proc/swaps") {
        Ok(s) => s,
        Err(e) => return Outcome::unknown(e.to_string(), fix),
    };
    let devices: Vec<String> = swaps
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let name = cols.next()?;
            let size_kb: u64 = cols.nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            Some(format!(
                "{name} ({})",
                human_bytes(size_kb.saturating_mul(1024))
            ))
        })
        .collect();
    let swappiness = ctx.sys.read_int("/proc/sys/vm/swappiness");
    let swappiness_text = match &swappiness {
        Ok(v) => format!("vm.swappiness={v}"),
        Err(_) => "vm.swappiness unknown".to_string(),
    };
    if devices.is_empty() {
        return Outcome::pass(format!("no swap ({swappiness_text})"));
    }
    let found = format!("swap on {}; {swappiness_text}", devices.join(", "));
    match swappiness {
        Ok(v) if v <= LOW_SWAPPINESS => Outcome::pass(found),
        Ok(_) => Outcome::warn(found, fix),
        Err(e) => Outcome::unknown(format!("{found} ({e})"), fix),
    }
}

/// Below this /dev/shm fails: a few rings do not fit.
const SHM_FAIL_BELOW: u64 = 256 << 20;
/// Below this /dev/shm warns.
const SHM_WARN_BELOW: u64 = 1 << 30;

/// Parses a tmpfs `size=` option: bytes with k/m/g suffix, or a percentage of RAM.
fn tmpfs_size(option: &str, mem_total: Option<u64>) -> Option<u64> {
    let option = option.trim();
    if let Some(pct) = option.strip_suffix('%') {
        let pct: u64 = pct.parse().ok()?;
        return u64::try_from(u128::from(mem_total?) * u128::from(pct) / 100).ok();
    }
    let (digits, mult) = match option.chars().last()? {
        'k' | 'K' => (&option[..option.len() - 1], 1u64 << 10),
        'm' | 'M' => (&option[..option.len() - 1], 1 << 20),
        'g' | 'G' => (&option[..option.len() - 1], 1 << 30),
        't' | 'T' => (&option[..option.len() - 1], 1 << 40),
        _ => (option, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

pub(super) fn dev_shm(ctx: &Ctx<'_>) -> Outcome {
    let fix = "mount -o remount,size=4G /dev/shm (persist in /etc/fstab); Docker: \
               --shm-size=4g; Kubernetes: mount an emptyDir with medium: Memory at /dev/shm";
    let mounts = ctx.sys.read("/proc/mounts");
    let entry = mounts.as_ref().ok().and_then(|m| {
        m.lines()
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols.len() >= 4 && cols[1] == "/dev/shm").then(|| (cols[2], cols[3]))
            })
            .next_back()
            .map(|(fs, opts)| (fs.to_string(), opts.to_string()))
    });
    if let Some((fs, _)) = &entry
        && fs != "tmpfs"
    {
        return Outcome::fail(
            format!("/dev/shm is a {fs} mount, not tmpfs: rings would live on that file system"),
            fix,
        );
    }
    let (total, available, source) = if let Some(space) = ctx.sys.facts().statvfs("/dev/shm") {
        (space.total_bytes, Some(space.available_bytes), "statvfs")
    } else if let Some((_, opts)) = &entry {
        let mem_total = ctx
            .sys
            .read("/proc/meminfo")
            .ok()
            .and_then(|m| meminfo_field(&m, "MemTotal").and_then(Result::ok))
            .map(|kb| kb.saturating_mul(1024));
        let size = opts
            .split(',')
            .find_map(|o| o.strip_prefix("size="))
            .map_or_else(|| mem_total.map(|m| m / 2), |s| tmpfs_size(s, mem_total));
        match size {
            Some(size) => (size, None, "/proc/mounts"),
            None => {
                return Outcome::unknown(
                    format!("tmpfs at /dev/shm with options {opts}: size unknown"),
                    fix,
                );
            }
        }
    } else {
        return match mounts {
            Ok(_) => Outcome::fail("nothing is mounted at /dev/shm", fix),
            Err(e) => Outcome::unknown(format!("statvfs(/dev/shm) failed and {e}"), fix),
        };
    };
    let mut found = format!("tmpfs, {} ({source})", human_bytes(total));
    if let Some(avail) = available {
        found = format!(
            "tmpfs, {} with {} free ({source})",
            human_bytes(total),
            human_bytes(avail)
        );
    }
    if total < SHM_FAIL_BELOW {
        return Outcome::fail(
            format!("{found}: below {}", human_bytes(SHM_FAIL_BELOW)),
            fix,
        );
    }
    if let Some(avail) = available
        && avail < SHM_FAIL_BELOW
    {
        return Outcome::warn(format!("{found}: nearly full"), fix);
    }
    if total < SHM_WARN_BELOW {
        return Outcome::warn(
            format!("{found}: below {}", human_bytes(SHM_WARN_BELOW)),
            fix,
        );
    }
    Outcome::pass(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_brackets() {
        assert_eq!(selected("always [madvise] never"), Some("madvise"));
        assert_eq!(selected("[always] madvise never"), Some("always"));
        assert_eq!(selected("always madvise never"), None);
    }

    #[test]
    fn tmpfs_sizes() {
        assert_eq!(tmpfs_size("65536k", None), Some(64 << 20));
        assert_eq!(tmpfs_size("2g", None), Some(2 << 30));
        assert_eq!(tmpfs_size("1048576", None), Some(1 << 20));
        assert_eq!(tmpfs_size("50%", Some(8 << 30)), Some(4 << 30));
        assert_eq!(tmpfs_size("50%", None), None);
        assert_eq!(tmpfs_size("lots", None), None);
    }

    #[test]
    fn meminfo_fields() {
        let m = "MemTotal:  16 kB\nHugePages_Total:    abc\nHugepagesize: 2048 kB\n";
        assert_eq!(meminfo_field(m, "MemTotal"), Some(Ok(16)));
        assert_eq!(meminfo_field(m, "Hugepagesize"), Some(Ok(2048)));
        assert!(matches!(meminfo_field(m, "HugePages_Total"), Some(Err(_))));
        assert_eq!(meminfo_field(m, "HugePages_Free"), None);
    }
}
