//! A connection the crate opened itself (to a temporary, source or staging database), closed
//! exactly once and freeing only what it owns.

use std::ffi::{c_int, CStr};
use std::ptr::{self, NonNull};

use libsqlite3_sys as ffi;

use super::db::{failure_from_code, DbRef};
use crate::error::SqliteFailure;

/// A connection this crate opened itself; closed on drop.
pub(crate) struct OwnedDb {
    ptr: NonNull<ffi::sqlite3>,
}

// SAFETY: SQLite connections may move between threads when SQLite is built thread-safe
// (libsqlite3-sys's bundled build and every supported system build are); an OwnedDb is only
// ever used through `&mut`/`&` from one thread at a time because it is not `Sync`.
unsafe impl Send for OwnedDb {}

impl OwnedDb {
    /// Opens `target` (a path, or a URI when `flags` has `SQLITE_OPEN_URI`) with the default
    /// VFS.
    pub(crate) fn open(target: &CStr, flags: c_int) -> Result<OwnedDb, SqliteFailure> {
        Self::open_with_vfs(target, flags, None)
    }

    /// Opens `target` through the VFS named `vfs` (`None`: the default).
    pub(crate) fn open_with_vfs(
        target: &CStr,
        flags: c_int,
        vfs: Option<&CStr>,
    ) -> Result<OwnedDb, SqliteFailure> {
        let mut db: *mut ffi::sqlite3 = ptr::null_mut();
        let vfs = vfs.map_or(ptr::null(), CStr::as_ptr);
        // SAFETY: NUL-terminated name and VFS name (or NULL), out-pointer to a local.
        let rc = unsafe { ffi::sqlite3_open_v2(target.as_ptr(), &mut db, flags, vfs) };
        let Some(ptr) = NonNull::new(db) else {
            return Err(failure_from_code(ffi::SQLITE_NOMEM));
        };
        let owned = OwnedDb { ptr };
        if rc != ffi::SQLITE_OK {
            // Dropping `owned` closes the half-open handle, as sqlite3_open_v2 requires.
            return Err(owned.db().failure(rc));
        }
        // SAFETY: the handle is open; extended codes make failures precise.
        unsafe { ffi::sqlite3_extended_result_codes(ptr.as_ptr(), 1) };
        Ok(owned)
    }

    /// Borrows the handle.
    pub(crate) fn db(&self) -> DbRef<'_> {
        // SAFETY: the handle stays open for as long as `self` is borrowed.
        unsafe { DbRef::from_raw(self.ptr) }
    }

    /// Closes the handle, reporting SQLite's verdict.
    pub(crate) fn close(self) -> Result<(), SqliteFailure> {
        let ptr = self.ptr;
        std::mem::forget(self);
        // SAFETY: we own the handle and forgot `self`, so it is closed exactly once.
        match unsafe { close_handle(ptr) } {
            ffi::SQLITE_OK => Ok(()),
            rc => Err(failure_from_code(rc)),
        }
    }
}

impl Drop for OwnedDb {
    fn drop(&mut self) {
        // SAFETY: we own the handle and drop runs once (`close` forgets self).
        unsafe { close_handle(self.ptr) };
    }
}

// libsqlite3-sys leaves this one out of its bindings; every SQLite since 3.7.14 exports it.
extern "C" {
    fn sqlite3_close_v2(db: *mut ffi::sqlite3) -> c_int;
}

/// Closes the handle. Statements are not finalized here: every statement this crate prepares
/// is finalized by the code that prepared it, and the ones virtual-table modules (FTS, R*Tree)
/// own are finalized by those modules while SQLite disconnects them inside `sqlite3_close`.
/// Finalizing them here too would free them twice. Should anything still be open,
/// `sqlite3_close` answers `SQLITE_BUSY`; the handle is then handed to `sqlite3_close_v2`,
/// which frees it once the last owner lets go, and the BUSY is reported.
///
/// # Safety
/// `ptr` is an open connection owned by the caller and never used again.
unsafe fn close_handle(ptr: NonNull<ffi::sqlite3>) -> c_int {
    // SAFETY: per the contract, the handle is open and ours, and this is its one close:
    // either sqlite3_close succeeds, or it fails without closing and sqlite3_close_v2 takes
    // over (it defers the free until the remaining objects are released by their owners).
    unsafe {
        let rc = ffi::sqlite3_close(ptr.as_ptr());
        if rc != ffi::SQLITE_OK {
            sqlite3_close_v2(ptr.as_ptr());
        }
        rc
    }
}
