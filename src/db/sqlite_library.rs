//! Process-wide settings of the SQLite library, made once before its first connection opens.
//!
//! By default SQLite serializes every call on a connection with a mutex of its own, and keeps memory
//! statistics behind a global one, in case one connection is used by several threads at once. Here
//! a connection is only ever used by one thread at a time (the pool hands it out whole; diesel's
//! connections are not `Sync`), so multi-thread mode skips those locks on every step of every
//! statement, and the statistics nothing reads are not kept.

use std::sync::Once;

use libsqlite3_sys as ffi;

/// Applies the settings if the library has not started yet (once it has — a connection opened
/// elsewhere first — SQLite refuses them and keeps its defaults, which are safe, only slower).
pub fn configure() {
    static CONFIGURED: Once = Once::new();
    CONFIGURED.call_once(|| {
        // SAFETY: `sqlite3_config` is called before any connection of this process opens (this
        // runs before the first one the pool makes) with options that take no pointers; if the
        // library is already running it returns SQLITE_MISUSE and changes nothing.
        let results = unsafe {
            [
                ffi::sqlite3_config(ffi::SQLITE_CONFIG_MULTITHREAD),
                ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int),
            ]
        };
        if results.iter().any(|&rc| rc != ffi::SQLITE_OK) {
            tracing::debug!(
                ?results,
                "SQLite was already running: its default locking stays"
            );
        }
    });
}
