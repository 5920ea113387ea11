//! A write-batching VFS shim for the private temporary file of a save.
//!
//! SQLite writes a database one page per `pwrite`: 51,200 system calls for 200 MiB of 4 KiB
//! pages. The pager writes dirty pages in page order, so this shim gathers consecutive writes
//! into a 64 KiB buffer and hands them to the default VFS in one call. The buffer is flushed
//! before any read, size query, truncate, sync and close, and on `SQLITE_FCNTL_SYNC`, which
//! SQLite sends at every commit even with `synchronous=OFF`, so a failed write still fails
//! the commit. Every other call goes straight to the default VFS.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::mem::size_of;
use std::ptr;
use std::sync::OnceLock;

use libsqlite3_sys as ffi;

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
        xDlOpen: None,
        xDlError: None,
        xDlSym: None,
        xDlClose: None,
        xRandomness: Some(randomness),
        xSleep: Some(sleep),
        xCurrentTime: Some(current_time),
        xGetLastError: Some(last_error),
        xCurrentTimeInt64: Some(current_time_int64),
        xSetSystemCall: None,
        xGetSystemCall: None,
        xNextSystemCall: None,
    });
    let vfs = Box::into_raw(vfs);
    // SAFETY: `vfs` is a complete, leaked (so 'static) VFS; not made the default.
    let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
    if rc != ffi::SQLITE_OK {
        // SAFETY: registration failed, so SQLite holds no pointer to it; we free our box.
        drop(unsafe { Box::from_raw(vfs) });
    }
    rc == ffi::SQLITE_OK
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
    // header and the default VFS's object at HEADER both fit. Fields are initialised with
    // ptr::write before pMethods is set, and pMethods stays NULL on failure so that SQLite
    // never calls xClose on a half-built object.
    unsafe {
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

unsafe extern "C" fn current_time_int64(vfs: *mut ffi::sqlite3_vfs, out: *mut i64) -> c_int {
    // SAFETY: see `delegate_vfs`.
    unsafe { delegate_vfs!(vfs, xCurrentTimeInt64, out) }
}

/// Version 1: no shared memory and no memory mapping, which the temporary file never uses
/// (it is opened with `journal_mode=OFF` and `locking_mode=EXCLUSIVE`).
static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

/// Calls the default VFS's file method `$m` on the wrapped file.
macro_rules! delegate_file {
    ($file:expr, $m:ident $(, $arg:expr)*) => {{
        // SAFETY (for callers): `$file` is a BatchFile opened by `open` (SQLite only calls
        // these methods on files whose pMethods is IO_METHODS), so `real` is the default
        // VFS's open file object.
        let real = (*$file.cast::<BatchFile>()).real;
        match (*(*real).pMethods).$m {
            Some(f) => f(real $(, $arg)*),
            None => ffi::SQLITE_ERROR,
        }
    }};
}

/// Writes out the gathered bytes.
///
/// # Safety
/// `file` is a BatchFile opened by `open`.
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: per the contract. SQLite serialises calls on one file, so nothing else touches
    // `pending` meanwhile; the borrow covers that field only, not the `real` we read.
    unsafe {
        let batch = file.cast::<BatchFile>();
        let pending = &mut *ptr::addr_of_mut!((*batch).pending);
        if pending.is_empty() {
            return ffi::SQLITE_OK;
        }
        let offset = (*batch).pending_offset;
        let (data, len) = (pending.as_ptr().cast::<c_void>(), pending.len() as c_int);
        let rc = delegate_file!(file, xWrite, data, len, offset);
        pending.clear();
        rc
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes each open file exactly once; we flush, close the wrapped file,
    // then drop the Vec we wrote in `open`.
    unsafe {
        let flushed = flush(file);
        let closed = delegate_file!(file, xClose);
        ptr::drop_in_place(ptr::addr_of_mut!((*file.cast::<BatchFile>()).pending));
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: `file` is ours (see `delegate_file`); SQLite passes `amount` readable bytes.
    // No reference into the BatchFile is held across the calls to `flush` or the default VFS.
    unsafe {
        let batch = file.cast::<BatchFile>();
        let amount_usize = amount as usize;
        let (len, start) = ((*batch).pending.len(), (*batch).pending_offset);
        let appends = offset == start + len as i64 && len + amount_usize <= CAPACITY;
        if !appends {
            let rc = flush(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            if amount_usize >= CAPACITY {
                return delegate_file!(file, xWrite, data, amount, offset);
            }
            (*batch).pending.reserve(CAPACITY);
            (*batch).pending_offset = offset;
        }
        let bytes = std::slice::from_raw_parts(data.cast::<u8>(), amount_usize);
        (*batch).pending.extend_from_slice(bytes);
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    out: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: `file` is ours; reads see every earlier write because we flush first.
    unsafe {
        let rc = flush(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        delegate_file!(file, xRead, out, amount, offset)
    }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: `file` is ours; flushing first keeps write and truncate in order.
    unsafe {
        let rc = flush(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        delegate_file!(file, xTruncate, size)
    }
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: `file` is ours.
    unsafe {
        let rc = flush(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        delegate_file!(file, xSync, flags)
    }
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, out: *mut i64) -> c_int {
    // SAFETY: `file` is ours; the size must include gathered bytes, so flush first.
    unsafe {
        let rc = flush(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        delegate_file!(file, xFileSize, out)
    }
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: `file` is ours.
    unsafe { delegate_file!(file, xLock, level) }
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: `file` is ours.
    unsafe { delegate_file!(file, xUnlock, level) }
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: `file` is ours.
    unsafe { delegate_file!(file, xCheckReservedLock, out) }
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: `file` is ours. SQLITE_FCNTL_SYNC arrives at every commit, with or without
    // xSync; flushing there makes a failed write fail the commit.
    unsafe {
        if op == ffi::SQLITE_FCNTL_SYNC {
            let rc = flush(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        delegate_file!(file, xFileControl, op, arg)
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: `file` is ours.
    unsafe { delegate_file!(file, xSectorSize) }
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: `file` is ours.
    unsafe { delegate_file!(file, xDeviceCharacteristics) }
}
