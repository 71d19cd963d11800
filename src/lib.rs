//! walship: continuous backup of SQLite databases from inside the application's process.
//!
//! Data flows one way: `ffi::vfs` (shim) → `capture` (with `wal_reader`) → `shipper` → `storage`;
//! `restore` runs it backwards. See docs/ARCHITECTURE.md for the map of modules.

pub mod capture;
pub mod clock;
pub mod compact;
pub mod config;
pub mod ffi;
pub mod fuzzing;
pub mod logging;
pub mod ltx;
pub mod metrics;
pub mod process;
pub mod registry;
pub mod restore;
pub mod shipper;
pub mod snapshot;
pub mod storage;
pub mod wal;
pub mod wal_reader;
