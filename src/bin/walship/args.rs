//! Go-`flag`-style command-line parsing: `-name value`, `-name=value`, and the same with
//! `--`; boolean flags take no value (or `=true`/`=false`). Unlike Go, flags may also follow
//! the positional arguments; `--` ends flag parsing. A flag with an optional value takes the
//! next argument only when it is one of its values, and means its default value alone.

use std::collections::HashMap;

/// One accepted flag.
pub struct Flag {
    pub name: &'static str,
    /// False for a boolean flag.
    pub takes_value: bool,
    /// For a flag whose value may be left out: its values, and what it means alone.
    pub optional: Option<(&'static [&'static str], &'static str)>,
}

pub const fn value(name: &'static str) -> Flag {
    Flag {
        name,
        takes_value: true,
        optional: None,
    }
}

pub const fn switch(name: &'static str) -> Flag {
    Flag {
        name,
        takes_value: false,
        optional: None,
    }
}

/// `-name`, `-name V` or `-name=V` where V is one of `values`; alone it means `alone`.
pub const fn optional(
    name: &'static str,
    values: &'static [&'static str],
    alone: &'static str,
) -> Flag {
    Flag {
        name,
        takes_value: true,
        optional: Some((values, alone)),
    }
}

/// What the command line said.
#[derive(Debug, Default)]
pub struct Parsed {
    values: HashMap<&'static str, String>,
    pub positional: Vec<String>,
    pub help: bool,
}

impl Parsed {
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn switch(&self, name: &str) -> bool {
        self.values.get(name).is_some_and(|v| v == "true")
    }
}

pub fn parse(args: &[String], flags: &[Flag]) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    let mut it = args.iter().peekable();
    while let Some(arg) = it.next() {
        if arg == "--" {
            out.positional.extend(it.by_ref().cloned());
            break;
        }
        let Some(body) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|b| !b.is_empty())
        else {
            out.positional.push(arg.clone());
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        if matches!(name, "h" | "help") {
            out.help = true;
            continue;
        }
        let Some(flag) = flags.iter().find(|f| f.name == name) else {
            return Err(format!("unknown flag: {arg}"));
        };
        let v = if flag.takes_value {
            match (inline, flag.optional) {
                (Some(v), _) => v.to_string(),
                (None, Some((values, alone))) => match it.peek() {
                    Some(next) if values.contains(&next.as_str()) => it.next().unwrap().clone(),
                    _ => alone.to_string(),
                },
                (None, None) => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("flag needs a value: -{name}"))?,
            }
        } else {
            match inline {
                None | Some("true" | "1" | "t" | "T" | "TRUE" | "True") => "true".into(),
                Some("false" | "0" | "f" | "F" | "FALSE" | "False") => "false".into(),
                Some(v) => return Err(format!("invalid boolean value {v:?} for -{name}")),
            }
        };
        out.values.insert(flag.name, v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn both_dash_forms_and_inline_values() {
        let flags = [value("o"), value("txid"), switch("force")];
        let p = parse(&s(&["-o", "a", "--txid=1f", "db", "--force"]), &flags).unwrap();
        assert_eq!(p.value("o"), Some("a"));
        assert_eq!(p.value("txid"), Some("1f"));
        assert!(p.switch("force"));
        assert_eq!(p.positional, ["db"]);
        assert!(parse(&s(&["-nope"]), &flags).is_err());
        assert!(parse(&s(&["-o"]), &flags).is_err());
        assert!(!parse(&s(&["-force=false"]), &flags)
            .unwrap()
            .switch("force"));
        assert_eq!(parse(&s(&["--", "-o"]), &flags).unwrap().positional, ["-o"]);
        assert!(parse(&s(&["--help"]), &flags).unwrap().help);
    }

    #[test]
    fn optional_values() {
        let flags = [
            optional("check", &["full", "quick", "none"], "full"),
            value("o"),
        ];
        let p = parse(&s(&["-check", "-o", "x", "db"]), &flags).unwrap();
        assert_eq!((p.value("check"), p.value("o")), (Some("full"), Some("x")));
        assert_eq!(p.positional, ["db"]);
        let p = parse(&s(&["-o", "x", "--check", "db"]), &flags).unwrap();
        assert_eq!(
            (p.value("check"), p.positional.as_slice()),
            (Some("full"), &["db".to_string()][..])
        );
        let p = parse(&s(&["-check", "quick", "db"]), &flags).unwrap();
        assert_eq!(
            (p.value("check"), p.positional.as_slice()),
            (Some("quick"), &["db".to_string()][..])
        );
        assert_eq!(
            parse(&s(&["-check=none"]), &flags).unwrap().value("check"),
            Some("none")
        );
    }
}
