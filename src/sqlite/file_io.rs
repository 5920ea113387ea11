//! The one wrapper for SQLite file objects (`sqlite3_file` and its `sqlite3_io_methods`).
//!
//! A connection's own file object (`SQLITE_FCNTL_FILE_POINTER`) is reached through
//! [`DbRef::file`]: reading and writing a database file at any offset through it, for
//! incremental saves, puts the bytes through the very descriptor whose locks the connection
//! holds, and no descriptor of ours is opened or closed. The memdb loader's own object
//! (`memdb::file`) goes through the same [`FileRef`].

use std::ffi::{c_int, CStr};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ptr::{self, NonNull};

use libsqlite3_sys as ffi;

use super::db::{failure_from_code, DbRef};
use crate::error::SqliteFailure;

/// An open file object, borrowed for `'a`; every call goes through its method table.
#[derive(Clone, Copy)]
pub(crate) struct FileRef<'a> {
    file: NonNull<ffi::sqlite3_file>,
    _open: PhantomData<&'a ffi::sqlite3_file>,
}

impl FileRef<'_> {
    /// # Safety
    /// `file`, if not NULL, is an open file object (its method table, if not NULL, is the
    /// one its VFS set up) that stays open and is used only on this thread while the
    /// `FileRef` lives. `None` for NULL or for an object without a method table (not open).
    pub(crate) unsafe fn from_raw(file: *mut ffi::sqlite3_file) -> Option<Self> {
        let file = NonNull::new(file)?;
        // SAFETY: the caller promises a live object; we read its method table pointer.
        if unsafe { (*file.as_ptr()).pMethods.is_null() } {
            return None;
        }
        Some(FileRef {
            file,
            _open: PhantomData,
        })
    }

    pub(crate) fn as_ptr(self) -> *mut ffi::sqlite3_file {
        self.file.as_ptr()
    }

    fn methods(&self) -> &ffi::sqlite3_io_methods {
        // SAFETY: `from_raw` checked the table is not NULL; it belongs to a registered VFS
        // and lives as long as the object is open.
        unsafe { &*(*self.file.as_ptr()).pMethods }
    }

    /// Fills `buffer` from `offset`, in chunks below xRead's `int` limit. Past the end of
    /// the file the VFS zero-fills (SQLite's short-read rule), so every byte is written.
    pub(crate) fn read(
        self,
        offset: u64,
        buffer: &mut [MaybeUninit<u8>],
    ) -> Result<(), SqliteFailure> {
        const CHUNK: usize = 1 << 30;
        let Some(read) = self.methods().xRead else {
            return Err(failure_from_code(ffi::SQLITE_NOTFOUND));
        };
        for (i, chunk) in buffer.chunks_mut(CHUNK).enumerate() {
            let at = offset + (i * CHUNK) as u64;
            // SAFETY: open object (see `from_raw`); xRead writes `chunk.len()` bytes into
            // the chunk, which is live and exclusively ours.
            let rc = unsafe {
                read(
                    self.as_ptr(),
                    chunk.as_mut_ptr().cast(),
                    chunk.len() as c_int,
                    at as i64,
                )
            };
            if rc != ffi::SQLITE_OK && rc != ffi::SQLITE_IOERR_SHORT_READ {
                return Err(failure_from_code(rc));
            }
        }
        Ok(())
    }

    /// Writes all of `data` at `offset`.
    pub(crate) fn write(self, offset: u64, data: &[u8]) -> Result<(), SqliteFailure> {
        let len = c_int::try_from(data.len()).map_err(|_| failure_from_code(ffi::SQLITE_TOOBIG))?;
        let write = self.methods().xWrite;
        // SAFETY: open object; xWrite only reads `len` bytes of the live slice.
        check(write.map(|w| unsafe { w(self.as_ptr(), data.as_ptr().cast(), len, offset as i64) }))
    }

    /// Cuts the file to `len` bytes.
    pub(crate) fn truncate(self, len: u64) -> Result<(), SqliteFailure> {
        let truncate = self.methods().xTruncate;
        // SAFETY: open object; xTruncate takes the object and a size.
        check(truncate.map(|t| unsafe { t(self.as_ptr(), len as i64) }))
    }

    /// `xSync` with `flags`.
    pub(crate) fn sync(self, flags: c_int) -> Result<(), SqliteFailure> {
        let sync = self.methods().xSync;
        // SAFETY: open object; xSync takes the object and flags.
        check(sync.map(|s| unsafe { s(self.as_ptr(), flags) }))
    }

    /// Takes the lock `level`, without waiting.
    pub(crate) fn lock(self, level: c_int) -> Result<(), SqliteFailure> {
        let lock = self.methods().xLock;
        // SAFETY: open object; xLock takes the object and a lock level.
        check(lock.map(|l| unsafe { l(self.as_ptr(), level) }))
    }

    /// Lowers the lock to `level`.
    pub(crate) fn unlock(self, level: c_int) -> Result<(), SqliteFailure> {
        let unlock = self.methods().xUnlock;
        // SAFETY: open object; xUnlock takes the object and a lock level.
        check(unlock.map(|u| unsafe { u(self.as_ptr(), level) }))
    }

    /// The file's size in bytes.
    pub(crate) fn size(self) -> Result<u64, SqliteFailure> {
        let mut size: i64 = 0;
        let file_size = self.methods().xFileSize;
        // SAFETY: open object; xFileSize writes one i64 to a live local.
        check(file_size.map(|s| unsafe { s(self.as_ptr(), &mut size) }))?;
        Ok(size.max(0) as u64)
    }

    /// Closes the object (`xClose`) and clears its method table so it is never closed twice.
    ///
    /// # Safety
    /// Nothing uses the object afterwards but its owner, to free it.
    pub(crate) unsafe fn close(self) {
        if let Some(close) = self.methods().xClose {
            // SAFETY: open object, closed once (see below).
            unsafe { close(self.as_ptr()) };
        }
        // SAFETY: the object is ours to mark closed; `from_raw` refuses it from now on.
        unsafe { (*self.as_ptr()).pMethods = ptr::null() };
    }
}

/// A method's result code; a method the table lacks is SQLite's "not found".
fn check(rc: Option<c_int>) -> Result<(), SqliteFailure> {
    match rc.unwrap_or(ffi::SQLITE_NOTFOUND) {
        ffi::SQLITE_OK => Ok(()),
        rc => Err(failure_from_code(rc)),
    }
}

impl DbRef<'_> {
    /// `schema`'s open file object (`SQLITE_FCNTL_FILE_POINTER`), owned by its pager and
    /// open for as long as the connection is.
    pub(crate) fn file(&self, schema: &CStr) -> Result<FileRef<'_>, SqliteFailure> {
        let mut file: *mut ffi::sqlite3_file = ptr::null_mut();
        // SAFETY: SQLITE_FCNTL_FILE_POINTER writes one `sqlite3_file*` into the out-pointer.
        let rc = unsafe {
            ffi::sqlite3_file_control(
                self.as_ptr(),
                schema.as_ptr(),
                ffi::SQLITE_FCNTL_FILE_POINTER,
                (&mut file as *mut *mut ffi::sqlite3_file).cast(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(failure_from_code(ffi::SQLITE_NOTFOUND));
        }
        // SAFETY: a non-null pointer from SQLite is the pager's open file object, which stays
        // open while the connection (borrowed by the result) is, on this thread.
        unsafe { FileRef::from_raw(file) }.ok_or_else(|| failure_from_code(ffi::SQLITE_NOTFOUND))
    }

    /// The open file object behind `schema`, for code that asks which VFS object it is.
    pub(crate) fn file_object(&self, schema: &CStr) -> Option<*mut ffi::sqlite3_file> {
        self.file(schema).ok().map(FileRef::as_ptr)
    }

    /// Fills `buffer` from `offset` of `schema`'s file (zeros past its end).
    pub(crate) fn read_at(
        &self,
        schema: &CStr,
        offset: u64,
        buffer: &mut [u8],
    ) -> Result<(), SqliteFailure> {
        c_int::try_from(buffer.len()).map_err(|_| failure_from_code(ffi::SQLITE_TOOBIG))?;
        self.file(schema)?.read(offset, as_uninit(buffer))
    }

    /// Writes all of `data` at `offset` of `schema`'s file. The caller holds the lock that
    /// makes writing the file correct (an EXCLUSIVE lock on it).
    pub(crate) fn write_at(
        &self,
        schema: &CStr,
        offset: u64,
        data: &[u8],
    ) -> Result<(), SqliteFailure> {
        self.file(schema)?.write(offset, data)
    }

    /// Cuts `schema`'s file to `len` bytes.
    pub(crate) fn truncate_file(&self, schema: &CStr, len: u64) -> Result<(), SqliteFailure> {
        self.file(schema)?.truncate(len)
    }

    /// Makes `schema`'s file durable (`xSync`, as SQLite syncs a database at commit).
    pub(crate) fn sync_file(&self, schema: &CStr) -> Result<(), SqliteFailure> {
        self.file(schema)?.sync(ffi::SQLITE_SYNC_NORMAL)
    }

    /// Takes the lock `level` (`SQLITE_LOCK_SHARED`, then `SQLITE_LOCK_RESERVED`) on
    /// `schema`'s file through its own handle, underneath the pager, without waiting. Only for
    /// a connection that runs no SQL afterwards: closing it releases the lock.
    pub(crate) fn lock_file(&self, schema: &CStr, level: c_int) -> Result<(), SqliteFailure> {
        self.file(schema)?.lock(level)
    }

    /// The first 100 bytes of `schema`'s file and the file's length, read through SQLite's own
    /// open file handle (so no descriptor of ours is opened or closed on a file whose locks
    /// this process holds). Call it inside a read transaction, so both are the state that
    /// transaction sees; in WAL mode the file may lag the WAL.
    pub(crate) fn file_header(&self, schema: &CStr) -> Result<([u8; 100], u64), SqliteFailure> {
        let len = self.file_len(schema)?;
        let mut header = [0u8; 100];
        self.read_file(schema, &mut header)?;
        Ok((header, len))
    }

    /// The length of `schema`'s file, from SQLite's own file handle.
    pub(crate) fn file_len(&self, schema: &CStr) -> Result<u64, SqliteFailure> {
        self.file(schema)?.size()
    }

    /// Fills `buffer` from the start of `schema`'s file, through SQLite's own file handle. Past
    /// the end of the file the buffer is zero-filled (SQLite's short-read rule).
    pub(crate) fn read_file(&self, schema: &CStr, buffer: &mut [u8]) -> Result<(), SqliteFailure> {
        self.file(schema)?.read(0, as_uninit(buffer))
    }

    /// The first `len` bytes of `schema`'s file, read without first zeroing the buffer.
    pub(crate) fn read_file_to_vec(
        &self,
        schema: &CStr,
        len: usize,
    ) -> Result<Vec<u8>, SqliteFailure> {
        let mut bytes = Vec::with_capacity(len);
        self.file(schema)?
            .read(0, &mut bytes.spare_capacity_mut()[..len])?;
        // SAFETY: the read succeeded, so every one of the `len` bytes was written (xRead
        // fills the whole buffer, zero-filling what lies past the end of the file).
        unsafe { bytes.set_len(len) };
        Ok(bytes)
    }
}

fn as_uninit(buffer: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: an initialised slice is a valid destination for any bytes, and MaybeUninit<u8>
    // has u8's layout; nothing de-initialises it through the new view.
    unsafe { &mut *(buffer as *mut [u8] as *mut [MaybeUninit<u8>]) }
}
