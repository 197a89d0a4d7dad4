//! The kernel command line (`/proc/cmdline`).

/// A parsed kernel command line: `key=value` and bare `key` parameters, in order.
///
/// Parameter names are normalised the way the kernel does (`-` and `_` are the same), double
/// quotes group a value with spaces, and everything after a lone `--` (arguments for init) is
/// ignored.
///
/// ```
/// use mdbus_tuning::Cmdline;
/// let c = Cmdline::parse("quiet isolcpus=2-7 intel-idle.max_cstate=1 -- single");
/// assert_eq!(c.value("isolcpus"), Some("2-7"));
/// assert_eq!(c.value("intel_idle.max_cstate"), Some("1"));
/// assert!(c.has("quiet"));
/// assert!(!c.has("single"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    params: Vec<(String, Option<String>)>,
}

impl Cmdline {
    /// Parses the text of `/proc/cmdline`.
    pub fn parse(text: &str) -> Self {
        let mut params = Vec::new();
        for word in split_words(text) {
            if word == "--" {
                break;
            }
            match word.split_once('=') {
                Some((key, value)) => params.push((normalise(key), Some(value.to_string()))),
                None => params.push((normalise(&word), None)),
            }
        }
        Cmdline { params }
    }

    /// The value of the last occurrence of `key` (the kernel honours the last one).
    /// A bare `key` without `=` gives `None`, as does an absent key; see [`Cmdline::has`].
    pub fn value(&self, key: &str) -> Option<&str> {
        let key = normalise(key);
        self.params
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Whether `key` appears at all, with or without a value.
    pub fn has(&self, key: &str) -> bool {
        let key = normalise(key);
        self.params.iter().any(|(k, _)| *k == key)
    }
}

fn normalise(key: &str) -> String {
    key.replace('-', "_")
}

fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for ch in text.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(current);
    }
    words
}

/// Splits an `isolcpus=` value into its flags (`domain`, `nohz`, `managed_irq`) and its cpu list.
pub(crate) fn split_isolcpus(value: &str) -> (Vec<String>, String) {
    let mut flags = Vec::new();
    let mut rest = Vec::new();
    for item in value.split(',') {
        let is_flag = rest.is_empty()
            && item.len() > 1
            && item.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        if is_flag {
            flags.push(item.to_string());
        } else {
            rest.push(item);
        }
    }
    (flags, rest.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_last_wins_and_bare_keys() {
        let c = Cmdline::parse("a=1 b=\"x y\" a=2 rcu_nocbs nohz_full=3\n");
        assert_eq!(c.value("a"), Some("2"));
        assert_eq!(c.value("b"), Some("x y"));
        assert!(c.has("rcu_nocbs"));
        assert_eq!(c.value("rcu_nocbs"), None);
        assert_eq!(c.value("nohz-full"), Some("3"));
        assert!(!c.has("missing"));
    }

    #[test]
    fn isolcpus_flags() {
        assert_eq!(
            split_isolcpus("managed_irq,domain,2-5,7"),
            (
                vec!["managed_irq".to_string(), "domain".to_string()],
                "2-5,7".to_string()
            )
        );
        assert_eq!(split_isolcpus("2-N"), (vec![], "2-N".to_string()));
        assert_eq!(
            split_isolcpus("nohz,N"),
            (vec!["nohz".to_string()], "N".to_string())
        );
    }
}
