//! The batching shim's file methods: gathered writes, read-ahead, and everything else passed
//! to the default VFS's file.

use std::ffi::{c_int, c_void};
use std::ptr;

use libsqlite3_sys as ffi;

use super::{BatchFile, CAPACITY};

/// Version 2: shared memory is passed through (a WAL-mode restore source needs it); memory
/// mapping (version 3) is left out, so every read comes through `read`.
pub(super) static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
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
    // SAFETY: per the contract. The default VFS reads into the buffer's spare capacity (at
    // least CAPACITY bytes, reserved first), and the length is set only when it answered
    // SQLITE_OK, which means all CAPACITY bytes were written. Not zero-filling first saves
    // a memset as large as the file. The buffer is not touched while the read runs.
    unsafe {
        let batch = file.cast::<BatchFile>();
        let ahead = &mut *ptr::addr_of_mut!((*batch).ahead);
        ahead.clear();
        if ahead.try_reserve(CAPACITY).is_err() {
            return;
        }
        let data = ahead.as_mut_ptr().cast::<c_void>();
        let rc = delegate_file!(file, xRead, data, CAPACITY as c_int, offset);
        if rc == ffi::SQLITE_OK {
            let ahead = &mut *ptr::addr_of_mut!((*batch).ahead);
            ahead.set_len(CAPACITY);
            (*batch).ahead_offset = offset;
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
