//! A file object of our own on a shared memdb database, opened by name through the crate's
//! memdb shim (`sqlite::memdb::vfs`), for loading a file into an empty database without its pager.
//!
//! memdb shares a database between every file object opened with the same name, and its
//! locks are the only thing that keeps those objects' connections apart: while this object
//! holds the EXCLUSIVE lock, no connection can read or write the database. The object is
//! closed, after its lock is released, when it is dropped.

use std::alloc::{self, Layout};
use std::ffi::{c_int, CStr};
use std::ptr::{self, NonNull};

use libsqlite3_sys as ffi;

use super::vfs as memdb_vfs;
use crate::error::SqliteFailure;
use crate::sqlite::failure_from_code;
use crate::sqlite::file_io::FileRef;

/// An open file object on the memdb database called `name`, not owned by any pager.
pub(crate) struct SharedMemdbFile {
    file: NonNull<ffi::sqlite3_file>,
    layout: Layout,
    /// The name as a `sqlite3_filename`, which must outlive the open file.
    name: ffi::sqlite3_filename,
    lock: c_int,
}

impl SharedMemdbFile {
    /// Opens the database `name` (a memdb name starting with `/`) through the shim. The
    /// caller makes sure that database exists (memdb would otherwise create an empty one).
    pub(crate) fn open(name: &CStr) -> Result<Self, SqliteFailure> {
        let refused = || failure_from_code(ffi::SQLITE_CANTOPEN);
        let vfs_name = memdb_vfs::name().ok_or_else(refused)?;
        // SAFETY: a registered VFS stays registered for the life of the process.
        let vfs = unsafe { ffi::sqlite3_vfs_find(vfs_name.as_ptr()) };
        // SAFETY: `vfs` is NULL or a registered VFS object; we read two fields.
        let (size, open) = match unsafe { vfs.as_ref() } {
            Some(v) => (v.szOsFile, v.xOpen.ok_or_else(refused)?),
            None => return Err(refused()),
        };
        let layout = Layout::from_size_align(size.max(1) as usize, 16).map_err(|_| refused())?;
        // SAFETY: `layout` has a non-zero size.
        let file = NonNull::new(unsafe { alloc::alloc_zeroed(layout) })
            .ok_or_else(|| failure_from_code(ffi::SQLITE_NOMEM))?
            .cast::<ffi::sqlite3_file>();
        // SAFETY: sqlite3_create_filename copies the strings into one sqlite3_malloc'd
        // filename object (NULL when out of memory), freed once in `Drop` or below.
        let name = unsafe {
            ffi::sqlite3_create_filename(
                name.as_ptr(),
                c"".as_ptr(),
                c"".as_ptr(),
                0,
                ptr::null_mut(),
            )
        };
        let mut me = SharedMemdbFile {
            file,
            layout,
            name,
            lock: ffi::SQLITE_LOCK_NONE,
        };
        if name.is_null() {
            return Err(failure_from_code(ffi::SQLITE_NOMEM));
        }
        let flags = ffi::SQLITE_OPEN_MAIN_DB | ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE;
        let mut out_flags = 0;
        // SAFETY: the VFS gets `szOsFile` zeroed bytes, 16-byte aligned (more than SQLite's
        // own allocations promise), a filename object that lives until Drop, and flags for a
        // main database. On failure pMethods stays NULL and Drop does not call xClose.
        let rc = unsafe { open(vfs, name, file.as_ptr(), flags, &mut out_flags) };
        if rc != ffi::SQLITE_OK || me.file().is_none() {
            me.close_quietly();
            return Err(failure_from_code(if rc == ffi::SQLITE_OK {
                ffi::SQLITE_CANTOPEN
            } else {
                rc
            }));
        }
        Ok(me)
    }

    /// The object through the one file-object wrapper; `None` until opened or once closed.
    fn file(&self) -> Option<FileRef<'_>> {
        // SAFETY: the object is ours, initialised (zeroed, then filled by xOpen) and used on
        // this thread only; it stays open while `self` is borrowed (only Drop closes it).
        unsafe { FileRef::from_raw(self.file.as_ptr()) }
    }

    fn opened(&self) -> Result<FileRef<'_>, SqliteFailure> {
        self.file()
            .ok_or_else(|| failure_from_code(ffi::SQLITE_MISUSE))
    }

    /// Takes the lock `level` (SHARED, RESERVED, EXCLUSIVE, in that order) without waiting:
    /// memdb answers `SQLITE_BUSY` at once when another connection is in the way.
    pub(crate) fn lock(&mut self, level: c_int) -> Result<(), SqliteFailure> {
        self.opened()?.lock(level)?;
        self.lock = level;
        Ok(())
    }

    /// The database's size in bytes.
    pub(crate) fn size(&self) -> Result<u64, SqliteFailure> {
        self.opened()?.size()
    }

    /// Writes `data` at `offset`. Only under the EXCLUSIVE lock.
    pub(crate) fn write(&self, data: &[u8], offset: u64) -> Result<(), SqliteFailure> {
        debug_assert_eq!(self.lock, ffi::SQLITE_LOCK_EXCLUSIVE);
        self.opened()?.write(offset, data)
    }

    /// Cuts the database to `len` bytes. Only under the EXCLUSIVE lock.
    pub(crate) fn truncate(&self, len: u64) -> Result<(), SqliteFailure> {
        debug_assert_eq!(self.lock, ffi::SQLITE_LOCK_EXCLUSIVE);
        self.opened()?.truncate(len)
    }

    /// Makes this object's writes count as changes for incremental saves, or not, as the
    /// connection's own file object `like` does.
    pub(crate) fn track_like(&self, like: *mut ffi::sqlite3_file) {
        // SAFETY: `like` is an open file object (the caller's connection's); our object is
        // open and carries the shim's method table, or is left alone.
        unsafe {
            let untracked = memdb_vfs::is_untracked(like);
            memdb_vfs::set_untracked(self.file.as_ptr(), untracked);
        }
    }

    /// Releases the lock and closes the object, ignoring failures (memdb's cannot fail).
    fn close_quietly(&mut self) {
        if let Some(file) = self.file() {
            if self.lock != ffi::SQLITE_LOCK_NONE {
                let _ = file.unlock(ffi::SQLITE_LOCK_NONE);
            }
            // SAFETY: the object was opened successfully (it has a method table); close
            // clears the table, so it is closed once, and only Drop frees it afterwards.
            unsafe { file.close() };
        }
        self.lock = ffi::SQLITE_LOCK_NONE;
    }
}

impl Drop for SharedMemdbFile {
    fn drop(&mut self) {
        self.close_quietly();
        // SAFETY: the filename object came from sqlite3_create_filename (or is NULL, which
        // sqlite3_free_filename accepts); the file object was allocated with `layout` and is
        // closed, so nothing refers to either any more.
        unsafe {
            ffi::sqlite3_free_filename(self.name);
            alloc::dealloc(self.file.as_ptr().cast(), self.layout);
        }
    }
}
