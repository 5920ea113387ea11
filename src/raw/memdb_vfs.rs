//! `memdb`, with one change: page 1 is never written with the WAL version numbers.
//!
//! A database file in WAL mode carries 2 in header bytes 18 and 19. SQLite's backup API copies
//! page 1 verbatim, so copying a WAL-mode source into a memdb database writes those bytes, and
//! from then on every connection to it tries to open a WAL, which memdb cannot do ("unable to
//! open database file"): the database is lost. memdb never runs in WAL mode, so in a memdb
//! database those bytes can only mean "rollback journal" (1). This VFS is memdb itself, under
//! another name; only `xWrite` differs, rewriting a 2 in bytes 18 or 19 of page 1 to 1. That is
//! the same change `PRAGMA journal_mode=DELETE` makes to a WAL file's header.
//!
//! Files are memdb's own objects: the shim only swaps their method table for a copy of memdb's
//! whose `xWrite` is ours, so locking, sharing by name, size limits and fetch all stay memdb's.

use std::ffi::{c_int, c_void, CStr};
use std::ptr;
use std::sync::OnceLock;

use libsqlite3_sys as ffi;

/// The registered name, for the `vfs=` URI parameter.
pub(crate) const NAME: &CStr = c"diesel-sqlite-backup-memdb";

static REGISTERED: OnceLock<bool> = OnceLock::new();

/// memdb's method table as seen on its first file, and our copy of it.
struct Methods {
    memdb: usize,
    memdb_write: WriteFn,
    patched: ffi::sqlite3_io_methods,
}

type WriteFn = unsafe extern "C" fn(*mut ffi::sqlite3_file, *const c_void, c_int, i64) -> c_int;

static METHODS: OnceLock<Methods> = OnceLock::new();

/// Registers the VFS (once) and returns its name, or `None` when memdb is not compiled in.
pub(crate) fn name() -> Option<&'static CStr> {
    REGISTERED.get_or_init(register).then_some(NAME)
}

/// True when `vfs` is this shim.
pub(crate) fn is_ours(vfs: &CStr) -> bool {
    vfs == NAME
}

fn register() -> bool {
    // SAFETY: sqlite3_vfs_find returns NULL or a VFS registered for the life of the process;
    // we only copy its fields.
    let memdb = unsafe { ffi::sqlite3_vfs_find(c"memdb".as_ptr()) };
    if memdb.is_null() {
        return false;
    }
    // SAFETY: `memdb` is valid (above). The copy keeps memdb's pAppData (the VFS memdb's own
    // methods delegate to), so memdb's functions work unchanged when called with our object.
    let mut vfs = unsafe { ptr::read(memdb) };
    vfs.pNext = ptr::null_mut();
    vfs.zName = NAME.as_ptr();
    vfs.xOpen = Some(open);
    super::register_vfs(Box::new(vfs))
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite hands us memdb's szOsFile bytes at `file` (our VFS copies memdb's
    // szOsFile). memdb's xOpen ignores the VFS pointer and fills the object; we then only
    // replace its method table with one whose every entry but xWrite is memdb's own.
    unsafe {
        let memdb = ffi::sqlite3_vfs_find(c"memdb".as_ptr());
        let Some(memdb_open) = memdb.as_ref().and_then(|v| v.xOpen) else {
            return ffi::SQLITE_ERROR;
        };
        let rc = memdb_open(vfs, name, file, flags, out_flags);
        if rc != ffi::SQLITE_OK || (*file).pMethods.is_null() {
            return rc;
        }
        let own = (*file).pMethods;
        let Some(memdb_write) = (*own).xWrite else {
            return rc;
        };
        let methods = METHODS.get_or_init(|| Methods {
            memdb: own as usize,
            memdb_write,
            patched: ffi::sqlite3_io_methods {
                xWrite: Some(write),
                ..ptr::read(own)
            },
        });
        // Only a file with the table we copied may get our copy.
        if own as usize == methods.memdb {
            (*file).pMethods = &methods.patched;
        }
        rc
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite only calls this on files `open` gave our table, which happens after
    // METHODS is set; `data` holds `amount` readable bytes for the duration of the call.
    unsafe {
        let Some(methods) = METHODS.get() else {
            return ffi::SQLITE_ERROR;
        };
        let memdb_write = methods.memdb_write;
        if offset == 0 {
            let page = std::slice::from_raw_parts(data.cast::<u8>(), amount.max(0) as usize);
            if super::memdb::says_wal(page) {
                let mut fixed = page.to_vec();
                super::memdb::mark_rollback(&mut fixed);
                return memdb_write(file, fixed.as_ptr().cast(), amount, offset);
            }
        }
        memdb_write(file, data, amount, offset)
    }
}
