//! The database as one image in memory: `sqlite3_serialize` and `sqlite3_deserialize` in
//! their three ownership modes (SQLite's copy, a buffer we lend read-only, a buffer memdb
//! writes into), and memdb's size cap.

use std::ffi::CStr;
use std::ptr;

use libsqlite3_sys as ffi;

use super::db::{failure_from_code, DbRef};
use crate::error::SqliteFailure;

impl DbRef<'_> {
    /// A copy of `main`'s pages (`sqlite3_serialize`), or `None` when SQLite cannot produce
    /// one (out of memory, or an empty database).
    pub(crate) fn serialize_main(&self) -> Option<Vec<u8>> {
        let mut size: i64 = 0;
        // SAFETY: open handle; flags 0 asks SQLite for a fresh sqlite3_malloc'd copy, which we
        // copy into a Vec and free exactly once.
        unsafe {
            let data = ffi::sqlite3_serialize(self.as_ptr(), c"main".as_ptr(), &mut size, 0);
            if data.is_null() {
                return None;
            }
            let image = std::slice::from_raw_parts(data, size as usize).to_vec();
            ffi::sqlite3_free(data.cast());
            Some(image)
        }
    }

    /// Replaces `main` with a private, writable in-memory copy of `image`
    /// (`sqlite3_deserialize`). The connection must have no open transaction.
    pub(crate) fn deserialize_main(&self, image: &[u8]) -> Result<(), SqliteFailure> {
        let len = image.len() as u64;
        // SAFETY: sqlite3_malloc64 returns NULL or `len` writable bytes. We fill them and hand
        // ownership to SQLite with FREEONCLOSE; SQLite frees them even when it fails.
        unsafe {
            let buf = ffi::sqlite3_malloc64(len.max(1)).cast::<u8>();
            if buf.is_null() {
                return Err(failure_from_code(ffi::SQLITE_NOMEM));
            }
            ptr::copy_nonoverlapping(image.as_ptr(), buf, image.len());
            let flags = ffi::SQLITE_DESERIALIZE_FREEONCLOSE | ffi::SQLITE_DESERIALIZE_RESIZEABLE;
            let rc = ffi::sqlite3_deserialize(
                self.as_ptr(),
                c"main".as_ptr(),
                buf,
                len as i64,
                len as i64,
                flags,
            );
            if rc == ffi::SQLITE_OK {
                Ok(())
            } else {
                Err(self.failure(rc))
            }
        }
    }

    /// Points `main` at `image` read-only without copying it. `image` must outlive every use
    /// of this connection's `main` database.
    ///
    /// # Safety
    /// The caller keeps `image` alive and unmodified until the connection closes or `main`
    /// is replaced.
    pub(crate) unsafe fn borrow_image_readonly(&self, image: &[u8]) -> Result<(), SqliteFailure> {
        let len = image.len() as i64;
        // SAFETY: READONLY and no FREEONCLOSE: SQLite only reads the buffer and never frees
        // or resizes it; the caller guarantees its lifetime.
        let rc = unsafe {
            ffi::sqlite3_deserialize(
                self.as_ptr(),
                c"main".as_ptr(),
                image.as_ptr().cast_mut(),
                len,
                len,
                ffi::SQLITE_DESERIALIZE_READONLY,
            )
        };
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(self.failure(rc))
        }
    }

    /// Makes `main` an empty in-memory database whose pages memdb writes into `buffer`, which
    /// it never frees or grows: writes past `buffer.len()` fail with `SQLITE_FULL`.
    ///
    /// # Safety
    /// `buffer` stays alive, unmoved and untouched by anything else until the connection
    /// closes or `main` is replaced.
    pub(crate) unsafe fn write_main_into(&self, buffer: &mut [u8]) -> Result<(), SqliteFailure> {
        // SAFETY: no FREEONCLOSE and no RESIZEABLE: memdb only reads and writes within the
        // buffer's length; the caller guarantees its lifetime. A size of 0 is an empty database.
        let rc = unsafe {
            ffi::sqlite3_deserialize(
                self.as_ptr(),
                c"main".as_ptr(),
                buffer.as_mut_ptr(),
                0,
                buffer.len() as i64,
                0,
            )
        };
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(self.failure(rc))
        }
    }

    /// Lifts (or sets) memdb's size cap for `schema`. Returns the cap now in force.
    pub(crate) fn set_memdb_size_limit(&self, schema: &CStr, limit: i64) -> Option<i64> {
        let mut value = limit;
        // SAFETY: SQLITE_FCNTL_SIZE_LIMIT reads and writes one sqlite3_int64 through the
        // pointer, which points at a live local. Non-memdb files answer SQLITE_NOTFOUND.
        let rc = unsafe {
            ffi::sqlite3_file_control(
                self.as_ptr(),
                schema.as_ptr(),
                ffi::SQLITE_FCNTL_SIZE_LIMIT,
                (&mut value as *mut i64).cast(),
            )
        };
        (rc == ffi::SQLITE_OK).then_some(value)
    }
}
