//! `walship replicate -exec "CMD ARGS"`: Litestream's way of wrapping an app, for a replicator
//! that lives inside the app's process.
//!
//! Starts the command with walship injected and no change to the app: the extension in
//! `LD_PRELOAD` (programs on the system's libsqlite3, through `src/ffi/preload.rs`) and a node
//! preload in `NODE_OPTIONS` (better-sqlite3, `node_preload.js`). The command's own process does
//! the replicating. When it ends, walship reads which configured databases it opened (the preload
//! notes each one), ships through the extension what it committed and did not ship (a command
//! killed before its last close), says once if it opened none, and leaves with the command's
//! status (`child.rs`).
//! Owns: the command's environment and the run's directory (the node preload and the note of
//! opened databases, removed at the end). Never: replicates anything while the command runs;
//! changes the command's arguments, input or output; runs without a command (Litestream's daemon
//! form has no equivalent here, and says so).

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, Context};
use walvfs::config::Config;

use crate::args::{self, value, Flag};
use crate::child::{self, Child, Status};
use crate::{shellwords, sqlite, CmdError};

pub const USAGE: &str = "\
Usage:
  walship replicate [-config PATH] -exec \"CMD ARGS\"

Runs CMD with walship inside it, so the databases the config names replicate from CMD's own
process, with no change to its code: the same command line as `litestream replicate -exec`.
CMD is split into words as Litestream does (quotes and backslashes; no variables, pipes or
redirections: use -exec \"sh -c '...'\" for those) and run directly, with its input and output
untouched. walship reaches:
  - programs on the system's shared libsqlite3 (the sqlite3 shell, Debian's python3):
    LD_PRELOAD of the extension, which makes walship their default VFS;
  - node with better-sqlite3 (require or import): a preload in NODE_OPTIONS opens the databases
    the config names through walship (others as before) and ships them on SIGTERM, SIGINT and
    SIGHUP before the process dies of the signal, and at exit.
SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are passed to CMD. When CMD ends, walship
ships what it committed and had not shipped yet (a CMD killed before closing its databases),
says so if CMD never opened a database the config names, and exits with CMD's exit code, or
dies of the signal CMD died of.

Flags:
  -config PATH   config file; default: $WALSHIP_CONFIG, ./walship.yml, ./litestream.yml, then
                 $WALSHIP_REPLICA_URL. CMD reads the same file.
  -exec CMD      the command to run

The extension is libwalvfs.so next to the walship binary, or $WALSHIP_EXTENSION.
";

const FLAGS: &[Flag] = &[value("config"), value("exec")];

const NO_EXEC: &str = "walship replicate needs -exec \"CMD\": walship replicates from inside your \
application's process, so there is no replication daemon to run on its own. Start the application \
through it instead: walship replicate -config litestream.yml -exec \"node dist/src/index.js\" (a \
systemd unit or container that ran `litestream replicate` beside the app runs the app this way)";

pub fn run(argv: &[String]) -> Result<(), CmdError> {
    let a = args::parse(argv, FLAGS).map_err(CmdError::Usage)?;
    if a.help {
        print!("{USAGE}");
        return Ok(());
    }
    if !a.positional.is_empty() {
        return Err(CmdError::Usage(format!(
            "unexpected arguments {:?}: with -exec, the databases come from the config",
            a.positional.join(" ")
        )));
    }
    if a.value("exec").is_none()
        && a.value("config").is_none()
        && Config::discover().ok().flatten().is_none()
    {
        return Err(anyhow!("{NO_EXEC}").into());
    }
    let cfg = load_config(a.value("config"))?;
    // `-exec`, else the config's `exec:` (Litestream runs that one when the flag is absent).
    let Some(exec) = a
        .value("exec")
        .map(str::to_string)
        .or_else(|| cfg.exec.clone())
    else {
        return Err(anyhow!("{NO_EXEC}").into());
    };
    let words = shellwords::split(&exec).map_err(|e| CmdError::Usage(format!("-exec: {e}")))?;
    let ext = extension()?;
    let run = RunDir::create()?;

    let mut cmd = Command::new(&words[0]);
    cmd.args(&words[1..]);
    cmd.env("LD_PRELOAD", prepend_preload(&ext));
    cmd.env("WALSHIP_PRELOAD", &ext);
    cmd.env("WALSHIP_EXEC_OPENED", run.opened());
    cmd.env("NODE_OPTIONS", node_options(&run.node_preload()));
    cmd.env(
        "WALSHIP_EXEC_FLUSH_MS",
        cfg.shutdown_sync_timeout.as_millis().to_string(),
    );

    child::block_signals();
    let child = match Child::spawn(&mut cmd) {
        Ok(c) => c,
        Err(e) => {
            run.remove();
            return Err(anyhow!("cannot start {:?}: {e}", words[0]).into());
        }
    };
    {
        let run = run.path.clone();
        child.on_late_signal(move |status| {
            let _ = fs::remove_dir_all(&run);
            child::exit_like(status)
        });
    }
    let status = child.wait();
    // The final sync below runs the extension in this process: only its errors are news.
    if std::env::var_os("WALSHIP_LOG").is_none() {
        std::env::set_var("WALSHIP_LOG", "error");
    }
    after_command(&cfg, &ext, &run, &words[0], status);
    run.remove();
    child::exit_like(status)
}

/// The config the command will find, checked before it starts. `-config` is passed on as an
/// absolute `$WALSHIP_CONFIG`, unless the command finds that file in its directory anyway.
fn load_config(flag: Option<&str>) -> Result<Config, CmdError> {
    let cfg = match flag {
        Some(p) => {
            let abs = std::path::absolute(p).with_context(|| format!("config path {p}"))?;
            let cfg = Config::load(&abs).with_context(|| format!("loading config {p}"))?;
            if found_anyway(&abs) != Some(true) {
                std::env::set_var(walvfs::config::ENV_CONFIG, &abs);
            }
            cfg
        }
        None => Config::discover()
            .context("finding the config")?
            .ok_or_else(|| {
                anyhow!(
                    "no config: pass -config litestream.yml (walship looks for $WALSHIP_CONFIG, \
                     ./walship.yml, ./litestream.yml, then $WALSHIP_REPLICA_URL)"
                )
            })?,
    };
    if cfg.dbs.is_empty() && cfg.default_replica.is_none() {
        return Err(anyhow!(
            "{} names no databases (`dbs:` is empty), so there is nothing to replicate",
            cfg.source_name()
        )
        .into());
    }
    Ok(cfg)
}

/// Whether discovery in this directory, with no `$WALSHIP_CONFIG`, finds `config`.
fn found_anyway(config: &Path) -> Option<bool> {
    if std::env::var_os(walvfs::config::ENV_CONFIG).is_some_and(|v| !v.is_empty()) {
        return Some(false);
    }
    let cwd = std::env::current_dir().ok()?;
    let first = walvfs::config::CONFIG_FILE_NAMES
        .iter()
        .map(|n| cwd.join(n))
        .find(|p| p.is_file())?;
    Some(fs::canonicalize(first).ok()? == fs::canonicalize(config).ok()?)
}

/// The extension: `$WALSHIP_EXTENSION`, else `libwalvfs.so` next to this binary (or in the
/// `lib` directory beside its `bin`).
fn extension() -> Result<PathBuf, CmdError> {
    if let Some(p) = std::env::var_os("WALSHIP_EXTENSION").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return fs::canonicalize(&p)
            .map_err(|e| anyhow!("WALSHIP_EXTENSION={}: {e}", p.display()).into());
    }
    let exe = std::env::current_exe().context("finding the walship binary")?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [
        dir.join("libwalvfs.so"),
        dir.join("../lib/libwalvfs.so"),
        dir.join("../lib/walship/libwalvfs.so"),
    ];
    candidates
        .iter()
        .find_map(|c| fs::canonicalize(c).ok())
        .ok_or_else(|| {
            anyhow!(
                "cannot find the walship extension: looked for {} (build it with `make build`, \
                 or set WALSHIP_EXTENSION=/path/to/libwalvfs.so)",
                candidates
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .into()
        })
}

/// `LD_PRELOAD` with the extension first, keeping what was there.
fn prepend_preload(ext: &Path) -> OsString {
    let mut v = OsString::from(ext);
    match std::env::var_os("LD_PRELOAD").filter(|p| !p.is_empty()) {
        Some(old)
            if old
                .to_string_lossy()
                .split([':', ' '])
                .any(|p| Path::new(p) == ext) =>
        {
            old
        }
        Some(old) => {
            v.push(":");
            v.push(old);
            v
        }
        None => v,
    }
}

/// `NODE_OPTIONS` plus `--require "<preload>"`.
fn node_options(preload: &Path) -> OsString {
    let quoted = preload
        .to_string_lossy()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let mut v = std::env::var_os("NODE_OPTIONS").unwrap_or_default();
    if !v.is_empty() {
        v.push(" ");
    }
    v.push(format!("--require \"{quoted}\""));
    v
}

/// After the command: ship what its configured databases hold unshipped, or say that it opened
/// none of them.
fn after_command(cfg: &Config, ext: &Path, run: &RunDir, program: &str, status: Status) {
    let opened = fs::read_to_string(run.opened()).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    let dbs: Vec<&str> = opened
        .lines()
        .filter(|l| !l.is_empty() && seen.insert(*l))
        .filter(|l| cfg.db_for(Path::new(l)).is_some())
        .collect();
    if dbs.is_empty() {
        let names = if cfg.dbs.is_empty() {
            "any database, under WALSHIP_REPLICA_URL".to_string()
        } else {
            cfg.dbs
                .iter()
                .map(|d| d.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        eprintln!(
            "walship: {program} ended ({status}) without opening a database that {} names \
             ({names}), so nothing was replicated: walship reaches programs on the system's \
             libsqlite3 (sqlite3, Debian's python3) and node with better-sqlite3, and relative \
             paths are taken from the directory the program opens them in",
            cfg.source_name()
        );
        return;
    }
    let timeout = cfg.shutdown_sync_timeout;
    if timeout == Duration::ZERO {
        return;
    }
    for db in dbs {
        let path = Path::new(db);
        if !path.exists() {
            continue;
        }
        let before = replica_txid(cfg, path);
        match sqlite::flush_through_extension(ext, path, timeout) {
            Ok(txid) => match (txid.parse::<u64>(), before) {
                (Ok(after), Some(before)) if after > before => eprintln!(
                    "walship: {db}: shipped up to TXID {after:016x} after {program} ended: it had \
                     committed transactions it had not shipped yet"
                ),
                _ => {}
            },
            Err(e) => eprintln!("walship: {db}: the final sync after {program} ended: {e:#}"),
        }
    }
}

/// The newest TXID in the replica of `db` (one listing per level).
fn replica_txid(cfg: &Config, db: &Path) -> Option<u64> {
    let entry = cfg.db_for(db)?;
    let storage = walvfs::storage::open(&entry.replica.kind).ok()?;
    walvfs::restore::DEFAULT_LEVELS
        .iter()
        .filter_map(|level| storage.list(*level).ok())
        .flatten()
        .map(|f| f.max_txid)
        .max()
        .or(Some(0))
}

/// `$TMPDIR/walship-exec-<pid>-<n>`: the node preload and the note of opened databases.
struct RunDir {
    path: PathBuf,
}

impl RunDir {
    fn create() -> Result<RunDir, CmdError> {
        let base = std::env::temp_dir();
        let mut n = 0u32;
        let path = loop {
            let p = base.join(format!("walship-exec-{}-{n}", std::process::id()));
            // Readable by others: a command that switches to another user still loads the preload.
            match fs::DirBuilder::new().mode(0o755).create(&p) {
                Ok(()) => break p,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => {
                    return Err(anyhow!("creating a directory in {}: {e}", base.display()).into())
                }
            }
        };
        let run = RunDir { path };
        let write = |p: PathBuf, mode: u32, body: &[u8]| {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&p)
                .and_then(|mut f| f.write_all(body))
                .with_context(|| format!("writing {}", p.display()))
        };
        let made = write(
            run.node_preload(),
            0o644,
            include_str!("node_preload.js").as_bytes(),
        )
        .and_then(|()| write(run.opened(), 0o666, b""));
        if let Err(e) = made {
            run.remove();
            return Err(e.into());
        }
        Ok(run)
    }

    fn node_preload(&self) -> PathBuf {
        self.path.join("node-preload.js")
    }

    fn opened(&self) -> PathBuf {
        self.path.join("opened")
    }

    fn remove(&self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
