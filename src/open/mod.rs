//! Open: load a database file into a connection's database without ever losing the data
//! already there when the file is missing, unusable, or locked.
//!
//! The file is opened by SQLite alone (never through `std::fs`, whose close would drop this
//! process's POSIX locks on it) and read under one read transaction: what is checked is what
//! is copied, into one destination write transaction, so a failure part-way rolls back.

mod fresh_load;

use std::ffi::CStr;
use std::fs;
use std::path::Path;

use diesel::SqliteConnection;
use libsqlite3_sys as ffi;

use crate::copy::checks::{self, begin_read, check_header, classify, verify_integrity};
use crate::copy::{convert, BackupOptions};

use crate::error::{BackupError, Operation, SqliteFailure};
use crate::format::header::{self, Header};
use crate::fs::{same_file, FileId};
use crate::sqlite::memdb::record::{rebase, Baseline};
use crate::sqlite::memdb::{self, Untracked};
use crate::sqlite::{batch_vfs, path_cstring, readonly_uri, DbRef, OwnedDb};
use crate::sqlite::{is_busy, Budget, BudgetedBusyHandler};

const OP: Operation = Operation::Restore;

pub(crate) fn restore_from(
    conn: &mut SqliteConnection,
    path: &Path,
    opts: &mut BackupOptions<'_>,
) -> Result<(), BackupError> {
    let span = restore_span(path);
    if !span.is_disabled() {
        span.record("bytes", fs::metadata(path).map_or(0, |m| m.len()));
    }
    crate::observe::in_span(span, || restore_file(conn, path, opts))
}

/// The span of an Open: `route` and `plan` are recorded by [`load`].
pub(crate) fn restore_span(path: &Path) -> tracing::Span {
    use tracing::field::Empty;
    tracing::info_span!("restore", path = %path.display(), bytes = Empty, route = Empty,
        plan = Empty, pages = Empty, elapsed_ms = Empty, error = Empty)
}

fn restore_file(
    conn: &mut SqliteConnection,
    path: &Path,
    opts: &mut BackupOptions<'_>,
) -> Result<(), BackupError> {
    let budget = opts.budget(OP);
    let dest = crate::sqlite::raw_handle(conn);
    let schema = checks::schema(&dest, &opts.schema, OP)?;
    let dest_path = checks::dest_idle(&dest, &schema, OP)?;
    checks::regular_file(path, OP)?;
    // Reading the file while this very connection is to write it would wait for itself.
    if let Some(own) = dest.filename(&schema).filter(|f| !f.is_empty()) {
        if dest.storage(&schema) == crate::sqlite::Storage::File && same_file(Path::new(&own), path)
        {
            return Err(BackupError::SameFile {
                op: OP,
                path: path.to_path_buf(),
            });
        }
    }
    let tracker = memdb::record_of(&dest, &schema);
    // Before the file is read: an autosave saving meanwhile may be writing this very file.
    let opening = memdb::opens::begin(tracker.clone(), &budget, &dest_path)?;
    let before = FileId::of(path);
    let source = open_source(path, &budget)?;
    let src = source.db();
    check_file(&src, path)?;
    if opts.verify {
        verify_integrity(&src, path)?;
    }
    let Some(tracker) = tracker.as_deref() else {
        return load(&dest, &schema, &dest_path, &src, path, opts, &budget).map(drop);
    };
    // Loading makes the database equal to this file: a baseline for incremental saves, if
    // the copy is page for page and the file provably stayed the one read.
    rebase(Some(tracker), || {
        let base = file_baseline(&src, path, before);
        let plan = {
            let _untracked = Untracked::new(&dest, &schema);
            load(&dest, &schema, &dest_path, &src, path, opts, &budget)
        };
        let base = base.filter(|_| matches!(plan, Ok(convert::Plan::Direct)));
        (plan, base)
    })?;
    opening.completed();
    Ok(())
}

/// The baseline a load of `path` leaves, from SQLite's view under the source's read lock: a
/// rollback-mode file whose length is exactly its pages, that `stat` shows unchanged from
/// before it was opened until now.
fn file_baseline(src: &DbRef<'_>, path: &Path, before: Option<FileId>) -> Option<Baseline> {
    let (header, len) = src.file_header(c"main").ok()?;
    let parsed = Header::parse(&header, len).ok()?;
    let after = FileId::of(path)?;
    let exact = parsed
        .valid_pages
        .map(|p| u64::from(p) * u64::from(parsed.page_size))
        == Some(len);
    // Page 1 then differs from the file's (see `sqlite::memdb::vfs`).
    let rewritten = header::page1_needs_rewrite(&header);
    if before != Some(after) || !exact || rewritten {
        return None;
    }
    Baseline::of(path, after, &header, len)
}

/// The copy every Open shares, from files and from snapshots alike. `src` holds a read
/// transaction over a source already checked, which is kept from here to the end of the copy
/// (what was checked is what gets copied, and concurrent writers cannot restart the copy);
/// `label` names the source in errors.
pub(crate) fn load(
    dest: &DbRef<'_>,
    schema: &CStr,
    dest_path: &Path,
    src: &DbRef<'_>,
    label: &Path,
    opts: &mut BackupOptions<'_>,
    budget: &Budget,
) -> Result<convert::Plan, BackupError> {
    if let Some(plan) = fresh_load::try_load(src, dest, schema, dest_path, label, opts, budget)? {
        crate::observe::record("route", "fast_load");
        crate::observe::record("plan", tracing::field::debug(&plan));
        return Ok(plan);
    }
    crate::observe::record("route", "backup");
    let from = convert::End {
        db: src,
        schema: c"main",
        path: label,
    };
    let to = convert::End {
        db: dest,
        schema,
        path: dest_path,
    };
    let plan = convert::copy(from, to, true, label, opts, budget)?;
    crate::observe::record("plan", tracing::field::debug(&plan));
    Ok(plan)
}

/// Opens the file read-only (SQLite never creates it) and starts the read transaction the
/// whole restore keeps, with the schema parsed. A hot journal left by a crashed writer is
/// rolled back first, as every SQLite client does.
fn open_source(path: &Path, budget: &Budget) -> Result<OwnedDb, BackupError> {
    let absolute = fs::canonicalize(path).map_err(|e| BackupError::io(OP, path, "open", e))?;
    checks::logs_are_plain_files(&absolute, OP)?;
    let uri = readonly_uri(&absolute).ok_or_else(|| BackupError::nul_in_path(OP, path))?;
    let flags = ffi::SQLITE_OPEN_READONLY | ffi::SQLITE_OPEN_URI;
    // The batching VFS reads the file 64 KiB at a time instead of a page per call. (Not
    // mmap: a file truncated or failing under a memory map kills the process with SIGBUS.)
    let open = || OwnedDb::open_with_vfs(&uri, flags, batch_vfs::name());
    let refused = |failure: SqliteFailure| match is_busy(&failure) {
        true => budget.gave_up(path, failure),
        false => classify(path, failure),
    };
    let db = open().map_err(refused)?;
    match begin_read(&db.db(), path, budget) {
        Err(failure) if failure.extended_code == ffi::SQLITE_READONLY_ROLLBACK => {
            drop(db);
            roll_back_hot_journal(&absolute, path, budget)?;
            let db = open().map_err(refused)?;
            begin_read(&db.db(), path, budget).map_err(refused)?;
            Ok(db)
        }
        Err(failure) => Err(refused(failure)),
        Ok(()) => Ok(db),
    }
}

/// Opens the file read-write for the moment it takes SQLite to roll the hot journal back.
fn roll_back_hot_journal(absolute: &Path, path: &Path, budget: &Budget) -> Result<(), BackupError> {
    let name = path_cstring(absolute).ok_or_else(|| BackupError::nul_in_path(OP, path))?;
    let cannot = |failure: SqliteFailure| {
        BackupError::invalid_db(
            OP,
            path,
            format!(
                "it has a hot journal (a writer stopped mid-transaction), and rolling it back \
                 needs write access to the file and its folder: {failure}"
            ),
        )
    };
    let db = OwnedDb::open(&name, ffi::SQLITE_OPEN_READWRITE).map_err(cannot)?;
    let handle = db.db();
    let _waits = BudgetedBusyHandler::install(&handle, budget, path);
    handle
        .exec("SELECT count(*) FROM sqlite_schema;")
        .map_err(|f| match is_busy(&f) {
            true => budget.gave_up(path, f),
            false => cannot(f),
        })
}

/// Checks SQLite's view of the file under the open read transaction: the header, read
/// through SQLite's own file handle, against the file's length.
fn check_file(db: &DbRef<'_>, path: &Path) -> Result<(), BackupError> {
    let (bytes, file_len) = db.file_header(c"main").map_err(|f| classify(path, f))?;
    check_header(&bytes, file_len, path)
}
