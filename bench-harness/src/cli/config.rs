//! `--config FILE` of `feed`, `send`, `recv` and `exchange`, and `mdbus config example ROLE`.
//!
//! A configuration file is TOML whose keys are the verb's long flag names (`nak-delay =
//! "1ms"`, `cpus = [2, 3]`, `summary = true`). It is merged into the command line rather than
//! read by a second parser: each key becomes `--key=value`, inserted right after the verb, so
//! clap checks every value once, with the same rules and messages as on the command line. A
//! key whose flag the command line also gives is left out, so the command line wins. Unknown
//! keys, tables, and values of the wrong kind are refused naming the key and the file.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;

/// The verbs that take `--config FILE`.
pub const ROLES: [&str; 4] = ["feed", "send", "recv", "exchange"];

/// `mdbus config`: configuration files.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ConfigCommand {
    /// Print a commented example configuration file for ROLE, every flag with its default,
    /// e.g. `mdbus config example feed > feed.toml`, then `mdbus feed --config feed.toml`.
    Example {
        /// feed, send, recv or exchange.
        #[arg(value_parser = ROLES)]
        role: String,
    },
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--config` without a file.
    #[error("--config: a file is needed")]
    NoFile,
    /// The file cannot be read.
    #[error("{}: cannot read the configuration: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{}: not a valid TOML configuration: {reason}", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the line.
        reason: String,
    },
    /// A key that is no flag of the verb.
    #[error(
        "{}: unknown key `{key}`: `mdbus {verb}` has no flag --{key} (the keys are the long \
         flag names; `mdbus config example {verb}` lists them)",
        path.display()
    )]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The verb.
        verb: String,
        /// The key.
        key: String,
    },
    /// A value of the wrong kind for its key.
    #[error("{}: key `{key}`: {why}", path.display())]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What was expected.
        why: String,
    },
}

/// A command line with a configuration file merged in.
#[derive(Debug)]
pub struct Merged {
    /// The command line to parse.
    pub args: Vec<OsString>,
    /// The file merged in, if any.
    pub file: Option<PathBuf>,
    /// The keys taken from the file.
    pub applied: Vec<String>,
    /// The keys of the file that the command line overrode.
    pub overridden: Vec<String>,
}

impl Merged {
    /// A note naming the file and the key when clap refused a value that came from the file.
    pub fn blame(&self, e: &clap::Error) -> Option<String> {
        let file = self.file.as_ref()?;
        let arg = e.get(clap::error::ContextKind::InvalidArg)?.to_string();
        let key = arg
            .trim_start_matches('-')
            .split([' ', '='])
            .next()
            .unwrap_or_default();
        self.applied.iter().any(|k| k == key).then(|| {
            format!(
                "mdbus: the value of key `{key}` comes from the configuration {}",
                file.display()
            )
        })
    }
}

/// The long flags a configuration file of `sub` may set: its visible long flags but
/// `--config` itself.
fn keys(sub: &clap::Command) -> impl Iterator<Item = (&str, &clap::Arg)> {
    sub.get_arguments().filter_map(|a| {
        let long = a.get_long()?;
        (!a.is_hide_set() && !a.is_global_set() && long != "config" && long != "help")
            .then_some((long, a))
    })
}

/// Merges the `--config FILE` of a role's verb in `argv` into it (see the module docs);
/// returns `argv` as it is when there is none. `cmd` is the whole command line's definition.
pub fn merge(cmd: &clap::Command, argv: Vec<OsString>) -> Result<Merged, ConfigError> {
    let mut merged = Merged {
        args: argv,
        file: None,
        applied: Vec::new(),
        overridden: Vec::new(),
    };
    // The verb: the first word that is not a flag (the global flags take no value).
    let Some(verb_at) = merged
        .args
        .iter()
        .skip(1)
        .position(|a| !a.to_string_lossy().starts_with('-'))
        .map(|i| i + 1)
    else {
        return Ok(merged);
    };
    let verb = merged.args[verb_at].to_string_lossy().into_owned();
    let Some(sub) = ROLES
        .contains(&verb.as_str())
        .then(|| cmd.find_subcommand(&verb))
        .flatten()
    else {
        return Ok(merged);
    };
    // What the command line gives, up to a `--`.
    let rest: Vec<String> = merged.args[verb_at + 1..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .take_while(|a| a != "--")
        .collect();
    let mut path = None;
    for (i, a) in rest.iter().enumerate() {
        if a == "--config" {
            path = Some(rest.get(i + 1).ok_or(ConfigError::NoFile)?.clone());
        } else if let Some(p) = a.strip_prefix("--config=") {
            path = Some(p.to_owned());
        }
    }
    let Some(path) = path.map(PathBuf::from) else {
        return Ok(merged);
    };
    let given: Vec<&str> = rest
        .iter()
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| a.split('=').next().unwrap_or_default())
        .collect();
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Toml {
            path: path.clone(),
            reason: e.to_string().trim_end().to_owned(),
        })?;
    let bad = |key: &str, why: &str| ConfigError::BadValue {
        path: path.clone(),
        key: key.to_owned(),
        why: why.to_owned(),
    };
    let mut inserted: Vec<OsString> = Vec::new();
    for (key, value) in &table {
        let Some((_, arg)) = keys(sub).find(|(long, _)| long == key) else {
            return Err(ConfigError::UnknownKey {
                path: path.clone(),
                verb: verb.clone(),
                key: key.clone(),
            });
        };
        let is_flag = !arg.get_action().takes_values();
        let many = matches!(arg.get_action(), clap::ArgAction::Append);
        let values: Vec<String> =
            match value {
                toml::Value::Boolean(b) if is_flag => {
                    if *b {
                        vec![String::new()]
                    } else {
                        Vec::new()
                    }
                }
                _ if is_flag => return Err(bad(key, "expected true or false")),
                toml::Value::Array(items) if many => items
                    .iter()
                    .map(|v| scalar(v).ok_or_else(|| bad(key, "expected a list of values")))
                    .collect::<Result<_, _>>()?,
                toml::Value::Array(_) => return Err(bad(key, "expected one value, not a list")),
                v => vec![scalar(v).ok_or_else(|| {
                    bad(key, "expected a value (a string or a number), not a table")
                })?],
            };
        if given.contains(&key.as_str()) {
            merged.overridden.push(key.clone());
            continue;
        }
        merged.applied.push(key.clone());
        for v in values {
            inserted.push(if is_flag {
                format!("--{key}").into()
            } else {
                format!("--{key}={v}").into()
            });
        }
    }
    merged.args.splice(verb_at + 1..verb_at + 1, inserted);
    merged.file = Some(path);
    Ok(merged)
}

/// A TOML value as the text of a flag's value; `None` for a table or a list.
fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(d) => Some(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

/// Values for the keys that have no default but that a role needs, so that every example
/// parses back and runs.
const EXAMPLE_VALUES: [(&str, &str, &str); 4] = [
    ("feed", "group", "233.54.12.111:26477"),
    ("exchange", "group", "239.255.0.2:26400"),
    ("send", "stream", "nasdaq.itch"),
    ("recv", "stream", "nasdaq.itch"),
];

/// A commented example configuration for `role` (one of [`ROLES`]), each key with its help
/// and its default (commented out where there is none).
pub fn example(cmd: &clap::Command, role: &str) -> String {
    let mut out = format!(
        "# mdbus {role}: an example configuration, for `mdbus {role} --config FILE{}`.\n\
         # The keys are the long flag names; a flag given on the command line wins over the\n\
         # key here. Durations take a unit (`250us`, `1ms`, `2s`), sizes may (`64KiB`,\n\
         # `16MiB`; a bare number is bytes).\n",
        if role == "exchange" { " CAPTURE" } else { "" }
    );
    let Some(sub) = cmd.find_subcommand(role) else {
        return out;
    };
    for (long, arg) in keys(sub) {
        out.push('\n');
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        for line in wrap(&help, 88) {
            let _ = writeln!(out, "# {line}");
        }
        let example = EXAMPLE_VALUES
            .iter()
            .find(|(r, k, _)| *r == role && *k == long)
            .map(|(_, _, v)| *v);
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let many = matches!(arg.get_action(), clap::ArgAction::Append);
        if let Some(v) = example {
            let _ = writeln!(out, "{long} = {}", literal(v));
        } else if !arg.get_action().takes_values() {
            let _ = writeln!(out, "{long} = false");
        } else if defaults.is_empty() {
            let name = arg
                .get_value_names()
                .and_then(|n| n.first())
                .map_or_else(|| long.to_uppercase(), |n| n.to_string());
            let _ = writeln!(
                out,
                "# {long} = {}",
                if many {
                    format!("[{}]", literal(&name))
                } else {
                    literal(&name)
                }
            );
        } else if many {
            let items: Vec<String> = defaults.iter().map(|d| literal(d)).collect();
            let _ = writeln!(out, "{long} = [{}]", items.join(", "));
        } else {
            let _ = writeln!(out, "{long} = {}", literal(&defaults.join(",")));
        }
    }
    out
}

/// `text` as a TOML value: an integer as it is, anything else a string.
fn literal(text: &str) -> String {
    if text.parse::<i64>().is_ok() {
        text.to_owned()
    } else {
        toml::Value::String(text.to_owned()).to_string()
    }
}

/// `text`'s paragraphs wrapped at `width` columns (blank lines kept).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for para in text.lines() {
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}
