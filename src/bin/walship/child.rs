//! The command `walship replicate -exec` runs: its signals and its exit status.
//!
//! Owns: the walship process's signal handling while a command runs — SIGTERM, SIGINT, SIGHUP,
//! SIGQUIT, SIGUSR1 and SIGUSR2 are blocked in every thread and taken by one thread
//! (`sigwaitinfo`), which passes each to the command, except one the terminal sent to the whole
//! foreground process group (the command got it already); reaping the command (`waitid` with
//! `WNOWAIT` first, so a signal is never sent to a pid the system may have reused); and leaving
//! with the command's status: its exit code, or death by the signal that killed it (a shell shows
//! 128+N; a signal that would dump core becomes exit 128+N instead).
//! Never: touches the command's stdin, stdout or stderr; signals any process but the command.

use std::ffi::c_int;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

/// Passed on to the command (SIGTERM, SIGINT and SIGHUP are the ones service managers send;
/// the others would otherwise end walship and leave the command running).
const FORWARDED: [c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Code(c) => write!(f, "exit code {c}"),
            Status::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

type LateSignal = Box<dyn Fn(Status) + Send + Sync>;

struct Shared {
    /// None while the command runs (its pid may be signalled), then how it ended.
    ended: Mutex<Option<Status>>,
    /// Called when SIGTERM, SIGINT or SIGHUP arrives after the command ended.
    late: OnceLock<LateSignal>,
}

pub struct Child {
    pid: libc::pid_t,
    shared: Arc<Shared>,
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks the forwarded signals in this thread and every thread started after it. Call before
/// any other thread exists, so none of them can take a signal meant for the command.
pub fn block_signals() {
    let set = signal_set();
    // SAFETY: changes this thread's mask only; `set` is initialised.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

impl Child {
    /// Starts `cmd` with no signal blocked (std keeps the parent's mask) and the thread that
    /// forwards signals to it.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
        // SAFETY: runs in the forked child before exec; sigemptyset and sigprocmask are
        // async-signal-safe and touch only the child's own state.
        unsafe {
            cmd.pre_exec(|| {
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
                Ok(())
            })
        };
        let child = cmd.spawn()?;
        let pid = child.id() as libc::pid_t;
        // Reaped by `wait` below, not by std.
        drop(child);
        let shared = Arc::new(Shared {
            ended: Mutex::new(None),
            late: OnceLock::new(),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("walship-signals".into())
            .spawn(move || forward(pid, &s))?;
        Ok(Child { pid, shared })
    }

    /// What to do when a stop signal arrives after the command ended (walship is then
    /// shipping what it left): `f` is expected to exit.
    pub fn on_late_signal(&self, f: impl Fn(Status) + Send + Sync + 'static) {
        let _ = self.shared.late.set(Box::new(f));
    }

    /// Waits for the command to end; from then on, no signal is forwarded.
    pub fn wait(&self) -> Status {
        loop {
            // SAFETY: siginfo_t is plain data, valid all-zero.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waitid fills `info`; WNOWAIT leaves the child a zombie, so its pid cannot
            // be reused while the forwarding thread may still signal it.
            let rc = unsafe {
                libc::waitid(
                    libc::P_PID,
                    self.pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        let mut ended = self.shared.ended.lock().unwrap_or_else(|p| p.into_inner());
        let mut raw: c_int = 0;
        // SAFETY: reaps our own child, which has ended; `raw` receives its wait status.
        let rc = unsafe { libc::waitpid(self.pid, &mut raw, 0) };
        let status = if rc != self.pid {
            Status::Code(1)
        } else if libc::WIFSIGNALED(raw) {
            Status::Signal(libc::WTERMSIG(raw))
        } else {
            Status::Code(libc::WEXITSTATUS(raw))
        };
        *ended = Some(status);
        status
    }
}

fn forward(pid: libc::pid_t, shared: &Shared) {
    let set = signal_set();
    loop {
        // SAFETY: siginfo_t is plain data, valid all-zero.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: sigwaitinfo fills `info`; the set's signals are blocked in every thread
        // (block_signals), as sigwaitinfo requires.
        let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if sig < 0 {
            continue;
        }
        let ended = shared.ended.lock().unwrap_or_else(|p| p.into_inner());
        match *ended {
            // The terminal sent it to the whole process group, the command included.
            None if info.si_code == libc::SI_KERNEL => {}
            // SAFETY: `pid` is our child, not yet reaped: `wait` takes this lock to reap it.
            None => unsafe {
                libc::kill(pid, sig);
            },
            Some(status) if matches!(sig, libc::SIGTERM | libc::SIGINT | libc::SIGHUP) => {
                drop(ended);
                if let Some(f) = shared.late.get() {
                    f(status);
                }
            }
            Some(_) => {}
        }
    }
}

/// For the listing commands (`walship ltx URL | head`): a closed stdout ends walship quietly, as
/// it does any Unix tool, instead of a panic at the next print (Rust ignores SIGPIPE).
pub fn die_on_broken_pipe() {
    // SAFETY: restores the default disposition of SIGPIPE before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Ends walship with the command's status: its exit code, or death by its signal.
pub fn exit_like(status: Status) -> ! {
    match status {
        Status::Code(c) => std::process::exit(c),
        Status::Signal(s) => {
            let dumps_core = matches!(
                s,
                libc::SIGQUIT
                    | libc::SIGILL
                    | libc::SIGTRAP
                    | libc::SIGABRT
                    | libc::SIGBUS
                    | libc::SIGFPE
                    | libc::SIGSEGV
                    | libc::SIGXCPU
                    | libc::SIGXFSZ
                    | libc::SIGSYS
            );
            if !dumps_core {
                // SAFETY: restores the default action of `s` and unblocks it in this thread,
                // then sends it to this thread: the process ends as the command did.
                unsafe {
                    libc::signal(s, libc::SIG_DFL);
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, s);
                    libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                    libc::raise(s);
                }
            }
            std::process::exit(128 + s)
        }
    }
}
