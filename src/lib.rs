//! walship: continuous backup of SQLite databases from inside the application's process.
//! See docs/ARCHITECTURE.md for the map of modules.

pub mod capture;
pub mod wal;
