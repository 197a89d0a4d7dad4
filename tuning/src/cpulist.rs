//! The kernel's cpu-list and cpu-mask notations.
//!
//! A cpu list is what `/sys/devices/system/cpu/online`, `isolcpus=` and `smp_affinity_list` use:
//! `0-3,8,10-11`, with the kernel's optional stride form `0-15:2/4` (in each group of 4, the
//! first 2) and `N` for the last cpu. A cpu mask is the hex form of `/proc/irq/*/smp_affinity`
//! and `/sys/devices/virtual/workqueue/cpumask`: 32-bit words, most significant first, separated
//! by commas.

use std::collections::BTreeSet;

/// A set of cpu numbers, kept sorted.
pub type CpuSet = BTreeSet<usize>;

/// Cpu numbers above this are rejected as nonsense (the kernel's `NR_CPUS` limit is 8192).
pub const MAX_CPU: usize = 1 << 16;

/// Parses a cpu list such as `0-3,8,10-11` or `1-N`.
///
/// `last` is the number that `N` stands for (the highest cpu); without it `N` is an error.
/// Surrounding whitespace is ignored and an empty string is the empty set.
///
/// ```
/// use mdbus_tuning::cpulist::parse_cpu_list;
/// let set = parse_cpu_list("0-2,8,10-15:2/4", None).unwrap();
/// assert_eq!(set.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 8, 10, 11, 14, 15]);
/// ```
pub fn parse_cpu_list(text: &str, last: Option<usize>) -> Result<CpuSet, String> {
    let mut set = CpuSet::new();
    let text = text.trim();
    if text.is_empty() {
        return Ok(set);
    }
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!("empty item in cpu list {text:?}"));
        }
        let (range, stride) = match item.split_once(':') {
            Some((range, stride)) => (range, Some(stride)),
            None => (item, None),
        };
        let (lo, hi) = match range.split_once('-') {
            Some((lo, hi)) => (cpu_number(lo, last)?, cpu_number(hi, last)?),
            None => {
                let n = cpu_number(range, last)?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(format!("range {item:?} runs backwards"));
        }
        let (used, group) = match stride {
            None => (1, 1),
            Some(stride) => {
                let (used, group) = stride
                    .split_once('/')
                    .ok_or_else(|| format!("stride in {item:?} must be used/group"))?;
                let used: usize = used
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad stride {stride:?} in {item:?}"))?;
                let group: usize = group
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad stride {stride:?} in {item:?}"))?;
                if used == 0 || group == 0 || used > group {
                    return Err(format!(
                        "stride {stride:?} in {item:?} is not 0 < used <= group"
                    ));
                }
                (used, group)
            }
        };
        for cpu in lo..=hi {
            if (cpu - lo) % group < used {
                set.insert(cpu);
            }
        }
    }
    Ok(set)
}

fn cpu_number(text: &str, last: Option<usize>) -> Result<usize, String> {
    let text = text.trim();
    if text == "N" {
        return last
            .ok_or_else(|| "\"N\" (last cpu) used but the cpu count is unknown".to_string());
    }
    let n: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a cpu number"))?;
    if n > MAX_CPU {
        return Err(format!("cpu {n} is beyond {MAX_CPU}"));
    }
    Ok(n)
}

/// Formats cpus as a compact cpu list: `[0, 1, 2, 3, 8]` becomes `0-3,8`; empty gives `""`.
///
/// ```
/// use mdbus_tuning::cpulist::format_cpu_list;
/// assert_eq!(format_cpu_list([0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
/// ```
pub fn format_cpu_list<I: IntoIterator<Item = usize>>(cpus: I) -> String {
    let set: CpuSet = cpus.into_iter().collect();
    let mut out = String::new();
    let mut iter = set.into_iter().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        if !out.is_empty() {
            out.push(',');
        }
        if end == start {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
    }
    out
}

/// Formats cpus as the kernel's hex cpu mask: 32-bit words, most significant first, separated
/// by commas, the leading word without zero padding. The empty set is `0`.
///
/// ```
/// use mdbus_tuning::cpulist::cpu_mask_hex;
/// assert_eq!(cpu_mask_hex([0, 1]), "3");
/// assert_eq!(cpu_mask_hex([0, 33]), "2,00000001");
/// ```
pub fn cpu_mask_hex<I: IntoIterator<Item = usize>>(cpus: I) -> String {
    let set: CpuSet = cpus.into_iter().collect();
    let Some(&max) = set.iter().next_back() else {
        return "0".to_string();
    };
    let mut words = vec![0u32; max / 32 + 1];
    for cpu in set {
        words[cpu / 32] |= 1 << (cpu % 32);
    }
    let mut out = String::new();
    for (i, word) in words.iter().rev().enumerate() {
        if i == 0 {
            out.push_str(&format!("{word:x}"));
        } else {
            out.push_str(&format!(",{word:08x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> Vec<usize> {
        parse_cpu_list(text, Some(7)).unwrap().into_iter().collect()
    }

    #[test]
    fn parses_plain_ranges_and_singles() {
        assert_eq!(list("0-3,8"), vec![0, 1, 2, 3, 8]);
        assert_eq!(list(" 5 \n"), vec![5]);
        assert_eq!(list(""), Vec::<usize>::new());
        assert_eq!(list("2-N"), vec![2, 3, 4, 5, 6, 7]);
        assert_eq!(list("0-7:1/2"), vec![0, 2, 4, 6]);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "x", "3-1", "1,,2", "0-3:0/2", "0-3:3/2", "0-3:1", "99999999", "-1",
        ] {
            assert!(
                parse_cpu_list(bad, Some(7)).is_err(),
                "{bad:?} should not parse"
            );
        }
        assert!(parse_cpu_list("N", None).is_err());
    }

    #[test]
    fn formats_round_trip() {
        for text in ["0-3,8,10-11", "1", "0,2,4", "", "0-63"] {
            assert_eq!(format_cpu_list(list_any(text)), text);
        }
    }

    fn list_any(text: &str) -> Vec<usize> {
        parse_cpu_list(text, None).unwrap().into_iter().collect()
    }

    #[test]
    fn hex_masks() {
        assert_eq!(cpu_mask_hex([]), "0");
        assert_eq!(cpu_mask_hex([0]), "1");
        assert_eq!(cpu_mask_hex([4, 5, 6, 7]), "f0");
        assert_eq!(cpu_mask_hex([32]), "1,00000000");
        assert_eq!(cpu_mask_hex([0, 1, 64]), "1,00000000,00000003");
    }
}
