//! Loading bytes: the checks and the copy of `restore_from`, with the bytes borrowed
//! read-only instead of a file.

use std::borrow::Cow;
use std::path::Path;

use diesel::SqliteConnection;
use libsqlite3_sys as ffi;

use crate::copy::checks::{begin_read, check_header, classify, verify_integrity};
use crate::copy::{checks, BackupOptions};
use crate::error::{BackupError, Operation};
use crate::format::header;
use crate::open::load;
use crate::sqlite::memdb::{opens, record_of};
use crate::sqlite::OwnedDb;

const OP: Operation = Operation::Restore;

/// How errors name the bytes being loaded.
const LABEL: &str = "<snapshot bytes>";

pub(crate) fn restore_from_bytes(
    conn: &mut SqliteConnection,
    bytes: &[u8],
    opts: &mut BackupOptions<'_>,
) -> Result<(), BackupError> {
    let span = crate::open::restore_span(Path::new(LABEL));
    span.record("bytes", bytes.len() as u64);
    crate::observe::in_span(span, || restore_bytes(conn, bytes, opts))
}

fn restore_bytes(
    conn: &mut SqliteConnection,
    bytes: &[u8],
    opts: &mut BackupOptions<'_>,
) -> Result<(), BackupError> {
    let budget = opts.budget(OP);
    let dest = crate::sqlite::raw_handle(conn);
    let schema = checks::schema(&dest, &opts.schema, OP)?;
    let dest_path = checks::dest_idle(&dest, &schema, OP)?;
    let label = Path::new(LABEL);
    check_header(bytes, bytes.len() as u64, label)?;
    // memdb cannot open an image whose header says WAL; such an image is read from a copy
    // marked "rollback journal". The caller's bytes are never written.
    let image: Cow<'_, [u8]> = if header::says_wal(bytes) {
        let mut copy = bytes.to_vec();
        header::mark_rollback(&mut copy);
        Cow::Owned(copy)
    } else {
        Cow::Borrowed(bytes)
    };
    let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_URI;
    let source = OwnedDb::open(c":memory:", flags).map_err(|f| classify(label, f))?;
    // SAFETY: `image` is declared before `source`, so it outlives the connection, and it is
    // not changed while the connection lives; READONLY keeps SQLite from writing it.
    unsafe { source.db().borrow_image_readonly(&image) }.map_err(|f| classify(label, f))?;
    let src = source.db();
    // Pages are then served by pointer into the image (memdb's xFetch) instead of copied
    // into the page cache first; only from an 8-byte-aligned start, as an allocation's,
    // which is all SQLite's own buffers ever give it.
    if (image.as_ptr() as usize).is_multiple_of(8) {
        src.exec(&format!("PRAGMA mmap_size={}", image.len()))
            .map_err(|f| classify(label, f))?;
    }
    begin_read(&src, label, &budget).map_err(|f| classify(label, f))?;
    if opts.verify {
        verify_integrity(&src, label)?;
    }
    let opening = opens::begin(record_of(&dest, &schema), &budget, &dest_path)?;
    load(&dest, &schema, &dest_path, &src, label, opts, &budget)?;
    opening.completed();
    Ok(())
}
