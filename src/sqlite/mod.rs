//! The FFI layer, knowing nothing of saves: how the crate reaches SQLite's C API under a
//! Diesel connection, its file objects, the VFS shims, and the one busy handler that draws
//! on a call's budget.

pub(crate) mod batch_vfs;
mod bridge;
pub(crate) mod budget;
mod db;
pub(crate) mod file_io;
mod image;
pub(crate) mod memdb;
mod owned;

#[allow(deprecated)]
pub use bridge::init;
pub(crate) use bridge::raw_handle;
pub use budget::CancelToken;
pub(crate) use budget::{is_busy, Budget, BudgetedBusyHandler};
pub(crate) use db::{failure_from_code, path_cstring, readonly_uri, DbRef, Storage};
pub(crate) use owned::OwnedDb;

/// Registers `vfs` for the life of the process (leaked, never made the default). False, with
/// the object freed, when SQLite refuses it.
fn register_vfs(vfs: Box<libsqlite3_sys::sqlite3_vfs>) -> bool {
    use libsqlite3_sys as ffi;
    let vfs = Box::into_raw(vfs);
    // SAFETY: `vfs` is a complete VFS object that is never freed once registered, so it lives
    // as long as SQLite may use it; it is not made the default.
    let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
    if rc != ffi::SQLITE_OK {
        // SAFETY: registration failed, so SQLite holds no pointer to it; we free our box.
        drop(unsafe { Box::from_raw(vfs) });
    }
    rc == ffi::SQLITE_OK
}
