//! A batching VFS shim for the files a backup streams: the private temporary file of a save
//! and the source file of a restore.
//!
//! SQLite reads and writes a database one page per system call: 51,200 calls for 200 MiB of
//! 4 KiB pages. A backup touches pages in order, so this shim, for main database files only:
//! - gathers consecutive writes into a 64 KiB buffer and hands them to the default VFS in one
//!   call. The buffer is flushed before any read, size query, truncate, sync and close, and on
//!   `SQLITE_FCNTL_SYNC`, which SQLite sends at every commit even with `synchronous=OFF`, so a
//!   failed write still fails the commit;
//! - when reads are sequential, reads 64 KiB ahead and serves the following pages from that
//!   buffer. The buffer is dropped on every write and truncate, and at every transaction
//!   boundary SQLite signals: lock changes on the file, and every shared-memory call. In WAL
//!   mode SQLite keeps its SHARED file lock between read transactions and marks each one only
//!   through the shared memory (`xShmLock` on a read mark), so without the latter a buffer
//!   read in one transaction could serve pages a checkpoint has since rewritten. Within one
//!   read transaction the buffer is safe: a checkpoint only rewrites pages that the reader's
//!   snapshot takes from the WAL, never ones it reads from the file.
//!
//! Journals, WAL files and every other call go straight to the default VFS.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::mem::size_of;
use std::ptr;
use std::sync::OnceLock;

use file::IO_METHODS;

use libsqlite3_sys as ffi;

mod file;

/// The registered name, for `sqlite3_open_v2`'s VFS argument.
pub(crate) const NAME: &CStr = c"diesel-sqlite-backup-batch";

/// Bytes gathered before they are written. The unix VFS writes at most 128 KiB - 1 bytes per
/// call (`seekAndWriteFd` masks the length with 0x1ffff), so 64 KiB is the largest size that
/// is a whole number of pages for every page size.
const CAPACITY: usize = 64 << 10;

/// Our file object: SQLite's header, then our state; the default VFS's file object follows
/// in the same allocation (`szOsFile` covers both).
#[repr(C)]
struct BatchFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    pending: Vec<u8>,
    pending_offset: i64,
    ahead: Vec<u8>,
    ahead_offset: i64,
    /// Where the next read starts if reads are sequential; only then is reading ahead worth it.
    next_read: i64,
}

/// Where the default VFS's file object starts, rounded up for its alignment.
const HEADER: usize = size_of::<BatchFile>().next_multiple_of(16);

static REGISTERED: OnceLock<bool> = OnceLock::new();

/// Registers the shim (once) and returns its name, or `None` when that was not possible, in
/// which case callers use the default VFS.
pub(crate) fn name() -> Option<&'static CStr> {
    REGISTERED.get_or_init(register).then_some(NAME)
}

/// Registers a leaked (so never freed) VFS object wrapping the default VFS.
fn register() -> bool {
    // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS, which stays registered for
    // the life of the process. We only read its fields.
    let real = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
    if real.is_null() {
        return false;
    }
    // SAFETY: `real` is a valid VFS (see above).
    let (real_size, max_path) = unsafe { ((*real).szOsFile, (*real).mxPathname) };
    let vfs = Box::new(ffi::sqlite3_vfs {
        iVersion: 2,
        szOsFile: (HEADER + real_size as usize) as c_int,
        mxPathname: max_path,
        pNext: ptr::null_mut(),
        zName: NAME.as_ptr(),
        pAppData: real.cast(),
        xOpen: Some(open),
        xDelete: Some(delete),
        xAccess: Some(access),
        xFullPathname: Some(full_pathname),
        xDlOpen: Some(dl_open),
        xDlError: Some(dl_error),
        xDlSym: Some(dl_sym),
        xDlClose: Some(dl_close),
        xRandomness: Some(randomness),
        xSleep: Some(sleep),
        xCurrentTime: Some(current_time),
        xGetLastError: Some(last_error),
        xCurrentTimeInt64: Some(current_time_int64),
        xSetSystemCall: None,
        xGetSystemCall: None,
        xNextSystemCall: None,
    });
    super::register_vfs(vfs)
}

/// The default VFS this shim wraps.
///
/// # Safety
/// `vfs` is the shim's VFS object.
unsafe fn real_vfs(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: per the contract, pAppData holds the default VFS pointer set in `register`.
    unsafe { (*vfs).pAppData.cast() }
}

/// Calls the default VFS's method `$m` with its own VFS pointer.
macro_rules! delegate_vfs {
    ($vfs:expr, $m:ident, $($arg:expr),*) => {{
        // SAFETY (for callers): SQLite calls our VFS methods with our VFS object, whose
        // pAppData is the still-registered default VFS; its method receives its own object.
        let real = real_vfs($vfs);
        match (*real).$m {
            Some(f) => f(real, $($arg),*),
            None => ffi::SQLITE_ERROR,
        }
    }};
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite hands us `szOsFile` bytes at `file`, 8-byte aligned, so the BatchFile
    // header and the default VFS's object at HEADER both fit, and so does the default VFS's
    // object alone at offset 0. Fields are initialised with ptr::write before pMethods is
    // set, and pMethods stays NULL on failure so that SQLite never calls xClose on a
    // half-built object.
    unsafe {
        if flags & ffi::SQLITE_OPEN_MAIN_DB == 0 {
            // Not a database file: the default VFS's object takes the whole slot and SQLite
            // talks to it directly.
            return delegate_vfs!(vfs, xOpen, name, file, flags, out_flags);
        }
        let batch = file.cast::<BatchFile>();
        let real = file.cast::<u8>().add(HEADER).cast::<ffi::sqlite3_file>();
        ptr::addr_of_mut!((*batch).base.pMethods).write(ptr::null());
        let rc = delegate_vfs!(vfs, xOpen, name, real, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            if let Some(close) = (*real).pMethods.as_ref().and_then(|m| m.xClose) {
                close(real);
            }
            return rc;
        }
        ptr::addr_of_mut!((*batch).real).write(real);
        ptr::addr_of_mut!((*batch).pending).write(Vec::new());
        ptr::addr_of_mut!((*batch).pending_offset).write(0);
        ptr::addr_of_mut!((*batch).ahead).write(Vec::new());
        ptr::addr_of_mut!((*batch).ahead_offset).write(0);
        ptr::addr_of_mut!((*batch).next_read).write(0);
        ptr::addr_of_mut!((*batch).base.pMethods).write(&IO_METHODS);
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn delete(vfs: *mut ffi::sqlite3_vfs, name: *const c_char, sync: c_int) -> c_int {
    // SAFETY: see `delegate_vfs`.
    unsafe { delegate_vfs!(vfs, xDelete, name, sync) }
}

unsafe extern "C" fn access(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    // SAFETY: see `delegate_vfs`.
    unsafe { delegate_vfs!(vfs, xAccess, name, flags, out) }
}

unsafe extern "C" fn full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: see `delegate_vfs`.
    unsafe { delegate_vfs!(vfs, xFullPathname, name, n, out) }
}

unsafe extern "C" fn randomness(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    // SAFETY: see `delegate_vfs`.
    unsafe { delegate_vfs!(vfs, xRandomness, n, out) }
}

unsafe extern "C" fn sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    // SAFETY: see `delegate_vfs`.
    unsafe { delegate_vfs!(vfs, xSleep, micros) }
}

unsafe extern "C" fn current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    // SAFETY: see `delegate_vfs`.
    unsafe { delegate_vfs!(vfs, xCurrentTime, out) }
}

unsafe extern "C" fn last_error(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    // SAFETY: see `delegate_vfs`.
    unsafe { delegate_vfs!(vfs, xGetLastError, n, out) }
}

unsafe extern "C" fn dl_open(vfs: *mut ffi::sqlite3_vfs, name: *const c_char) -> *mut c_void {
    // SAFETY: see `delegate_vfs`; a missing method means no extension loading.
    unsafe {
        let real = real_vfs(vfs);
        (*real).xDlOpen.map_or(ptr::null_mut(), |f| f(real, name))
    }
}

unsafe extern "C" fn dl_error(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) {
    // SAFETY: see `delegate_vfs`.
    unsafe {
        let real = real_vfs(vfs);
        if let Some(f) = (*real).xDlError {
            f(real, n, out);
        }
    }
}

type DlSymbol = Option<unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char)>;

unsafe extern "C" fn dl_sym(
    vfs: *mut ffi::sqlite3_vfs,
    handle: *mut c_void,
    symbol: *const c_char,
) -> DlSymbol {
    // SAFETY: see `delegate_vfs`.
    unsafe {
        let real = real_vfs(vfs);
        (*real).xDlSym.and_then(|f| f(real, handle, symbol))
    }
}

unsafe extern "C" fn dl_close(vfs: *mut ffi::sqlite3_vfs, handle: *mut c_void) {
    // SAFETY: see `delegate_vfs`.
    unsafe {
        let real = real_vfs(vfs);
        if let Some(f) = (*real).xDlClose {
            f(real, handle);
        }
    }
}

unsafe extern "C" fn current_time_int64(vfs: *mut ffi::sqlite3_vfs, out: *mut i64) -> c_int {
    // SAFETY: see `delegate_vfs`.
    unsafe { delegate_vfs!(vfs, xCurrentTimeInt64, out) }
}

#[cfg(test)]
mod tests;
