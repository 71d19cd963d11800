//! Path handling for paths written in the config: Go's `filepath.Clean`, `~` expansion from
//! `HOME`, and resolving relative paths against the base directory (as Litestream's
//! `filepath.Abs` does).
//!
//! Must never touch the filesystem: everything here is lexical. Canonicalising (resolving
//! symlinks) to compare database paths is [`super::canonical_db_path`]'s job.

use std::path::{Component, Path, PathBuf};

use super::error::ConfigError;
use super::fields::Ctx;

/// Lexically normalise an absolute path (Go's `filepath.Clean`, as `filepath.Abs` does).
pub(crate) fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `~` / `~/x` → `$HOME/x`; relative → `base_dir/x` (the process's working directory for
/// files, like Litestream's `filepath.Abs`); then cleaned.
pub(crate) fn resolve_path(
    ctx: &Ctx<'_>,
    s: &str,
    key: &str,
    line: usize,
) -> Result<PathBuf, ConfigError> {
    let p = if s == "~" || s.starts_with("~/") {
        let home = ctx.env("HOME").ok_or_else(|| ConfigError::InvalidValue {
            at: ctx.at(line),
            key: key.into(),
            message: format!("{s:?} starts with ~ but HOME is not set; write an absolute path"),
        })?;
        PathBuf::from(home).join(s.trim_start_matches('~').trim_start_matches('/'))
    } else {
        PathBuf::from(s)
    };
    Ok(clean(&if p.is_absolute() {
        p
    } else {
        ctx.base_dir.join(p)
    }))
}
