//! Thin, safe wrappers over a raw `sqlite3*`: a borrowed one (a Diesel connection's) and an
//! owned one (the crate's private connections to temporary and source files).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};

use libsqlite3_sys as ffi;

use crate::error::SqliteFailure;

/// A connection handle borrowed for `'a`. Not `Send`: it is used on the thread that borrowed it.
pub(crate) struct DbRef<'a> {
    ptr: NonNull<ffi::sqlite3>,
    _borrow: PhantomData<&'a mut ffi::sqlite3>,
}

impl<'a> DbRef<'a> {
    /// # Safety
    /// `ptr` must be an open connection that stays open, and is used by no other thread,
    /// for `'a`.
    pub(crate) unsafe fn from_raw(ptr: NonNull<ffi::sqlite3>) -> Self {
        DbRef {
            ptr,
            _borrow: PhantomData,
        }
    }

    /// Another borrow of the same handle, for as long as this one.
    pub(crate) fn reborrow(&self) -> DbRef<'_> {
        DbRef {
            ptr: self.ptr,
            _borrow: PhantomData,
        }
    }

    pub(crate) fn as_ptr(&self) -> *mut ffi::sqlite3 {
        self.ptr.as_ptr()
    }

    /// SQLite's account of the last failure on this connection, for result code `rc`.
    pub(crate) fn failure(&self, rc: c_int) -> SqliteFailure {
        // SAFETY: the handle is open (type invariant); both calls only read connection state.
        let (ext, msg) = unsafe {
            (
                ffi::sqlite3_extended_errcode(self.as_ptr()),
                cstr_lossy(ffi::sqlite3_errmsg(self.as_ptr())),
            )
        };
        // The connection's message belongs to this failure only when its code matches.
        if ext & 0xff == rc & 0xff {
            SqliteFailure {
                code: ext & 0xff,
                extended_code: ext,
                message: msg,
            }
        } else {
            failure_from_code(rc)
        }
    }

    /// Runs one or more statements, discarding any rows.
    pub(crate) fn exec(&self, sql: &str) -> Result<(), SqliteFailure> {
        let sql = CString::new(sql).map_err(|_| failure_from_code(ffi::SQLITE_MISUSE))?;
        let mut err: *mut c_char = ptr::null_mut();
        // SAFETY: open handle; `sql` is NUL-terminated and outlives the call; no callback.
        let rc = unsafe {
            ffi::sqlite3_exec(self.as_ptr(), sql.as_ptr(), None, ptr::null_mut(), &mut err)
        };
        if rc == ffi::SQLITE_OK {
            return Ok(());
        }
        let mut failure = self.failure(rc);
        if !err.is_null() {
            // SAFETY: sqlite3_exec allocated `err` with sqlite3_malloc; we read then free it once.
            unsafe {
                failure.message = cstr_lossy(err);
                ffi::sqlite3_free(err as *mut c_void);
            }
        }
        Err(failure)
    }

    /// Every row's first column as text (NULL becomes an empty string).
    pub(crate) fn query_column(&self, sql: &str) -> Result<Vec<String>, SqliteFailure> {
        let sql = CString::new(sql).map_err(|_| failure_from_code(ffi::SQLITE_MISUSE))?;
        let mut stmt: *mut ffi::sqlite3_stmt = ptr::null_mut();
        // SAFETY: open handle, NUL-terminated SQL, out-pointer to a local.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(self.as_ptr(), sql.as_ptr(), -1, &mut stmt, ptr::null_mut())
        };
        if rc != ffi::SQLITE_OK {
            return Err(self.failure(rc));
        }
        let mut rows = Vec::new();
        let result = loop {
            // SAFETY: `stmt` is a live statement of this connection until finalized below.
            match unsafe { ffi::sqlite3_step(stmt) } {
                ffi::SQLITE_ROW => {
                    // SAFETY: a row is current, column 0 exists for every statement we run;
                    // the text pointer is valid until the next step, and we copy it now.
                    rows.push(unsafe { cstr_lossy(ffi::sqlite3_column_text(stmt, 0).cast()) });
                }
                ffi::SQLITE_DONE => break Ok(rows),
                rc => break Err(self.failure(rc)),
            }
        };
        // SAFETY: finalizing a statement we prepared, exactly once.
        unsafe { ffi::sqlite3_finalize(stmt) };
        result
    }

    /// The first column of the first row as an integer.
    pub(crate) fn query_i64(&self, sql: &str) -> Result<i64, SqliteFailure> {
        let rows = self.query_column(sql)?;
        rows.first()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| failure_from_code(ffi::SQLITE_MISMATCH))
    }

    /// The file behind `schema`: `None` when no such schema is attached, `Some("")` for a
    /// private in-memory or temporary database.
    pub(crate) fn filename(&self, schema: &CStr) -> Option<String> {
        // SAFETY: open handle and NUL-terminated name; the result is NULL or a string owned
        // by the connection, which we copy before returning.
        unsafe {
            let name = ffi::sqlite3_db_filename(self.as_ptr(), schema.as_ptr());
            if name.is_null() {
                None
            } else {
                Some(cstr_lossy(name))
            }
        }
    }

    /// A printable name for `schema`'s database, for error messages.
    pub(crate) fn display_path(&self, schema: &CStr) -> PathBuf {
        match self.filename(schema) {
            Some(f) if !f.is_empty() => PathBuf::from(f),
            _ => PathBuf::from(":memory:"),
        }
    }

    /// Where `schema` keeps its pages. A database without a file name (`:memory:`, temp, an
    /// attached `:memory:`) is SQLite's own in-memory pager whatever the connection's VFS;
    /// any other is decided by the VFS SQLite opened it with.
    pub(crate) fn storage(&self, schema: &CStr) -> Storage {
        if self.filename(schema).is_none_or(|f| f.is_empty()) {
            return Storage::PrivateMemory;
        }
        match self.vfs_name(schema).as_deref() {
            Some(n) if super::memdb::vfs::is_ours(n) => Storage::PatchedMemdb,
            Some(n) if n == c"memdb" => Storage::Memdb,
            _ => Storage::File,
        }
    }

    /// The name of the VFS `schema` was opened with.
    pub(crate) fn vfs_name(&self, schema: &CStr) -> Option<CString> {
        let mut vfs: *mut ffi::sqlite3_vfs = ptr::null_mut();
        // SAFETY: SQLITE_FCNTL_VFS_POINTER writes one `sqlite3_vfs*` into the out-pointer; a
        // VFS a connection uses stays registered while the connection is open, and we copy
        // its name before returning.
        unsafe {
            let rc = ffi::sqlite3_file_control(
                self.as_ptr(),
                schema.as_ptr(),
                ffi::SQLITE_FCNTL_VFS_POINTER,
                (&mut vfs as *mut *mut ffi::sqlite3_vfs).cast(),
            );
            (rc == ffi::SQLITE_OK && !vfs.is_null())
                .then(|| CStr::from_ptr((*vfs).zName).to_owned())
        }
    }

    /// True when `schema` lives in memory (`:memory:`, temp, or a memdb database).
    pub(crate) fn is_in_memory(&self, schema: &CStr) -> bool {
        self.storage(schema) != Storage::File
    }

    /// True when SQLite opened `schema` read-only (for example a file without write
    /// permission, which `SQLITE_OPEN_READWRITE` silently opens read-only).
    pub(crate) fn is_readonly(&self, schema: &CStr) -> bool {
        // SAFETY: open handle and NUL-terminated schema name; returns -1, 0 or 1.
        unsafe { ffi::sqlite3_db_readonly(self.as_ptr(), schema.as_ptr()) != 0 }
    }

    /// `sqlite3_txn_state` for `schema`: `SQLITE_TXN_NONE`, `_READ` or `_WRITE`.
    pub(crate) fn txn_state(&self, schema: &CStr) -> c_int {
        // SAFETY: open handle and NUL-terminated schema name.
        unsafe { ffi::sqlite3_txn_state(self.as_ptr(), schema.as_ptr()) }
    }

    /// False while a transaction is open on this connection.
    pub(crate) fn autocommit(&self) -> bool {
        // SAFETY: open handle; a pure read of connection state.
        unsafe { ffi::sqlite3_get_autocommit(self.as_ptr()) != 0 }
    }

    /// Sets the busy timeout; 0 removes any busy handler.
    pub(crate) fn set_busy_timeout(&self, ms: c_int) {
        // SAFETY: open handle; the call only replaces the connection's busy handler.
        unsafe { ffi::sqlite3_busy_timeout(self.as_ptr(), ms) };
    }
}

/// Where a database keeps its pages, which decides what a page-for-page copy into it may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Storage {
    /// A file on disk.
    File,
    /// `:memory:` or a temp database: SQLite's own in-memory pager, which ignores WAL header
    /// bytes.
    PrivateMemory,
    /// The memdb VFS (deserialized or `vfs=memdb` databases): a WAL header makes it unreadable.
    Memdb,
    /// The crate's memdb shim, which rewrites WAL header bytes as it writes page 1.
    PatchedMemdb,
}

/// A failure built from a result code alone (`sqlite3_errstr`).
pub(crate) fn failure_from_code(rc: c_int) -> SqliteFailure {
    // SAFETY: sqlite3_errstr returns a static string for any code.
    let message = unsafe { cstr_lossy(ffi::sqlite3_errstr(rc)) };
    SqliteFailure {
        code: rc & 0xff,
        extended_code: rc,
        message,
    }
}

/// Copies a C string; NULL becomes "".
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for the call.
unsafe fn cstr_lossy(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// A path as SQLite wants it: NUL-terminated bytes.
pub(crate) fn path_cstring(path: &Path) -> Option<CString> {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = path.to_str()?.as_bytes().to_vec();
    CString::new(bytes).ok()
}

/// A read-only `file:` URI for `path` (absolute), percent-encoding everything SQLite's URI
/// parser could misread.
pub(crate) fn readonly_uri(path: &Path) -> Option<CString> {
    let raw = path_cstring(path)?;
    let mut uri = String::from("file:");
    for &b in raw.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?mode=ro");
    CString::new(uri).ok()
}
