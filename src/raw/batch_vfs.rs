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

/// Version 2: shared memory is passed through (a WAL-mode restore source needs it); memory
/// mapping (version 3) is left out, so every read comes through `read`.
static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 2,
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
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
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
        let batch = file.cast::<BatchFile>();
        ptr::drop_in_place(ptr::addr_of_mut!((*batch).pending));
        ptr::drop_in_place(ptr::addr_of_mut!((*batch).ahead));
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
        (*batch).ahead.clear();
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
            if (*batch).pending.try_reserve(CAPACITY).is_err() {
                return ffi::SQLITE_IOERR_NOMEM;
            }
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
    // SAFETY: `file` is ours; SQLite passes `amount` writable bytes at `out`. Reads see every
    // earlier write because we flush first. No reference into the BatchFile is held across
    // calls into the default VFS.
    unsafe {
        let rc = flush(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        let batch = file.cast::<BatchFile>();
        let wanted = amount as usize;
        let sequential = offset == (*batch).next_read;
        (*batch).next_read = offset + i64::from(amount);
        if sequential && wanted < CAPACITY && !in_read_ahead(batch, offset, wanted) {
            fill_read_ahead(file, offset);
        }
        if in_read_ahead(batch, offset, wanted) {
            let from = (offset - (*batch).ahead_offset) as usize;
            ptr::copy_nonoverlapping((*batch).ahead.as_ptr().add(from), out.cast::<u8>(), wanted);
            return ffi::SQLITE_OK;
        }
        delegate_file!(file, xRead, out, amount, offset)
    }
}

/// True when the read-ahead buffer holds all of `[offset, offset + len)`.
///
/// # Safety
/// `batch` is a BatchFile opened by `open`.
unsafe fn in_read_ahead(batch: *mut BatchFile, offset: i64, len: usize) -> bool {
    // SAFETY: per the contract; plain field reads.
    unsafe {
        let (start, held) = ((*batch).ahead_offset, (*batch).ahead.len() as i64);
        offset >= start && offset + len as i64 <= start + held
    }
}

/// Reads CAPACITY bytes at `offset` into the read-ahead buffer. A short read (the end of the
/// file) leaves the buffer empty, so that the caller reads through and gets SQLite's own
/// short-read answer.
///
/// # Safety
/// `file` is a BatchFile opened by `open`.
unsafe fn fill_read_ahead(file: *mut ffi::sqlite3_file, offset: i64) {
    // SAFETY: per the contract. The buffer is resized before its pointer is taken and is not
    // touched again until the default VFS's read returns.
    unsafe {
        let batch = file.cast::<BatchFile>();
        let ahead = &mut *ptr::addr_of_mut!((*batch).ahead);
        ahead.clear();
        if ahead.try_reserve(CAPACITY).is_err() {
            return;
        }
        ahead.resize(CAPACITY, 0);
        let data = ahead.as_mut_ptr().cast::<c_void>();
        let rc = delegate_file!(file, xRead, data, CAPACITY as c_int, offset);
        if rc == ffi::SQLITE_OK {
            (*batch).ahead_offset = offset;
        } else {
            (*batch).ahead.clear();
        }
    }
}

/// Drops what was read ahead: the transaction that read it may be over.
///
/// # Safety
/// `file` is a BatchFile opened by `open`.
unsafe fn forget_read_ahead(file: *mut ffi::sqlite3_file) {
    // SAFETY: per the contract; SQLite serialises calls on one file.
    unsafe { (*file.cast::<BatchFile>()).ahead.clear() }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: `file` is ours; flushing first keeps write and truncate in order.
    unsafe {
        forget_read_ahead(file);
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
    // SAFETY: `file` is ours. Another process may have written the file since our last
    // lock, so what was read ahead is dropped.
    unsafe {
        forget_read_ahead(file);
        delegate_file!(file, xLock, level)
    }
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: `file` is ours; see `lock`.
    unsafe {
        forget_read_ahead(file);
        delegate_file!(file, xUnlock, level)
    }
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

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: `file` is ours; shared memory belongs to the wrapped file.
    unsafe {
        forget_read_ahead(file);
        delegate_file!(file, xShmMap, region, size, extend, out)
    }
}

unsafe extern "C" fn shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: `file` is ours. A read or write transaction in WAL mode begins and ends here.
    unsafe {
        forget_read_ahead(file);
        delegate_file!(file, xShmLock, offset, n, flags)
    }
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: `file` is ours; the wrapped file's methods are version 2 or later whenever
    // SQLite uses shared memory, which it only does after xShmMap succeeded.
    unsafe {
        forget_read_ahead(file);
        let real = (*file.cast::<BatchFile>()).real;
        if let Some(f) = (*(*real).pMethods).xShmBarrier {
            f(real);
        }
    }
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    // SAFETY: `file` is ours.
    unsafe {
        forget_read_ahead(file);
        delegate_file!(file, xShmUnmap, delete)
    }
}
