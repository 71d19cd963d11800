//! `walship`: the command-line companion of the `libwalvfs` extension. Restores databases
//! from their replicas, verifies them, and lists databases and replica files, with Litestream
//! 0.5's command spellings.
//!
//! Exit codes: 0 success (including the "skipping" outcomes of -if-db-not-exists and
//! -if-replica-exists), 1 an error (`walship: error: ...` on stderr), 2 a usage error (the
//! message and the command's usage text on stderr).

mod args;
mod child;
mod databases_cmd;
mod ltx_cmd;
mod progress;
mod replicate_cmd;
mod restore_cmd;
mod shellwords;
mod snapshot_cmd;
mod source;
mod sqlite;
mod status_cmd;
mod verify_cmd;

const USAGE: &str = "\
walship: continuous backup of SQLite databases to Litestream 0.5 replicas

Usage:
  walship <command> [flags] [arguments]

Commands:
  replicate run an application with walship inside it: replicate -exec \"CMD ARGS\"
  restore   restore a database from its replica
  verify    restore to a temporary file and check it against the replica
  snapshot  ask the process replicating a database for a new snapshot now
  databases list the databases in the configuration and their replicas
  ltx       list a replica's LTX files
  status    show each database's replication state (from its running application)
  version   print the version

Run \"walship <command> -h\" for a command's flags.
";

/// How a command failed.
pub enum CmdError {
    /// Bad command line: exit 2 with the usage text.
    Usage(String),
    /// The command ran and failed: exit 1.
    Fail(anyhow::Error),
}

impl From<anyhow::Error> for CmdError {
    fn from(e: anyhow::Error) -> Self {
        CmdError::Fail(e)
    }
}

fn main() {
    // Set for the commands `walship replicate` runs (src/ffi/preload.rs), so also for a walship
    // they run: this process's own SQLite calls stay out of it.
    std::env::remove_var("WALSHIP_PRELOAD");
    let argv: Vec<String> = std::env::args().skip(1).collect();
    // The listing commands, whose output is piped into `head` and the like.
    if matches!(
        argv.first().map(String::as_str),
        Some("ltx" | "databases" | "status")
    ) {
        child::die_on_broken_pipe();
    }
    std::process::exit(run(&argv));
}

fn run(argv: &[String]) -> i32 {
    let (cmd, rest) = match argv.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => {
            eprint!("{USAGE}");
            return 2;
        }
    };
    let (result, usage) = match cmd {
        "replicate" => (replicate_cmd::run(rest), replicate_cmd::USAGE),
        "restore" => (restore_cmd::run(rest), restore_cmd::USAGE),
        "ltx" => (ltx_cmd::run(rest), ltx_cmd::USAGE),
        "verify" => (verify_cmd::run(rest), verify_cmd::USAGE),
        "databases" => (databases_cmd::run(rest), databases_cmd::USAGE),
        "snapshot" => (snapshot_cmd::run(rest), snapshot_cmd::USAGE),
        "status" => (status_cmd::run(rest), status_cmd::USAGE),
        "version" | "-version" | "--version" => {
            println!("walship {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        "help" | "-h" | "-help" | "--help" => {
            print!("{USAGE}");
            return 0;
        }
        other => (
            Err(CmdError::Usage(format!("unknown command {other:?}"))),
            USAGE,
        ),
    };
    match result {
        Ok(()) => 0,
        Err(CmdError::Usage(msg)) => {
            eprintln!("walship: usage error: {msg}\n\n{usage}");
            2
        }
        Err(CmdError::Fail(e)) => {
            eprintln!("walship: error: {}", describe(&e));
            1
        }
    }
}

/// The error and its causes, `: `-joined, skipping a cause whose text a message before it
/// already includes (walship's typed errors quote their source).
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
