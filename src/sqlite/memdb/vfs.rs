//! `memdb`, with one change: page 1 is never written with the WAL version numbers, nor with
//! a text-encoding field SQLite never writes.
//!
//! A database file in WAL mode carries 2 in header bytes 18 and 19. SQLite's backup API copies
//! page 1 verbatim, so copying a WAL-mode source into a memdb database writes those bytes, and
//! from then on every connection to it tries to open a WAL, which memdb cannot do ("unable to
//! open database file"): the database is lost. memdb never runs in WAL mode, so in a memdb
//! database those bytes can only mean "rollback journal" (1). This VFS is memdb itself, under
//! another name; only `xWrite` differs, rewriting a 2 in bytes 18 or 19 of page 1 to 1. That is
//! the same change `PRAGMA journal_mode=DELETE` makes to a WAL file's header.
//!
//! Likewise the encoding field (bytes 56..60): a file whose field says 4 opens as UTF-8
//! everywhere, but a pool's connections have fixed their encoding and compare the field's low
//! bits with it, so every statement would fail. The field is written as the value SQLite reads
//! from it (`memdb::encoding_as_read`), which a copy only brings in when the source
//! connection read the file in the pool's encoding (the copy converts any other).
//!
//! Files are memdb's own objects: the shim only swaps their method table for a copy of memdb's
//! whose `xWrite`, `xTruncate` and `xClose` are ours, so locking, sharing by name, size limits
//! and fetch all stay memdb's.
//!
//! The shim also records which pages every write touches, for incremental saves
//! (`crate::incremental`). Each file object is allocated `szOsFile` bytes: memdb's own object,
//! then, at an aligned offset past it, a [`Region`] of ours holding the database's tracker.
//! memdb never looks past its own object, and we never look inside it.

use std::ffi::{c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use libsqlite3_sys as ffi;

use super::record::{self, Tracker};
use crate::format::header;

/// The registered name, for the `vfs=` URI parameter.
pub(crate) const NAME: &CStr = c"diesel-sqlite-backup-memdb";

static REGISTERED: OnceLock<bool> = OnceLock::new();

/// memdb's method table as seen on its first file, and our copy of it.
struct Methods {
    memdb: usize,
    memdb_write: WriteFn,
    memdb_truncate: TruncateFn,
    memdb_close: CloseFn,
    memdb_size: SizeFn,
    patched: ffi::sqlite3_io_methods,
    /// Where our [`Region`] starts inside each file object.
    region_offset: usize,
}

type WriteFn = unsafe extern "C" fn(*mut ffi::sqlite3_file, *const c_void, c_int, i64) -> c_int;
type TruncateFn = unsafe extern "C" fn(*mut ffi::sqlite3_file, i64) -> c_int;
type CloseFn = unsafe extern "C" fn(*mut ffi::sqlite3_file) -> c_int;
type SizeFn = unsafe extern "C" fn(*mut ffi::sqlite3_file, *mut i64) -> c_int;

/// Our part of a file object, after memdb's.
pub(crate) struct Region {
    /// The database's write record; `None` for a file that is not a main database.
    tracker: Option<Arc<Tracker>>,
    /// Set while a restore loads a file through this connection: its writes make the database
    /// equal to that file, so they are not changes since the baseline.
    untracked: AtomicBool,
}

/// memdb's object size rounded up so that a [`Region`] after it is aligned.
fn region_offset(memdb_size: c_int) -> usize {
    let align = std::mem::align_of::<Region>();
    (memdb_size.max(0) as usize).div_ceil(align) * align
}

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
    let total = region_offset(vfs.szOsFile) + std::mem::size_of::<Region>();
    let Ok(total) = c_int::try_from(total) else {
        return false;
    };
    vfs.szOsFile = total;
    vfs.pNext = ptr::null_mut();
    vfs.zName = NAME.as_ptr();
    vfs.xOpen = Some(open);
    crate::sqlite::register_vfs(Box::new(vfs))
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite hands us szOsFile bytes at `file` (our VFS's size: memdb's object plus
    // our region). memdb's xOpen ignores the VFS pointer and fills its own object; we then
    // replace its method table with one whose entries are memdb's own but for xWrite,
    // xTruncate and xClose, which call memdb's, and initialise our region, which lies past
    // memdb's object at an offset aligned for `Region`. SQLite calls xClose exactly once for
    // a file whose open succeeded, and only then is the region read back and dropped.
    unsafe {
        let memdb = ffi::sqlite3_vfs_find(c"memdb".as_ptr());
        let Some(memdb_vfs) = memdb.as_ref() else {
            return ffi::SQLITE_ERROR;
        };
        let Some(memdb_open) = memdb_vfs.xOpen else {
            return ffi::SQLITE_ERROR;
        };
        let rc = memdb_open(vfs, name, file, flags, out_flags);
        if rc != ffi::SQLITE_OK || (*file).pMethods.is_null() {
            return rc;
        }
        let own = (*file).pMethods;
        let (Some(memdb_write), Some(memdb_truncate), Some(memdb_close), Some(memdb_size)) = (
            (*own).xWrite,
            (*own).xTruncate,
            (*own).xClose,
            (*own).xFileSize,
        ) else {
            return rc;
        };
        let methods = METHODS.get_or_init(|| Methods {
            memdb: own as usize,
            memdb_write,
            memdb_truncate,
            memdb_close,
            memdb_size,
            patched: ffi::sqlite3_io_methods {
                xWrite: Some(write),
                xTruncate: Some(truncate),
                xClose: Some(close),
                ..ptr::read(own)
            },
            region_offset: region_offset(memdb_vfs.szOsFile),
        });
        // Only a file with the table we copied may get our copy.
        if own as usize == methods.memdb {
            let main = flags & ffi::SQLITE_OPEN_MAIN_DB != 0 && !name.is_null();
            let tracker = main.then(|| record::for_name(CStr::from_ptr(name)));
            let region = file
                .cast::<u8>()
                .add(methods.region_offset)
                .cast::<Region>();
            region.write(Region {
                tracker,
                untracked: AtomicBool::new(false),
            });
            (*file).pMethods = &methods.patched;
        }
        rc
    }
}

/// Our region of a file object that carries our method table.
///
/// # Safety
/// `file` is a file object whose `pMethods` is our patched table (so `open` initialised its
/// region) and that has not been closed; the reference lives no longer than the file.
unsafe fn region<'f>(file: *mut ffi::sqlite3_file) -> Option<&'f Region> {
    let methods = METHODS.get()?;
    // SAFETY: per the contract, the region was written by `open` and is still live.
    unsafe {
        file.cast::<u8>()
            .add(methods.region_offset)
            .cast::<Region>()
            .as_ref()
    }
}

/// The tracker of an open file object, if the object is one of ours and a main database.
///
/// # Safety
/// `file` is an open file object (any VFS); the result lives no longer than the file.
pub(crate) unsafe fn tracker_of<'f>(file: *mut ffi::sqlite3_file) -> Option<&'f Arc<Tracker>> {
    let methods = METHODS.get()?;
    // SAFETY: reading the method table pointer of an open file object; only a file with our
    // table has a region, so only then is it read.
    unsafe {
        if !ptr::eq((*file).pMethods, &methods.patched) {
            return None;
        }
        region(file)?.tracker.as_ref()
    }
}

/// Makes the writes through `file` count as changes (false) or not (true).
///
/// # Safety
/// As [`tracker_of`].
pub(crate) unsafe fn set_untracked(file: *mut ffi::sqlite3_file, untracked: bool) {
    // SAFETY: as tracker_of: only a file carrying our table has a region.
    unsafe {
        let Some(methods) = METHODS.get() else { return };
        if ptr::eq((*file).pMethods, &methods.patched) {
            if let Some(r) = region(file) {
                r.untracked.store(untracked, Ordering::SeqCst);
            }
        }
    }
}

/// True when the writes through `file` are untracked (false for a file without our table).
///
/// # Safety
/// As [`tracker_of`].
pub(crate) unsafe fn is_untracked(file: *mut ffi::sqlite3_file) -> bool {
    // SAFETY: as tracker_of: only a file carrying our table has a region.
    unsafe {
        let Some(methods) = METHODS.get() else {
            return false;
        };
        ptr::eq((*file).pMethods, &methods.patched)
            && region(file).is_some_and(|r| r.untracked.load(Ordering::SeqCst))
    }
}

/// The tracker of a file carrying our table, and whether its writes are untracked.
///
/// # Safety
/// `file` carries our table and is open.
unsafe fn tracking<'f>(file: *mut ffi::sqlite3_file) -> Option<(&'f Tracker, bool)> {
    // SAFETY: per the contract.
    let r = unsafe { region(file)? };
    Some((r.tracker.as_deref()?, r.untracked.load(Ordering::SeqCst)))
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls xClose once per file `open` gave our table, so the region is live
    // and read out (and dropped) exactly once, before memdb frees its own object's state.
    unsafe {
        let Some(methods) = METHODS.get() else {
            return ffi::SQLITE_ERROR;
        };
        let region = file
            .cast::<u8>()
            .add(methods.region_offset)
            .cast::<Region>();
        drop(region.read());
        (methods.memdb_close)(file)
    }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: called by SQLite on an open file carrying our table.
    unsafe {
        let Some(methods) = METHODS.get() else {
            return ffi::SQLITE_ERROR;
        };
        match tracking(file) {
            Some((t, untracked)) => {
                t.track_truncate(size, untracked, || (methods.memdb_truncate)(file, size))
            }
            None => (methods.memdb_truncate)(file, size),
        }
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite only calls this on files `open` gave our table, which happens after
    // METHODS is set, so the region is live; `data` holds `amount` readable bytes for the
    // duration of the call (the counter is read from within those bytes);
    // memdb's own xRead, called on this same open object, writes 4 bytes into a live local
    // (it takes the store's mutex itself, which nothing of ours holds here).
    unsafe {
        let Some(methods) = METHODS.get() else {
            return ffi::SQLITE_ERROR;
        };
        let memdb_write = methods.memdb_write;
        let mut fixed = Vec::new();
        let mut data = data;
        if offset == 0 {
            let page = std::slice::from_raw_parts(data.cast::<u8>(), amount.max(0) as usize);
            if header::page1_needs_rewrite(page) {
                fixed = page.to_vec();
                header::rewrite_page1(&mut fixed);
                data = fixed.as_ptr().cast();
            }
        }
        // The change counter, when this write covers it (page 1).
        let counter = (offset == 0)
            .then(|| std::slice::from_raw_parts(data.cast::<u8>(), amount.max(0) as usize))
            .and_then(|page| header::field(page, header::CHANGE_COUNTER));
        let write = || memdb_write(file, data, amount, offset);
        let rc = match tracking(file) {
            Some((t, untracked)) => {
                let file_size = || {
                    let mut size = 0i64;
                    ((methods.memdb_size)(file, &mut size) == ffi::SQLITE_OK).then_some(size)
                };
                // What page 1 holds before this write: memdb's own read, under the lock
                // the writing connection holds.
                let stored_counter = || {
                    let read = methods.patched.xRead?;
                    let mut bytes = [0u8; 4];
                    let at = header::CHANGE_COUNTER as i64;
                    let rc = read(file, bytes.as_mut_ptr().cast(), 4, at);
                    (rc == ffi::SQLITE_OK).then(|| u32::from_be_bytes(bytes))
                };
                t.track_write(
                    offset,
                    amount,
                    untracked,
                    counter,
                    stored_counter,
                    file_size,
                    write,
                )
            }
            None => write(),
        };
        drop(fixed);
        rc
    }
}
