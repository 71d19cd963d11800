//! The replica lease: one small object, `<replica>/walship-lease.json`, names the one walship
//! allowed to write a replica path, so two hosts pointed at the same bucket and path never
//! interleave TXIDs. Litestream lists only its level prefixes, so it never sees this object.
//!
//! Protocol (compare-and-swap through `Storage::put_named_if`):
//! * take: `If-None-Match: *` when there is no lease; `If-Match: <etag>` on a lease that has
//!   expired (its `expires_ms` is past by this host's clock) or that names this very process
//!   (a retried write whose answer was lost);
//! * renew: every `renew_every`, `If-Match` on the tag of our last write, pushing `expires_ms`
//!   to now + `ttl`. A failed precondition means someone else took it: the lease is lost and
//!   the shipper stops writing at once. A renewal that cannot reach storage keeps the lease
//!   only until it expires;
//! * release at a clean close: `DELETE` with `If-Match` on our tag.
//!
//! Hosts' clocks must agree to well within `ttl - renew_every` (NTP does). A write already
//! sent when the lease is lost (an upload that outlives the lease) cannot be recalled: keep
//! `ttl` well above the longest upload.
//!
//! Owns the lease's state machine; never uploads LTX files, never sleeps, never reads a clock
//! (callers pass the time in, so tests drive it).

use std::time::Duration;

use crate::storage::{Precondition, Storage, StorageError};

/// The lease object's name under the replica root.
pub const LEASE_NAME: &str = "walship-lease.json";

/// Lease timing (`lease-ttl`, `lease-renew-interval` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub ttl: Duration,
    pub renew_every: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ttl: Duration::from_secs(30),
            renew_every: Duration::from_secs(10),
        }
    }
}

/// Who holds a lease: host, pid and a random nonce (the id compared), as written in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub id: String,
    pub host: String,
    pub pid: u32,
}

impl Owner {
    /// This process. The host name is `$WALSHIP_HOST` when set, else the kernel's.
    pub fn this_process() -> Owner {
        let host = std::env::var("WALSHIP_HOST")
            .ok()
            .filter(|h| !h.trim().is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown-host".into());
        let pid = std::process::id();
        let nonce = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(pid);
            h.write_i64(crate::clock::now_ms());
            h.finish()
        };
        Owner {
            id: format!("{host}/{pid}/{nonce:016x}"),
            host,
            pid,
        }
    }
}

/// What a lease object says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    owner: Owner,
    expires_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// A live lease of another walship: do not write; try again later.
    #[error("replica {replica} is leased by host {} pid {} until {until}; another walship is replicating there (stop it or point this one at another path; this process does not ship there and retries every {retry_s}s)", holder.host, holder.pid)]
    HeldByOther {
        replica: String,
        holder: Owner,
        until: String,
        expires_ms: i64,
        retry_s: u64,
    },
    /// Our lease was taken over or removed, or expired before it could be renewed.
    #[error("lost the lease on replica {replica} ({why}); this process stopped shipping and takes the lease back (with a new snapshot) when it is free")]
    Lost { replica: String, why: String },
    /// The object is not a lease this version can read.
    #[error("{object} is not a walship lease ({detail}); remove it if no walship replicates to {replica}")]
    Invalid {
        replica: String,
        object: String,
        detail: String,
    },
    #[error("checking the lease on {replica}: {source}")]
    Storage {
        replica: String,
        #[source]
        source: StorageError,
    },
}

/// The result of `Lease::ensure` when this process may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// Held before and still held.
    Kept,
    /// Just taken: whatever this process knew about the replica may be stale.
    Taken,
}

#[derive(Debug, Clone)]
struct Held {
    tag: String,
    expires_ms: i64,
    /// When the next renewal is due.
    renew_at_ms: i64,
}

#[derive(Debug)]
pub struct Lease {
    me: Owner,
    settings: Settings,
    held: Option<Held>,
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl Lease {
    pub fn new(settings: Settings, me: Owner) -> Lease {
        Lease {
            me,
            settings,
            held: None,
        }
    }

    /// When the lease next needs a renewal (while held).
    pub fn renew_due_ms(&self) -> Option<i64> {
        self.held.as_ref().map(|h| h.renew_at_ms)
    }

    pub fn is_held(&self, now_ms: i64) -> bool {
        self.held.as_ref().is_some_and(|h| now_ms < h.expires_ms)
    }

    fn body(&self, now_ms: i64) -> Vec<u8> {
        let expires = now_ms + ms(self.settings.ttl);
        format!(
            "{{\"owner\":{},\"host\":{},\"pid\":{},\"expires_ms\":{expires},\"expires\":{},\"written_ms\":{now_ms}}}\n",
            super::json_str(&self.me.id),
            super::json_str(&self.me.host),
            self.me.pid,
            super::json_str(&crate::storage::s3::litestream_timestamp(expires)),
        )
        .into_bytes()
    }

    fn storage_err(st: &dyn Storage, source: StorageError) -> LeaseError {
        LeaseError::Storage {
            replica: st.describe(),
            source,
        }
    }

    /// Makes sure this process holds the lease at `now_ms`: takes it if free or expired, renews
    /// it when due. `Ok` means this process may write the replica now (with at least
    /// `ttl - renew_every` of lease left, or until its expiry while storage is unreachable).
    pub fn ensure(&mut self, st: &dyn Storage, now_ms: i64) -> Result<Ensured, LeaseError> {
        match self.held.clone() {
            Some(h) if now_ms < h.renew_at_ms && now_ms < h.expires_ms => Ok(Ensured::Kept),
            Some(h) => self.renew(st, h, now_ms),
            None => self.take(st, now_ms),
        }
    }

    fn wrote(&mut self, tag: String, now_ms: i64) {
        self.held = Some(Held {
            tag,
            expires_ms: now_ms + ms(self.settings.ttl),
            renew_at_ms: now_ms + ms(self.settings.renew_every),
        });
    }

    fn renew(&mut self, st: &dyn Storage, h: Held, now_ms: i64) -> Result<Ensured, LeaseError> {
        let body = self.body(now_ms);
        let lost = |me: &mut Lease, why: String| {
            me.held = None;
            Err(LeaseError::Lost {
                replica: st.describe(),
                why,
            })
        };
        let expired = now_ms >= h.expires_ms;
        // Even past its expiry the renewal is a compare-and-swap on our last tag: if it
        // succeeds, nobody took the lease meanwhile, and the history is still ours.
        match st.put_named_if(LEASE_NAME, &body, Precondition::Matches(&h.tag)) {
            Ok(tag) => {
                self.wrote(tag, now_ms);
                Ok(Ensured::Kept)
            }
            Err(StorageError::PreconditionFailed { .. }) => {
                // Our own earlier write whose answer was lost, or someone else's.
                match self.read(st) {
                    Ok(Some((rec, tag))) if rec.owner.id == self.me.id => {
                        // Renew again (with the right tag) on the next call.
                        self.held = Some(Held {
                            tag,
                            expires_ms: rec.expires_ms,
                            renew_at_ms: now_ms,
                        });
                        Ok(Ensured::Kept)
                    }
                    Ok(Some((rec, _))) => lost(
                        self,
                        format!("host {} pid {} holds it now", rec.owner.host, rec.owner.pid),
                    ),
                    Ok(None) => lost(self, "the lease object was removed".into()),
                    Err(e) => {
                        self.held = None;
                        Err(e)
                    }
                }
            }
            Err(e) => {
                // Keep the lease while it lasts; retry the renewal in a second.
                if let Some(held) = self.held.as_mut() {
                    held.renew_at_ms = now_ms + 1000;
                }
                if expired {
                    // Not provably ours any more: no uploads until a renewal succeeds.
                    return Err(Self::storage_err(st, e));
                }
                log::debug!("renewing the lease on {} failed: {e}", st.describe());
                Ok(Ensured::Kept)
            }
        }
    }

    fn read(&self, st: &dyn Storage) -> Result<Option<(Record, String)>, LeaseError> {
        let Some(t) = st
            .get_named(LEASE_NAME)
            .map_err(|e| Self::storage_err(st, e))?
        else {
            return Ok(None);
        };
        let rec = parse(&t.body).map_err(|detail| LeaseError::Invalid {
            replica: st.describe(),
            object: format!("{}/{LEASE_NAME}", st.describe()),
            detail,
        })?;
        Ok(Some((rec, t.tag)))
    }

    fn take(&mut self, st: &dyn Storage, now_ms: i64) -> Result<Ensured, LeaseError> {
        let current = self.read(st)?;
        let cond = match &current {
            None => Precondition::Absent,
            Some((rec, tag))
                if rec.owner.id == self.me.id
                    || now_ms >= rec.expires_ms
                    || self.holder_is_gone(rec) =>
            {
                if rec.owner.id != self.me.id {
                    let why = if now_ms >= rec.expires_ms {
                        format!(
                            "expired at {}",
                            crate::storage::s3::litestream_timestamp(rec.expires_ms)
                        )
                    } else {
                        "that process is gone".into()
                    };
                    log::info!(
                        "{}: taking over the expired lease of host {} pid {} ({why})",
                        st.describe(),
                        rec.owner.host,
                        rec.owner.pid,
                    );
                }
                Precondition::Matches(tag)
            }
            Some((rec, _)) => return Err(self.held_by(st, rec)),
        };
        let body = self.body(now_ms);
        match st.put_named_if(LEASE_NAME, &body, cond) {
            Ok(tag) => {
                self.wrote(tag, now_ms);
                Ok(Ensured::Taken)
            }
            Err(StorageError::PreconditionFailed { .. }) => match self.read(st)? {
                // Our write went through though its answer was lost.
                Some((rec, tag)) if rec.owner.id == self.me.id => {
                    self.held = Some(Held {
                        tag,
                        expires_ms: rec.expires_ms,
                        renew_at_ms: now_ms,
                    });
                    Ok(Ensured::Taken)
                }
                Some((rec, _)) if now_ms < rec.expires_ms => Err(self.held_by(st, &rec)),
                _ => Err(Self::storage_err(
                    st,
                    StorageError::PreconditionFailed {
                        op: "put",
                        object: LEASE_NAME.into(),
                    },
                )),
            },
            Err(e) => Err(Self::storage_err(st, e)),
        }
    }

    /// A lease of a process of this very host that no longer exists (a crash, a kill): no need
    /// to wait for its expiry. Only where `/proc` shows processes; a reused pid just means
    /// waiting for the expiry.
    fn holder_is_gone(&self, rec: &Record) -> bool {
        rec.owner.host == self.me.host
            && rec.owner.pid != self.me.pid
            && std::path::Path::new("/proc/self").exists()
            && !std::path::Path::new(&format!("/proc/{}", rec.owner.pid)).exists()
    }

    fn held_by(&self, st: &dyn Storage, rec: &Record) -> LeaseError {
        LeaseError::HeldByOther {
            replica: st.describe(),
            holder: rec.owner.clone(),
            until: crate::storage::s3::litestream_timestamp(rec.expires_ms),
            expires_ms: rec.expires_ms,
            retry_s: self.settings.renew_every.as_secs().max(1),
        }
    }

    /// Gives the lease up (clean close), so another walship may take it at once.
    pub fn release(&mut self, st: &dyn Storage) {
        if let Some(h) = self.held.take() {
            match st.delete_named_if(LEASE_NAME, &h.tag) {
                Ok(()) => log::debug!("{}: lease released", st.describe()),
                Err(e) => log::warn!(
                    "{}: could not release the lease ({e}); it expires by itself",
                    st.describe()
                ),
            }
        }
    }

    /// Forgets the lease without telling storage (it was lost).
    pub fn forget(&mut self) {
        self.held = None;
    }
}

/// Reads the flat JSON this module writes.
fn parse(body: &[u8]) -> Result<Record, String> {
    let s = std::str::from_utf8(body).map_err(|_| "not UTF-8".to_string())?;
    let field = |k: &str| -> Option<&str> {
        let at = s.find(&format!("\"{k}\":"))? + k.len() + 3;
        let rest = s[at..].trim_start();
        if let Some(r) = rest.strip_prefix('"') {
            r.find('"').map(|e| &r[..e])
        } else {
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            Some(rest[..end].trim())
        }
    };
    let get = |k: &str| field(k).ok_or_else(|| format!("no `{k}` field"));
    Ok(Record {
        owner: Owner {
            id: get("owner")?.to_string(),
            host: get("host")?.to_string(),
            pid: get("pid")?.parse().map_err(|_| "bad `pid`".to_string())?,
        },
        expires_ms: get("expires_ms")?
            .parse()
            .map_err(|_| "bad `expires_ms`".to_string())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::file::FileStorage;

    fn owner(host: &str, pid: u32) -> Owner {
        Owner {
            id: format!("{host}/{pid}/0123"),
            host: host.into(),
            pid,
        }
    }

    fn store(case: &str) -> (FileStorage, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("walship-lease-{case}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (FileStorage::new(dir.clone()), dir)
    }

    const S: Settings = Settings {
        ttl: Duration::from_secs(30),
        renew_every: Duration::from_secs(10),
    };

    #[test]
    fn take_renew_and_a_second_host_is_refused() {
        let (st, dir) = store("take");
        let mut a = Lease::new(S, owner("alpha", 1));
        let mut b = Lease::new(S, owner("beta", 2));
        assert_eq!(a.ensure(&st, 1_000).unwrap(), Ensured::Taken);
        assert_eq!(a.ensure(&st, 5_000).unwrap(), Ensured::Kept);
        match b.ensure(&st, 5_000) {
            Err(e @ LeaseError::HeldByOther { .. }) => {
                let m = e.to_string();
                assert!(
                    m.contains("is leased by host alpha pid 1 until 1970-01-01T00:00:31Z"),
                    "{m}"
                );
                assert!(m.contains("another walship is replicating there"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        // The renewal at 11 s moves the expiry to 41 s: at 35 s the lease is still live.
        assert_eq!(a.ensure(&st, 11_000).unwrap(), Ensured::Kept);
        assert!(matches!(
            b.ensure(&st, 35_000),
            Err(LeaseError::HeldByOther {
                expires_ms: 41_000,
                ..
            })
        ));
        assert!(a.is_held(35_000));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_expired_lease_is_taken_over_and_its_holder_loses_it() {
        let (st, dir) = store("expire");
        let mut a = Lease::new(S, owner("alpha", 1));
        let mut b = Lease::new(S, owner("beta", 2));
        a.ensure(&st, 0).unwrap();
        // alpha stalls past its expiry (30 s): beta takes over.
        assert_eq!(b.ensure(&st, 31_000).unwrap(), Ensured::Taken);
        // alpha wakes up: its renewal fails the precondition; it must stop writing.
        match a.ensure(&st, 32_000) {
            Err(LeaseError::Lost { .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(!a.is_held(32_000));
        // ... and stays out while beta holds it.
        assert!(matches!(
            a.ensure(&st, 33_000),
            Err(LeaseError::HeldByOther { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_lease_renewed_by_someone_else_is_lost() {
        let (st, dir) = store("lost");
        let mut a = Lease::new(S, owner("alpha", 1));
        a.ensure(&st, 0).unwrap();
        // Someone rewrote the object (an operator, another walship that ignored the lease).
        let cur = st.get_named(LEASE_NAME).unwrap().unwrap();
        let other = Lease::new(S, owner("gamma", 3)).body(0);
        st.put_named_if(LEASE_NAME, &other, Precondition::Matches(&cur.tag))
            .unwrap();
        match a.ensure(&st, 10_000) {
            Err(e @ LeaseError::Lost { .. }) => {
                assert!(
                    e.to_string().contains("host gamma pid 3 holds it now"),
                    "{e}"
                )
            }
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_late_renewal_keeps_the_lease_only_if_nobody_took_it() {
        let (st, dir) = store("late");
        let mut a = Lease::new(S, owner("alpha", 1));
        a.ensure(&st, 0).unwrap();
        // Stuck (or storage down) past the expiry, but nobody took over: the compare-and-swap
        // proves the history is still ours.
        assert_eq!(a.ensure(&st, 45_000).unwrap(), Ensured::Kept);
        // Past the expiry again, and someone took over meanwhile: lost.
        let mut b = Lease::new(S, owner("beta", 2));
        assert_eq!(b.ensure(&st, 80_000).unwrap(), Ensured::Taken);
        assert!(matches!(
            a.ensure(&st, 81_000),
            Err(LeaseError::Lost { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_expired_lease_that_cannot_be_renewed_is_not_held() {
        let (st, dir) = store("unreachable");
        let mut a = Lease::new(S, owner("alpha", 1));
        a.ensure(&st, 0).unwrap();
        // Storage becomes unusable (the replica root is now a file): before the expiry the
        // lease is still good; after it, `ensure` fails and the caller must not upload.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::write(&dir, b"not a directory").unwrap();
        assert_eq!(a.ensure(&st, 10_000).unwrap(), Ensured::Kept);
        assert!(matches!(
            a.ensure(&st, 31_000),
            Err(LeaseError::Storage { .. })
        ));
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn release_frees_it_at_once_and_only_our_own() {
        let (st, dir) = store("release");
        let mut a = Lease::new(S, owner("alpha", 1));
        let mut b = Lease::new(S, owner("beta", 2));
        a.ensure(&st, 0).unwrap();
        a.release(&st);
        assert!(st.get_named(LEASE_NAME).unwrap().is_none());
        assert_eq!(b.ensure(&st, 1_000).unwrap(), Ensured::Taken);
        // A stale holder's release does not remove the new holder's lease.
        let mut stale = Lease::new(S, owner("alpha", 1));
        stale.held = Some(Held {
            tag: "not-the-tag".into(),
            expires_ms: 0,
            renew_at_ms: 0,
        });
        stale.release(&st);
        assert_eq!(b.ensure(&st, 2_000).unwrap(), Ensured::Kept);
        assert!(st.get_named(LEASE_NAME).unwrap().is_some());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn our_own_lease_is_adopted_after_a_lost_answer() {
        let (st, dir) = store("adopt");
        let me = owner("alpha", 1);
        let mut a = Lease::new(S, me.clone());
        a.ensure(&st, 0).unwrap();
        // The same process, having lost track of its tag (e.g. a retried PUT), takes it back.
        let mut again = Lease::new(S, me);
        assert_eq!(again.ensure(&st, 1_000).unwrap(), Ensured::Taken);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_dead_process_of_this_host_does_not_hold_the_lease() {
        let (st, dir) = store("dead");
        // A pid that does not exist (above the kernel's pid_max), on our host: a crashed walship.
        let mut dead = Lease::new(S, owner("alpha", 0x7fff_fff0));
        dead.ensure(&st, 0).unwrap();
        let mut a = Lease::new(S, owner("alpha", std::process::id()));
        assert_eq!(a.ensure(&st, 1_000).unwrap(), Ensured::Taken);
        // The same pid on another host is not ours to judge: wait for the expiry.
        let mut b = Lease::new(S, owner("beta", std::process::id()));
        assert!(matches!(
            b.ensure(&st, 2_000),
            Err(LeaseError::HeldByOther { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn foreign_objects_are_reported() {
        let (st, dir) = store("invalid");
        st.put_named_if(LEASE_NAME, b"hello", Precondition::Absent)
            .unwrap();
        let mut a = Lease::new(S, owner("alpha", 1));
        assert!(matches!(a.ensure(&st, 0), Err(LeaseError::Invalid { .. })));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn parses_what_it_writes() {
        let l = Lease::new(S, owner("host-1.example", 77));
        let r = parse(&l.body(5)).unwrap();
        assert_eq!(r.owner, owner("host-1.example", 77));
        assert_eq!(r.expires_ms, 30_005);
    }
}
