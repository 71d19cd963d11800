//! Writing a [`Plan`]'s files into a database image.
//!
//! Files are applied strictly in plan order by the calling thread. Meanwhile up to
//! `parallelism` worker threads download the following files into memory, never more than
//! `parallelism` files and [`ApplyOptions::ahead_bytes`] bytes ahead of the one being applied,
//! so memory is bounded whatever the parallelism and the file sizes: at most `ahead_bytes`
//! waiting, plus the file being applied. The snapshot (the first file), and any file larger
//! than [`ApplyOptions::stream_above`], is not buffered: it is decoded straight from the
//! storage stream while being applied, with a read-ahead thread (`readahead.rs`, 8 MiB) so
//! downloading overlaps decoding and writing.
//!
//! Each file is decoded with [`ltx::Decoder`] (header rules, page order, LZ4, index and CRC-64
//! file checksum), its header's TXID range must match its name, and every file must have the
//! snapshot's page size. Pages are written at `(pgno - 1) * page_size` (contiguous pages in
//! one write); after each file the image is cut or extended to `commit` pages. Pages reach
//! the image before their file's checksum is verified, so an error leaves a partial image:
//! the caller must discard `out_path` when [`apply`] fails. A file whose download breaks
//! (after the backend's retries and ranged resumes) is fetched again from its start, up to
//! [`OBJECT_ATTEMPTS`] times, and applied again; a file that arrives whole but fails its
//! checks is never retried: it is damaged.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};

use super::plan::check_range;
use super::{Plan, RestoreError, DEFAULT_PARALLELISM};
use crate::ltx::{Decoder, Header};
use crate::storage::{FileInfo, Storage};

/// Tuning for [`apply_with`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Files downloaded at once (and buffered ahead of the one being applied). At least 1.
    pub parallelism: usize,
    /// Files listed larger than this many bytes are streamed while applied, not buffered.
    pub stream_above: u64,
    /// Bytes of downloaded files waiting to be applied, at most (files larger than this are
    /// streamed, whatever `stream_above` says).
    pub ahead_bytes: u64,
    /// Bytes of the plan's files applied so far, updated as they are decoded (within a file,
    /// not only between files), for a progress display on another thread.
    pub bytes_done: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// fsync the image at the end (a restore's output must survive a crash; a scratch
    /// comparison, such as the judge's, need not).
    pub sync: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            parallelism: DEFAULT_PARALLELISM,
            stream_above: 8 << 20,
            ahead_bytes: 32 << 20,
            bytes_done: None,
            sync: true,
        }
    }
}

/// Reported after each file is applied.
#[derive(Debug, Clone)]
pub struct Progress {
    /// 0-based position in the plan.
    pub index: usize,
    pub count: usize,
    pub file: FileInfo,
    /// Pages the file held.
    pub pages: u64,
    /// Database size in pages after the file.
    pub commit: u32,
    pub timestamp_ms: i64,
}

/// What [`apply`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// TXID of the image (the last file's max TXID).
    pub txid: u64,
    /// Header timestamp of the last file (ms since the Unix epoch).
    pub timestamp_ms: i64,
    pub page_size: u32,
    /// Database size in pages; the image is `pages * page_size` bytes.
    pub pages: u32,
    pub files: usize,
    /// Sum of the applied files' sizes.
    pub bytes: u64,
    /// Page frames decoded and written, over all files.
    pub pages_written: u64,
    /// The database checksum the last file's trailer carries (with bit 63 set when tracked):
    /// what the image's own [`crate::ltx::database_checksum`] must equal.
    pub post_apply_checksum: u64,
}

/// [`apply_with`] with [`ApplyOptions::default`].
pub fn apply(
    storage: &dyn Storage,
    plan: &Plan,
    out_path: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<Applied, RestoreError> {
    apply_with(storage, plan, out_path, &ApplyOptions::default(), progress)
}

/// Creates (or truncates) `out_path`, writes the plan's files into it, checks its final size
/// and fsyncs it. On error `out_path` holds a partial image the caller must remove.
pub fn apply_with(
    storage: &dyn Storage,
    plan: &Plan,
    out_path: &Path,
    opts: &ApplyOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Applied, RestoreError> {
    let out_err = |source| RestoreError::Output {
        path: out_path.to_path_buf(),
        source,
    };
    let Some(first) = plan.files.first() else {
        return Err(RestoreError::Internal("the plan has no files".into()));
    };
    if first.info.min_txid != 1 {
        let detail = "a restore must start with a snapshot (min TXID 1)".to_string();
        return Err(RestoreError::inconsistent(
            &plan.replica,
            &first.info,
            detail,
        ));
    }
    let out = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out_path)
        .map_err(out_err)?;

    let n = plan.files.len();
    let parallelism = opts.parallelism.max(1);
    // Which files are downloaded ahead into memory; the rest are streamed while applied.
    let prefetch: Vec<bool> = plan
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| i > 0 && f.info.size <= opts.stream_above.min(opts.ahead_bytes))
        .collect();
    let workers = parallelism.min(prefetch.iter().filter(|&&p| p).count());
    let shared = Shared {
        state: Mutex::new(State::default()),
        cv: Condvar::new(),
    };

    let mut apply_all = || -> Result<Applied, RestoreError> {
        let mut image = Image {
            file: &out,
            path: out_path,
            page_size: 0,
            run_start: 0,
            run: Vec::new(),
            page: Vec::new(),
        };
        let mut done = Applied {
            txid: 0,
            timestamp_ms: 0,
            page_size: 0,
            pages: 0,
            files: 0,
            bytes: 0,
            pages_written: 0,
            post_apply_checksum: 0,
        };
        for (i, pf) in plan.files.iter().enumerate() {
            let info = &pf.info;
            let mut attempt = 1;
            let (h, pages, post_apply_checksum) = loop {
                let r = if prefetch[i] && attempt == 1 {
                    shared.take(i, info.size).and_then(|data| {
                        let r = Counted(&data[..], opts.bytes_done.as_deref());
                        image.apply_file(&plan.replica, info, i, r)
                    })
                } else {
                    storage
                        .open(info.level, info.min_txid, info.max_txid)
                        .map_err(|e| RestoreError::read(&plan.replica, info, e))
                        .and_then(|r| {
                            let r = Counted(
                                super::readahead::read_ahead(r),
                                opts.bytes_done.as_deref(),
                            );
                            image.apply_file(&plan.replica, info, i, r)
                        })
                };
                match r {
                    Ok(done) => break done,
                    // A broken download (after the backend's own retries and resumes) is
                    // fetched again from the start: what was applied of it came intact from
                    // the same object, and applying it again rewrites the same pages.
                    Err(e) if e.is_transient() && attempt < OBJECT_ATTEMPTS => {
                        log::warn!(
                            "{}: fetching {} again (attempt {} of {OBJECT_ATTEMPTS}): {e}",
                            plan.replica,
                            super::object_name(info),
                            attempt + 1
                        );
                        std::thread::sleep(std::time::Duration::from_millis(500 << attempt));
                        attempt += 1;
                    }
                    Err(e) if i > 0 => return Err(e.after(done.txid)),
                    Err(e) => return Err(e),
                }
            };
            shared.applied(i + 1);
            done = Applied {
                txid: h.max_txid,
                timestamp_ms: h.timestamp_ms,
                page_size: h.page_size,
                pages: h.commit,
                files: i + 1,
                bytes: done.bytes + info.size,
                pages_written: done.pages_written + pages,
                post_apply_checksum,
            };
            progress(Progress {
                index: i,
                count: n,
                file: info.clone(),
                pages,
                commit: h.commit,
                timestamp_ms: h.timestamp_ms,
            });
        }
        let want = u64::from(done.pages) * u64::from(done.page_size);
        let len = out.metadata().map_err(out_err)?.len();
        if len != want {
            return Err(RestoreError::Internal(format!(
                "the image is {len} bytes, expected {} pages of {} bytes",
                done.pages, done.page_size
            )));
        }
        if opts.sync {
            out.sync_all().map_err(out_err)?;
        }
        Ok(done)
    };

    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| shared.work(storage, plan, &prefetch, parallelism, opts.ahead_bytes));
        }
        // Stops the workers however the applier ends (error or panic), so the scope can join them.
        let _stop = StopOnDrop(&shared);
        apply_all()
    })
}

/// The output file plus a buffer of contiguous pages not yet written.
struct Image<'a> {
    file: &'a File,
    path: &'a Path,
    page_size: u32,
    /// First page number in `run`.
    run_start: u32,
    run: Vec<u8>,
    page: Vec<u8>,
}

/// Times one file is fetched when its download keeps breaking (each fetch itself retries and
/// resumes in the storage backend).
const OBJECT_ATTEMPTS: u32 = 3;

/// Contiguous pages are written together, up to this many bytes at once.
const RUN_BYTES: usize = 1 << 20;

impl Image<'_> {
    /// Decodes one whole file from `r` into the image; returns its header and page count.
    fn apply_file<R: Read>(
        &mut self,
        replica: &str,
        info: &FileInfo,
        index: usize,
        r: R,
    ) -> Result<(Header, u64, u64), RestoreError> {
        let mut dec = Decoder::new(r).map_err(|e| RestoreError::corrupt(replica, info, e))?;
        let h = dec.header().clone();
        check_range(replica, info, &h)?;
        if index == 0 && !h.is_snapshot() {
            let detail = "a restore must start with a snapshot (min TXID 1)".to_string();
            return Err(RestoreError::inconsistent(replica, info, detail));
        }
        if index == 0 {
            self.page_size = h.page_size;
            self.page = vec![0; h.page_size as usize];
        } else if h.page_size != self.page_size {
            let detail = format!(
                "page size {} vs {}: its page size is {}, but the files before it have {}",
                h.page_size, self.page_size, h.page_size, self.page_size
            );
            return Err(RestoreError::inconsistent(replica, info, detail));
        }
        let mut pages = 0u64;
        let mut page = std::mem::take(&mut self.page);
        let result = (|| {
            while let Some(pgno) = dec
                .next_page(&mut page)
                .map_err(|e| RestoreError::corrupt(replica, info, e))?
            {
                self.push(pgno, &page)?;
                pages += 1;
            }
            self.flush()
        })();
        self.page = page;
        result?;
        let trailer = dec
            .finish()
            .map_err(|e| RestoreError::corrupt(replica, info, e))?;
        let len = u64::from(h.commit) * u64::from(h.page_size);
        self.file.set_len(len).map_err(|e| self.err(e))?;
        Ok((h, pages, trailer.post_apply_checksum))
    }

    fn push(&mut self, pgno: u32, page: &[u8]) -> Result<(), RestoreError> {
        let ps = self.page_size as usize;
        let held = (self.run.len() / ps) as u64;
        if held > 0
            && (u64::from(pgno) != u64::from(self.run_start) + held
                || self.run.len() + ps > RUN_BYTES)
        {
            self.flush()?;
        }
        if self.run.is_empty() {
            self.run_start = pgno;
        }
        self.run.extend_from_slice(page);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), RestoreError> {
        if self.run.is_empty() {
            return Ok(());
        }
        let offset = u64::from(self.run_start - 1) * u64::from(self.page_size);
        let mut f = self.file;
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.write_all(&self.run))
            .map_err(|e| self.err(e))?;
        self.run.clear();
        Ok(())
    }

    fn err(&self, source: std::io::Error) -> RestoreError {
        RestoreError::Output {
            path: self.path.to_path_buf(),
            source,
        }
    }
}

struct StopOnDrop<'a>(&'a Shared);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Downloads shared between the applier and the workers.
struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Default)]
struct State {
    /// Next plan index a worker may claim.
    next: usize,
    /// Files fully applied; workers stay within `applied + parallelism`.
    applied: usize,
    /// Listed sizes of the files claimed by workers and not yet taken by the applier.
    ahead: u64,
    ready: HashMap<usize, Result<Vec<u8>, RestoreError>>,
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn work(
        &self,
        storage: &dyn Storage,
        plan: &Plan,
        prefetch: &[bool],
        window: usize,
        ahead_bytes: u64,
    ) {
        loop {
            let i = {
                let mut st = self.lock();
                loop {
                    while st.next < prefetch.len() && !prefetch[st.next] {
                        st.next += 1;
                    }
                    if st.stop || st.next >= prefetch.len() {
                        return;
                    }
                    let size = plan.files[st.next].info.size;
                    if st.next < st.applied + 1 + window && st.ahead + size <= ahead_bytes {
                        st.ahead += size;
                        st.next += 1;
                        break st.next - 1;
                    }
                    st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            };
            let info = &plan.files[i].info;
            let r = catch_unwind(AssertUnwindSafe(|| download(storage, &plan.replica, info)))
                .unwrap_or_else(|_| {
                    Err(RestoreError::Internal(format!(
                        "the download of {} panicked",
                        super::object_name(info)
                    )))
                });
            // A failure is the applier's to handle when it gets there (it may fetch the file
            // again), so later files keep downloading within the window.
            let mut st = self.lock();
            st.ready.insert(i, r);
            self.cv.notify_all();
        }
    }

    /// Waits for file `i` (listed at `size` bytes) to be downloaded and takes it.
    fn take(&self, i: usize, size: u64) -> Result<Vec<u8>, RestoreError> {
        let mut st = self.lock();
        loop {
            if let Some(r) = st.ready.remove(&i) {
                st.ahead = st.ahead.saturating_sub(size);
                self.cv.notify_all();
                return r;
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn applied(&self, n: usize) {
        self.lock().applied = n;
        self.cv.notify_all();
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.cv.notify_all();
    }
}

fn download(
    storage: &dyn Storage,
    replica: &str,
    info: &FileInfo,
) -> Result<Vec<u8>, RestoreError> {
    let mut r = storage
        .open(info.level, info.min_txid, info.max_txid)
        .map_err(|e| RestoreError::read(replica, info, e))?;
    let mut buf = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0).min(256 << 20));
    r.read_to_end(&mut buf)
        .map_err(|source| RestoreError::Download {
            replica: replica.into(),
            object: super::object_name(info),
            min: info.min_txid,
            max: info.max_txid,
            source,
        })?;
    Ok(buf)
}

/// A reader that adds what passes through it to a shared count (progress displays).
struct Counted<'a, R>(R, Option<&'a std::sync::atomic::AtomicU64>);

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        if let Some(c) = self.1 {
            c.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(n)
    }
}
