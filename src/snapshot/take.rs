//! Taking a snapshot.
//!
//! - A memdb database (a pool's, a deserialized one) is read in one piece through its own
//!   file handle while the connection holds a read transaction: memdb's store then holds
//!   exactly the committed state, because a writer can only put pages there once it holds
//!   EXCLUSIVE, which the read lock keeps it from taking. That is one memcpy.
//! - Anything else (files, WAL included, and `:memory:`) goes through the engine's stepped
//!   backup into a private memdb database that writes its pages into the buffer the
//!   snapshot then owns, so read errors are errors, never pages silently left out.

use std::path::Path;

use diesel::SqliteConnection;
use libsqlite3_sys as ffi;

use super::Snapshot;
use crate::copy::{checks, convert, engine, BackupOptions};
use crate::error::BusyReason;
use crate::error::{BackupError, Operation};
use crate::sqlite::budget::{Budget, BudgetedBusyHandler};
use crate::sqlite::{DbRef, OwnedDb, Storage};

const OP: Operation = Operation::Snapshot;

/// Tries with a larger buffer when the database grew past the first one while it was copied.
const MAX_TRIES: usize = 4;

pub(crate) fn snapshot(
    conn: &mut SqliteConnection,
    opts: &mut BackupOptions<'_>,
) -> Result<Snapshot, BackupError> {
    use tracing::field::Empty;
    let span = tracing::info_span!(
        "snapshot",
        route = Empty,
        bytes = Empty,
        pages = Empty,
        elapsed_ms = Empty,
        error = Empty
    );
    crate::observe::in_span(span, || {
        let taken = take(conn, opts)?;
        crate::observe::record("bytes", taken.len() as u64);
        Ok(taken)
    })
}

fn take(
    conn: &mut SqliteConnection,
    opts: &mut BackupOptions<'_>,
) -> Result<Snapshot, BackupError> {
    let budget = opts.budget(OP);
    let src = crate::sqlite::raw_handle(conn);
    let schema = checks::schema(&src, &opts.schema, OP)?;
    checks::source_not_writing(&src, &schema, OP)?;
    let path = src.display_path(&schema);
    let _waits = BudgetedBusyHandler::install(&src, &budget, &path);
    let quoted = convert::quote(&schema);
    let query = |sql: &str| {
        src.query_i64(sql)
            .map(|n| n.max(0) as usize)
            .map_err(|failure| budget.failed(&path, failure))
    };
    if matches!(src.storage(&schema), Storage::Memdb | Storage::PatchedMemdb) {
        if let Some(bytes) = read_store(&src, &schema, opts, &budget, &path)? {
            crate::observe::record("route", "read_store");
            return Ok(Snapshot::from_vec(bytes));
        }
    }
    crate::observe::record("route", "backup");
    let mut pages = query(&format!("PRAGMA {quoted}.page_count"))?;
    for _ in 0..MAX_TRIES {
        let page_size = query(&format!("PRAGMA {quoted}.page_size"))?;
        // Room for the commits that may land between this count and the copy, and for the
        // one page an empty database gets.
        let capacity = (pages + pages / 16 + 16) * page_size;
        match copy_into_buffer(&src, &schema, capacity, opts, &budget, &path) {
            Err(BackupError::Sqlite { failure, .. }) if failure.code == ffi::SQLITE_FULL => {
                tracing::debug!(
                    capacity,
                    "the database outgrew the snapshot's buffer: again"
                );
                pages = pages.max(capacity / page_size) * 2;
            }
            result => return result.map(Snapshot::from_vec),
        }
    }
    Err(budget.gave_up_because(&path, BusyReason::SourceKeptChanging))
}

/// A memdb database's pages in one read, under a read transaction (this connection's own, if
/// it has one open). `None` for a database with no pages yet, which the backup route gives
/// its first page, as SQLite does for any database it writes.
fn read_store(
    src: &DbRef<'_>,
    schema: &std::ffi::CStr,
    opts: &mut BackupOptions<'_>,
    budget: &Budget,
    path: &Path,
) -> Result<Option<Vec<u8>>, BackupError> {
    if budget.is_cancelled() {
        return Err(budget.cancelled(path));
    }
    let ours = src.autocommit();
    if ours {
        src.exec("BEGIN").map_err(|f| budget.failed(path, f))?;
    }
    let mut read = || -> Result<Option<Vec<u8>>, BackupError> {
        let quoted = convert::quote(schema);
        // The first read of the transaction takes the read lock, waiting within the budget.
        let query = |sql: &str| {
            src.query_i64(sql)
                .map(|n| n.max(0) as usize)
                .map_err(|failure| budget.failed(path, failure))
        };
        let pages = query(&format!("PRAGMA {quoted}.page_count"))?;
        let page_size = query(&format!("PRAGMA {quoted}.page_size"))?;
        if pages == 0 {
            return Ok(None);
        }
        let bytes = src
            .read_file_to_vec(schema, pages * page_size)
            .map_err(|failure| budget.failed(path, failure))?;
        crate::observe::record("pages", pages as u64);
        opts.report(crate::copy::Progress {
            remaining: 0,
            page_count: pages as u32,
        });
        Ok(Some(bytes))
    };
    let result = read();
    if ours {
        // Ends a read-only transaction: nothing to fail.
        let _ = src.exec("COMMIT");
    }
    result
}

/// One attempt: a buffer of `capacity` bytes holding the copy, cut to the copy's length.
fn copy_into_buffer(
    src: &DbRef<'_>,
    schema: &std::ffi::CStr,
    capacity: usize,
    opts: &mut BackupOptions<'_>,
    budget: &Budget,
    path: &Path,
) -> Result<Vec<u8>, BackupError> {
    let sqlite = BackupError::sqlite_at(OP, path);
    // Zeroed pages come from the kernel on first touch: only what is copied becomes memory.
    let mut buffer = vec![0u8; capacity];
    let len = {
        let copy = OwnedDb::open(c":memory:", ffi::SQLITE_OPEN_READWRITE).map_err(sqlite)?;
        let dst = copy.db();
        // SAFETY: `buffer` outlives `copy`, which is closed at the end of this block, and
        // nothing else touches it meanwhile.
        unsafe { dst.write_main_into(&mut buffer) }.map_err(sqlite)?;
        let (to, from) = ((&dst, c"main"), (src, schema));
        engine::copy_pages(to, from, opts, budget, path, sqlite, || {})?;
        // The length memdb wrote, read through the file (page 1 of a WAL source's image says
        // "WAL", which this connection could no longer parse).
        let (_, len) = dst.file_header(c"main").map_err(sqlite)?;
        copy.close().map_err(sqlite)?;
        len as usize
    };
    buffer.truncate(len);
    buffer.shrink_to_fit();
    Ok(buffer)
}
