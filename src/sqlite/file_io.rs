//! Reading and writing a database file at any offset through SQLite's own file handle
//! (`SQLITE_FCNTL_FILE_POINTER`), for incremental saves: the bytes go through the very
//! descriptor whose locks the connection holds, and no descriptor of ours is opened or closed.

use std::ffi::{c_int, CStr};

use libsqlite3_sys as ffi;

use super::db::{failure_from_code, DbRef};
use crate::error::SqliteFailure;

impl DbRef<'_> {
    /// The open file object behind `schema`, for code that asks which VFS object it is.
    pub(crate) fn file_object(&self, schema: &CStr) -> Option<*mut ffi::sqlite3_file> {
        self.main_file(schema).ok()
    }

    /// Fills `buffer` from `offset` of `schema`'s file (zeros past its end).
    pub(crate) fn read_at(
        &self,
        schema: &CStr,
        offset: u64,
        buffer: &mut [u8],
    ) -> Result<(), SqliteFailure> {
        let file = self.main_file(schema)?;
        let len =
            c_int::try_from(buffer.len()).map_err(|_| failure_from_code(ffi::SQLITE_TOOBIG))?;
        // SAFETY: `file` is the schema's open file object (main_file); xRead writes at most
        // `len` bytes into the live, exclusively borrowed buffer.
        let rc = unsafe {
            match (*(*file).pMethods).xRead {
                Some(read) => read(file, buffer.as_mut_ptr().cast(), len, offset as i64),
                None => ffi::SQLITE_NOTFOUND,
            }
        };
        match rc {
            ffi::SQLITE_OK | ffi::SQLITE_IOERR_SHORT_READ => Ok(()),
            rc => Err(failure_from_code(rc)),
        }
    }

    /// Writes all of `data` at `offset` of `schema`'s file. The caller holds the lock that
    /// makes writing the file correct (an EXCLUSIVE lock on it).
    pub(crate) fn write_at(
        &self,
        schema: &CStr,
        offset: u64,
        data: &[u8],
    ) -> Result<(), SqliteFailure> {
        let file = self.main_file(schema)?;
        let len = c_int::try_from(data.len()).map_err(|_| failure_from_code(ffi::SQLITE_TOOBIG))?;
        // SAFETY: open file object (main_file); xWrite only reads `len` bytes of `data`.
        let rc = unsafe {
            match (*(*file).pMethods).xWrite {
                Some(write) => write(file, data.as_ptr().cast(), len, offset as i64),
                None => ffi::SQLITE_NOTFOUND,
            }
        };
        match rc {
            ffi::SQLITE_OK => Ok(()),
            rc => Err(failure_from_code(rc)),
        }
    }

    /// Cuts `schema`'s file to `len` bytes.
    pub(crate) fn truncate_file(&self, schema: &CStr, len: u64) -> Result<(), SqliteFailure> {
        let file = self.main_file(schema)?;
        // SAFETY: open file object (main_file); xTruncate takes the file and a size.
        let rc = unsafe {
            match (*(*file).pMethods).xTruncate {
                Some(truncate) => truncate(file, len as i64),
                None => ffi::SQLITE_NOTFOUND,
            }
        };
        match rc {
            ffi::SQLITE_OK => Ok(()),
            rc => Err(failure_from_code(rc)),
        }
    }

    /// Makes `schema`'s file durable (`xSync`, as SQLite syncs a database at commit).
    pub(crate) fn sync_file(&self, schema: &CStr) -> Result<(), SqliteFailure> {
        let file = self.main_file(schema)?;
        // SAFETY: open file object (main_file); xSync takes the file and flags.
        let rc = unsafe {
            match (*(*file).pMethods).xSync {
                Some(sync) => sync(file, ffi::SQLITE_SYNC_NORMAL),
                None => ffi::SQLITE_NOTFOUND,
            }
        };
        match rc {
            ffi::SQLITE_OK => Ok(()),
            rc => Err(failure_from_code(rc)),
        }
    }

    /// Takes the lock `level` (`SQLITE_LOCK_SHARED`, then `SQLITE_LOCK_RESERVED`) on
    /// `schema`'s file through its own handle, underneath the pager, without waiting. Only for
    /// a connection that runs no SQL afterwards: closing it releases the lock.
    pub(crate) fn lock_file(&self, schema: &CStr, level: c_int) -> Result<(), SqliteFailure> {
        let file = self.main_file(schema)?;
        // SAFETY: open file object (main_file); xLock takes the file and a lock level.
        let rc = unsafe {
            match (*(*file).pMethods).xLock {
                Some(lock) => lock(file, level),
                None => ffi::SQLITE_NOTFOUND,
            }
        };
        match rc {
            ffi::SQLITE_OK => Ok(()),
            rc => Err(failure_from_code(rc)),
        }
    }
}
