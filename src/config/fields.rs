//! Reading typed values out of the YAML tree, with key paths (`dbs[0].replica.bucket`), line
//! numbers, unknown-key warnings and the "${NAME} is not set" bookkeeping.

use std::path::PathBuf;
use std::time::Duration;

use super::duration::parse_go_duration;
use super::error::{ConfigError, Location};
use super::expand::UnsetVar;
use super::yaml::Node;

/// Parsing context: which file, which environment, what we have noticed so far.
pub(crate) struct Ctx<'e> {
    pub file: String,
    pub base_dir: PathBuf,
    pub env: &'e dyn Fn(&str) -> Option<String>,
    pub unset: Vec<UnsetVar>,
    pub warnings: Vec<String>,
}

/// A string value with where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Val {
    pub text: String,
    pub key: String,
    pub line: usize,
}

impl Val {
    pub fn non_empty(&self) -> Option<&str> {
        (!self.text.is_empty()).then_some(self.text.as_str())
    }
}

impl Ctx<'_> {
    pub fn at(&self, line: usize) -> Location {
        Location {
            file: self.file.clone(),
            line: (line > 0).then_some(line),
        }
    }

    pub fn env(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.is_empty())
    }

    /// Unset variables used on `line` (where a value was emptied by expansion).
    pub fn unset_on(&self, line: usize) -> Vec<String> {
        let mut v: Vec<String> = self
            .unset
            .iter()
            .filter(|u| u.line == line)
            .map(|u| u.name.clone())
            .collect();
        v.dedup();
        v
    }

    pub fn warn(&mut self, line: usize, msg: impl AsRef<str>) {
        let w = format!("{}: {}", self.at(line), msg.as_ref());
        self.warnings.push(w);
    }

    fn scalar<'n>(
        &self,
        node: &'n Node,
        key: &str,
        secret: bool,
    ) -> Result<Option<&'n str>, ConfigError> {
        if node.is_null() {
            return Ok(None);
        }
        match node {
            Node::Scalar { text, .. } => Ok(Some(text.as_str())),
            other => Err(ConfigError::InvalidValue {
                at: self.at(other.line()),
                key: key.into(),
                message: format!(
                    "expected a single value, found {}{}",
                    other.kind_name(),
                    if secret {
                        ""
                    } else {
                        "; check the indentation of the lines below it"
                    }
                ),
            }),
        }
    }

    /// A string. YAML null (e.g. `key: ${UNSET}` after expansion) reads as an empty `Val`,
    /// so callers can tell "given but empty" from "absent" and report "${VAR} is not set".
    pub fn string(&self, node: &Node, key: &str) -> Result<Val, ConfigError> {
        let text = self.scalar(node, key, false)?.unwrap_or("").to_string();
        Ok(Val {
            text,
            key: key.into(),
            line: node.line(),
        })
    }

    /// Like `string`, for secrets: no error message will contain the value.
    pub fn secret(&self, node: &Node, key: &str) -> Result<Val, ConfigError> {
        let text = self.scalar(node, key, true)?.unwrap_or("").to_string();
        Ok(Val {
            text,
            key: key.into(),
            line: node.line(),
        })
    }

    /// YAML 1.1 booleans, as Go's yaml.v2 reads them (true/false, yes/no, on/off, y/n).
    pub fn bool(&self, node: &Node, key: &str) -> Result<Option<bool>, ConfigError> {
        let Some(t) = self.scalar(node, key, false)? else {
            return Ok(None);
        };
        match t {
            "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y" | "Y" => {
                Ok(Some(true))
            }
            "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n"
            | "N" => Ok(Some(false)),
            "" => Ok(None),
            other => Err(ConfigError::InvalidValue {
                at: self.at(node.line()),
                key: key.into(),
                message: format!(
                    "{other:?} is not a boolean; use true or false{}",
                    self.unset_note(node.line())
                ),
            }),
        }
    }

    fn unset_note(&self, line: usize) -> String {
        let u = self.unset_on(line);
        if u.is_empty() {
            String::new()
        } else {
            format!(
                " ({} not set)",
                u.iter()
                    .map(|n| format!("${{{n}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }

    /// A Go duration. Null or empty (e.g. from an unset variable) means "not given".
    pub fn duration(&self, node: &Node, key: &str) -> Result<Option<Duration>, ConfigError> {
        let Some(t) = self.scalar(node, key, false)? else {
            return Ok(None);
        };
        if t.trim().is_empty() {
            return Ok(None);
        }
        parse_go_duration(t)
            .map(Some)
            .map_err(|reason| ConfigError::InvalidDuration {
                at: self.at(node.line()),
                key: key.into(),
                value: t.to_string(),
                reason: reason + &self.unset_note(node.line()),
            })
    }

    /// A duration that must be > 0 when given.
    pub fn positive_duration(
        &self,
        node: &Node,
        key: &str,
    ) -> Result<Option<Duration>, ConfigError> {
        let d = self.duration(node, key)?;
        if d == Some(Duration::ZERO) {
            return Err(ConfigError::InvalidDuration {
                at: self.at(node.line()),
                key: key.into(),
                value: self.scalar(node, key, false)?.unwrap_or("").to_string(),
                reason: "must be greater than 0".into(),
            });
        }
        Ok(d)
    }

    /// An integer (decimal, optional sign and `_` separators, or 0x hex).
    pub fn int(&self, node: &Node, key: &str) -> Result<Option<i64>, ConfigError> {
        let Some(t) = self.scalar(node, key, false)? else {
            return Ok(None);
        };
        if t.is_empty() {
            return Ok(None);
        }
        let clean = t.replace('_', "");
        let (neg, digits) = match clean.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
        };
        // YAML 1.1 (Go's yaml.v2): 0x.. hex, 0o.. or a leading 0 (e.g. 0600) octal.
        let magnitude = if let Some(h) = digits.strip_prefix("0x") {
            i64::from_str_radix(h, 16).ok()
        } else if let Some(o) = digits.strip_prefix("0o") {
            i64::from_str_radix(o, 8).ok()
        } else if digits.len() > 1 && digits.starts_with('0') {
            i64::from_str_radix(&digits[1..], 8).ok()
        } else if digits.bytes().all(|c| c.is_ascii_digit()) {
            digits.parse::<i64>().ok()
        } else {
            None
        };
        let parsed = magnitude.map(|m| if neg { -m } else { m });
        parsed.map(Some).ok_or_else(|| ConfigError::InvalidValue {
            at: self.at(node.line()),
            key: key.into(),
            message: format!(
                "{t:?} is not a whole number; write it like 1000{}",
                self.unset_note(node.line())
            ),
        })
    }

    /// A byte size like `5MiB`, `5MB`, `1.5GB`, `5242880` (go-humanize rules: K/KB = 1000,
    /// Ki/KiB = 1024).
    pub fn byte_size(&self, node: &Node, key: &str) -> Result<Option<u64>, ConfigError> {
        let Some(t) = self.scalar(node, key, false)? else {
            return Ok(None);
        };
        if t.trim().is_empty() {
            return Ok(None);
        }
        parse_byte_size(t)
            .map(Some)
            .ok_or_else(|| ConfigError::InvalidValue {
                at: self.at(node.line()),
                key: key.into(),
                message: format!("{t:?} is not a byte size; write it like 5MiB, 16MB or 5242880"),
            })
    }
}

pub(crate) fn parse_byte_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = (&s[..split], s[split..].trim());
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024f64.powi(2),
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024f64.powi(3),
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1024f64.powi(4),
        _ => return None,
    };
    let v = n * mult;
    (0.0..9.2e18).contains(&v).then_some(v as u64)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Keys Litestream 0.3 had that 0.5 dropped, with what to do instead.
fn legacy_hint(key: &str) -> Option<&'static str> {
    Some(match key {
        "snapshot-interval" => "a Litestream 0.3 replica key; use the top-level `snapshot: {interval: ...}`",
        "retention-check-interval" => "a Litestream 0.3 replica key; Litestream 0.5 and walship enforce retention on their own schedule",
        "wal-retention" | "wal-retention-check-interval" => "a Litestream 0.3 key with no 0.5 equivalent",
        "max-checkpoint-page-n" => "did you mean `max-checkpoint-page-count` or `truncate-page-n`?",
        _ => return None,
    })
}

/// The entries of one YAML mapping, consumed key by key; what is left over is unknown.
pub(crate) struct Fields<'n> {
    pub prefix: String,
    entries: Vec<(String, &'n Node, usize)>,
    used: Vec<bool>,
    known: Vec<&'static str>,
}

pub(crate) fn join_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

impl<'n> Fields<'n> {
    /// Read a mapping (null reads as empty). `<<` merge keys are applied (explicit keys win);
    /// a repeated key warns and the last one wins, as in Go's yaml.v2.
    pub fn of(ctx: &mut Ctx<'_>, node: &'n Node, prefix: &str) -> Result<Fields<'n>, ConfigError> {
        let mut f = Fields {
            prefix: prefix.to_string(),
            entries: Vec::new(),
            used: Vec::new(),
            known: Vec::new(),
        };
        if node.is_null() {
            return Ok(f);
        }
        let Node::Map { entries, .. } = node else {
            return Err(ConfigError::InvalidValue {
                at: ctx.at(node.line()),
                key: if prefix.is_empty() {
                    "(top level)".into()
                } else {
                    prefix.into()
                },
                message: format!(
                    "expected a mapping of `key: value` lines, found {}",
                    node.kind_name()
                ),
            });
        };
        let mut merged: Vec<&'n Node> = Vec::new();
        for (k, v) in entries {
            let Node::Scalar { text: key, .. } = k else {
                ctx.warn(
                    k.line(),
                    format!(
                        "ignoring a non-text key under `{}`",
                        if prefix.is_empty() {
                            "(top level)"
                        } else {
                            prefix
                        }
                    ),
                );
                continue;
            };
            if key == "<<" {
                match v {
                    Node::Seq { items, .. } => merged.extend(items.iter()),
                    other => merged.push(other),
                }
                continue;
            }
            if let Some(pos) = f.entries.iter().position(|(e, _, _)| e == key) {
                let first = f.entries[pos].2;
                ctx.warn(
                    k.line(),
                    format!(
                        "`{}` appears twice (also on line {first}); the last one wins",
                        join_key(prefix, key)
                    ),
                );
                f.entries.remove(pos);
            }
            f.entries.push((key.clone(), v, k.line()));
        }
        for m in merged {
            let Node::Map { entries, .. } = m else {
                return Err(ConfigError::InvalidValue {
                    at: ctx.at(m.line()),
                    key: join_key(prefix, "<<"),
                    message: "a `<<` merge key must refer to a mapping".into(),
                });
            };
            for (k, v) in entries {
                if let Node::Scalar { text: key, .. } = k {
                    if key != "<<" && !f.entries.iter().any(|(e, _, _)| e == key) {
                        f.entries.push((key.clone(), v, k.line()));
                    }
                }
            }
        }
        f.used = vec![false; f.entries.len()];
        Ok(f)
    }

    /// Take `key` if present: the node and its full key path.
    pub fn take(&mut self, key: &'static str) -> Option<(&'n Node, String)> {
        self.known.push(key);
        let pos = self.entries.iter().position(|(k, _, _)| k == key)?;
        self.used[pos] = true;
        Some((self.entries[pos].1, join_key(&self.prefix, key)))
    }

    /// Mark keys as recognised-and-ignored.
    pub fn ignore(&mut self, keys: &[&'static str]) {
        for k in keys {
            let _ = self.take(k);
        }
    }

    /// Warn about every key nobody took.
    pub fn finish(self, ctx: &mut Ctx<'_>) {
        for (i, (key, _, line)) in self.entries.iter().enumerate() {
            if self.used[i] {
                continue;
            }
            let path = join_key(&self.prefix, key);
            let hint = if let Some(h) = legacy_hint(key) {
                format!(": {h}")
            } else if let Some(best) = self
                .known
                .iter()
                .map(|k| (edit_distance(key, k), *k))
                .filter(|(d, _)| *d <= 2)
                .min()
            {
                format!("; did you mean `{}`?", best.1)
            } else {
                String::new()
            };
            ctx.warn(*line, format!("unknown key `{path}` is ignored{hint}"));
        }
    }
}

/// The value's text, if it was given and is not empty.
pub(crate) fn ne(v: &Option<Val>) -> Option<String> {
    v.as_ref().and_then(|v| v.non_empty()).map(str::to_string)
}

/// A "missing value" error at the value if there is one (it came out empty), else at `key` on
/// `line`, naming any variable that is unset on that line.
pub(crate) fn missing(
    ctx: &Ctx<'_>,
    v: Option<&Val>,
    key: String,
    line: usize,
    hint: &str,
) -> ConfigError {
    let (key, line) = v.map_or((key, line), |v| (v.key.clone(), v.line));
    ConfigError::missing(ctx.at(line), key, hint, ctx.unset_on(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("5MiB"), Some(5 * 1024 * 1024));
        assert_eq!(parse_byte_size("5MB"), Some(5_000_000));
        assert_eq!(parse_byte_size("1.5GB"), Some(1_500_000_000));
        assert_eq!(parse_byte_size("100"), Some(100));
        assert_eq!(parse_byte_size("100 KiB"), Some(102_400));
        assert_eq!(parse_byte_size("lots"), None);
        assert_eq!(parse_byte_size("5XB"), None);
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("bucket", "bukcet"), 2);
        assert_eq!(edit_distance("region", "region"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
