//! Page buffers shared by capture and the shipper. Capture takes a buffer for every WAL page it
//! copies (on the application's thread); the shipper gives buffers back once their pages are
//! merged away or shipped. Reusing them spares the app thread a large allocation per page and
//! the cross-thread free that follows, and keeps the copies in warm memory.
//!
//! Owns only idle buffers, at most `MAX_BYTES` of them; never waits for its lock
//! and never hands out a buffer of the wrong size.

use std::sync::Mutex;

/// Idle buffers kept at most: beyond this, given-back buffers are freed.
/// Twice what the queue holds before the shipper is woken to merge it (`handle.rs`).
const MAX_BYTES: usize = 2 << 20;

struct Idle {
    bufs: Vec<Box<[u8]>>,
    bytes: usize,
}

static IDLE: Mutex<Idle> = Mutex::new(Idle {
    bufs: Vec::new(),
    bytes: 0,
});

/// The idle list if nobody else holds it: the app's thread never waits on the shipper here
/// (contended, a buffer is allocated or freed instead).
fn idle() -> Option<std::sync::MutexGuard<'static, Idle>> {
    match IDLE.try_lock() {
        Ok(g) => Some(g),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

fn pop(size: usize) -> Option<Box<[u8]>> {
    let mut idle = idle()?;
    let b = idle.bufs.pop()?;
    idle.bytes -= b.len();
    // Page sizes differ only between databases; a buffer of another size is freed.
    (b.len() == size).then_some(b)
}

/// A buffer of `size` bytes with unspecified contents, for a caller that overwrites all of it.
pub fn take(size: usize) -> Box<[u8]> {
    pop(size).unwrap_or_else(|| vec![0u8; size].into_boxed_slice())
}

/// A zero-filled buffer of `size` bytes.
pub fn take_zeroed(size: usize) -> Box<[u8]> {
    match pop(size) {
        Some(mut b) => {
            b.fill(0);
            b
        }
        None => vec![0u8; size].into_boxed_slice(),
    }
}

/// Returns a buffer for reuse (or frees it when enough are idle).
pub fn give(b: Box<[u8]>) {
    let Some(mut idle) = idle() else { return };
    if idle.bytes + b.len() <= MAX_BYTES {
        idle.bytes += b.len();
        idle.bufs.push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_never_mix_and_zeroed_is_zero() {
        let mut b = take(512);
        b.fill(7);
        give(b);
        let z = take_zeroed(512);
        assert_eq!(z.len(), 512);
        assert!(z.iter().all(|&x| x == 0));
        give(z);
        assert_eq!(take(1024).len(), 1024);
    }
}
