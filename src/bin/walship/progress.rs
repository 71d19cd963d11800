//! Restore progress on stderr: on a terminal, one bar redrawn in place (bytes, files, rate,
//! ETA); otherwise a plain line a second while it runs and a summary at the end, for logs.
//! Reads shared counters only; never slows the restore (a ticker thread does the printing).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Counts {
    bytes: Arc<AtomicU64>,
    files: AtomicUsize,
    stop: AtomicBool,
}

pub struct Meter {
    counts: Arc<Counts>,
    ticker: Option<JoinHandle<()>>,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn clock(secs: f64) -> String {
    let s = secs.round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

/// "12.3 of 257.0 MiB, 3 of 12 files, 40.1 MiB/s, ETA 0:06"
fn status(bytes: u64, total: u64, files: usize, nfiles: usize, elapsed: f64) -> String {
    let rate = if elapsed > 0.0 {
        mib(bytes) / elapsed
    } else {
        0.0
    };
    let eta = if bytes > 0 && total > bytes {
        clock((total - bytes) as f64 * elapsed / bytes as f64)
    } else {
        "-".into()
    };
    format!(
        "{:.1} of {:.1} MiB, {files} of {nfiles} files, {rate:.1} MiB/s, ETA {eta}",
        mib(bytes),
        mib(total)
    )
}

impl Meter {
    /// Starts reporting a restore of `total` bytes in `nfiles` files.
    pub fn start(total: u64, nfiles: usize) -> Meter {
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let tty = std::io::stderr().is_terminal();
        let t0 = Instant::now();
        let ticker = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let tick = if tty {
                    Duration::from_millis(100)
                } else {
                    Duration::from_secs(1)
                };
                // Drawn at once, then every tick: a restore shorter than a tick still shows one.
                let mut last = Instant::now()
                    .checked_sub(tick)
                    .unwrap_or_else(Instant::now);
                while !c.stop.load(Ordering::Acquire) {
                    if last.elapsed() < tick {
                        std::thread::park_timeout(tick - last.elapsed());
                        continue;
                    }
                    last = Instant::now();
                    let bytes = c.bytes.load(Ordering::Relaxed).min(total);
                    let files = c.files.load(Ordering::Relaxed);
                    let line = status(bytes, total, files, nfiles, t0.elapsed().as_secs_f64());
                    let mut err = std::io::stderr().lock();
                    if tty {
                        let width = 24usize;
                        let filled =
                            (width as u64 * bytes).checked_div(total).unwrap_or(0) as usize;
                        let _ = write!(
                            err,
                            "\r\x1b[2K[{}{}] {line}",
                            "#".repeat(filled),
                            ".".repeat(width - filled)
                        );
                    } else {
                        let _ = writeln!(err, "restore: {line}");
                    }
                    let _ = err.flush();
                }
                let bytes = c.bytes.load(Ordering::Relaxed).min(total);
                let files = c.files.load(Ordering::Relaxed);
                let mut err = std::io::stderr().lock();
                if tty {
                    let _ = write!(err, "\r\x1b[2K");
                } else {
                    let _ = writeln!(
                        err,
                        "restore: {:.1} MiB in {files} of {nfiles} files in {:.1} s",
                        mib(bytes),
                        t0.elapsed().as_secs_f64()
                    );
                }
            })
            .ok();
        Meter { counts, ticker }
    }

    /// The byte counter to hand to the restore (`ApplyOptions::bytes_done`).
    pub fn bytes(&self) -> Arc<AtomicU64> {
        self.counts.bytes.clone()
    }

    pub fn file_done(&self) {
        self.counts.files.fetch_add(1, Ordering::Relaxed);
    }

    /// Stops the display (clearing the bar on a terminal, a summary line otherwise).
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.counts.stop.store(true, Ordering::Release);
        if let Some(t) = self.ticker.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.stop();
    }
}
