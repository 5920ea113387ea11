//! Open: load a database file into a connection's database without ever losing the data
//! already there when the file is missing, unusable, or locked.
//!
//! The file is checked before anything is written, then copied under one read transaction
//! into one destination write transaction, so a failure part-way rolls the destination back.

use std::ffi::CStr;
use std::fs;
use std::path::Path;

use diesel::SqliteConnection;
use libsqlite3_sys as ffi;

use super::checks;
use super::engine::{self, BusyHandlerPause};
use super::handle::RawBackup;
use super::header::Header;
use super::options::BackupOptions;
use crate::error::{BackupError, Operation, SqliteFailure};
use crate::raw::{batch_vfs, memdb, raw_handle, readonly_uri, DbRef, OwnedDb};

const OP: Operation = Operation::Restore;

pub(crate) fn restore_from(
    conn: &mut SqliteConnection,
    path: &Path,
    opts: &mut BackupOptions<'_>,
) -> Result<(), BackupError> {
    let dest = raw_handle(conn, OP)?;
    let schema = checks::schema(&dest, &opts.schema, OP)?;
    checks::dest_idle(&dest, &schema, OP)?;
    let header = Header::read(path, OP)?;
    let source = open_source(path, opts)?;
    let sqlite = |failure| BackupError::Sqlite {
        op: OP,
        path: path.to_path_buf(),
        failure,
    };

    // Hold one read transaction from validation to the end of the copy: what was checked
    // is what gets copied, and concurrent writers to the file cannot restart the copy.
    begin_read(&source.db(), path)?;
    check_source(&source.db(), path, &header, opts.verify)?;
    let staged = match needs_restaging(&dest, &schema, &header).map_err(sqlite)? {
        // VACUUM cannot run inside a transaction. It reads one consistent snapshot and
        // rebuilds every table, so it validates what it copies by itself.
        Some(page_size) => {
            source.db().exec("COMMIT").map_err(sqlite)?;
            Some(restage(&source, page_size, path)?)
        }
        None => None,
    };
    let from = staged.as_ref().unwrap_or(&source).db();

    let _no_busy_handler = BusyHandlerPause::new(&dest);
    let mut backup = RawBackup::new(&dest, &schema, &from, c"main").map_err(sqlite)?;
    engine::run(&mut backup, opts, OP, path)?;
    backup.finish().map_err(sqlite)
}

/// Opens the file read-only. SQLite never creates it: a missing file was already refused.
fn open_source(path: &Path, opts: &BackupOptions<'_>) -> Result<OwnedDb, BackupError> {
    let absolute = fs::canonicalize(path).map_err(|e| BackupError::io(OP, path, "open", e))?;
    let uri = readonly_uri(&absolute).ok_or_else(|| BackupError::InvalidInput {
        op: OP,
        path: path.to_path_buf(),
        reason: "path contains a NUL byte".into(),
    })?;
    let flags = ffi::SQLITE_OPEN_READONLY | ffi::SQLITE_OPEN_URI;
    // The batching VFS reads the file 64 KiB at a time instead of a page per call. (Not
    // mmap: a file truncated or failing under a memory map kills the process with SIGBUS.)
    let db = OwnedDb::open_with_vfs(&uri, flags, batch_vfs::name())
        .map_err(|failure| classify(path, failure))?;
    // Another process's lock on the file is waited for, up to the caller's deadline.
    db.db()
        .set_busy_timeout(opts.timeout.as_millis().min(i32::MAX as u128) as i32);
    Ok(db)
}

/// Starts the read transaction and makes SQLite parse the schema, which rejects files that
/// are not databases or whose schema is malformed.
fn begin_read(db: &DbRef<'_>, path: &Path) -> Result<(), BackupError> {
    db.exec("BEGIN; SELECT count(*) FROM sqlite_schema;")
        .map_err(|failure| classify(path, failure))
}

/// Checks SQLite's view of the file against its size, and optionally its integrity.
fn check_source(
    db: &DbRef<'_>,
    path: &Path,
    header: &Header,
    verify: bool,
) -> Result<(), BackupError> {
    let sqlite = |failure| classify(path, failure);
    let pages = db.query_i64("PRAGMA page_count").map_err(sqlite)? as u64;
    let wal = db.query_column("PRAGMA journal_mode").map_err(sqlite)?;
    let in_wal = wal.first().is_some_and(|m| m.eq_ignore_ascii_case("wal"));
    // In WAL mode the newest pages may live in the -wal file, so the size says nothing.
    if !in_wal && pages * header.page_size as u64 > header.file_len {
        return Err(BackupError::invalid_db(
            OP,
            path,
            format!(
                "truncated: {pages} pages of {} bytes do not fit in {} bytes",
                header.page_size, header.file_len
            ),
        ));
    }
    if verify {
        let report = db
            .query_column("PRAGMA quick_check")
            .unwrap_or_else(|failure| vec![failure.message]);
        if report.first().map(String::as_str) != Some("ok") {
            let detail = report.into_iter().take(3).collect::<Vec<_>>().join("; ");
            return Err(BackupError::invalid_db(
                OP,
                path,
                format!("integrity check failed: {detail}"),
            ));
        }
    }
    Ok(())
}

/// Whether the file must be rewritten before it can be copied, and with which page size:
/// - SQLite refuses a backup between different page sizes into an in-memory or WAL database
///   that already holds pages;
/// - a WAL-mode file's header would make an in-memory destination try to open a WAL.
fn needs_restaging(
    dest: &DbRef<'_>,
    schema: &CStr,
    source: &Header,
) -> Result<Option<u32>, SqliteFailure> {
    let quoted = schema.to_string_lossy().replace('"', "\"\"");
    let dest_page_size = dest.query_i64(&format!("PRAGMA \"{quoted}\".page_size"))? as u32;
    let in_memory = dest.is_in_memory(schema);
    if source.wal && in_memory {
        return Ok(Some(dest_page_size));
    }
    if dest_page_size == source.page_size {
        return Ok(None);
    }
    let dest_pages = dest.query_i64(&format!("PRAGMA \"{quoted}\".page_count"))?;
    let mode = dest.query_column(&format!("PRAGMA \"{quoted}\".journal_mode"))?;
    let wal = mode.first().is_some_and(|m| m.eq_ignore_ascii_case("wal"));
    // An empty in-memory destination simply takes the source's page size.
    let empty_memory = in_memory && dest_pages == 0;
    Ok(((in_memory || wal) && !empty_memory).then_some(dest_page_size))
}

/// Rewrites the source into a private in-memory database with `page_size`. `VACUUM INTO`
/// rebuilds every table and index, so it also rejects corrupt content.
fn restage(source: &OwnedDb, page_size: u32, path: &Path) -> Result<OwnedDb, BackupError> {
    let uri = memdb::unique_uri("stage");
    let sqlite = |failure| classify(path, failure);
    let staged = memdb::open_keeper(&uri, None).map_err(sqlite)?;
    source
        .db()
        .exec(&format!(
            "PRAGMA page_size={page_size}; VACUUM INTO '{uri}';"
        ))
        .map_err(sqlite)?;
    staged
        .db()
        .exec("BEGIN; SELECT count(*) FROM sqlite_schema;")
        .map_err(sqlite)?;
    Ok(staged)
}

/// Turns SQLite's verdict on a bad file into the specific error.
fn classify(path: &Path, failure: SqliteFailure) -> BackupError {
    match failure.code {
        ffi::SQLITE_NOTADB | ffi::SQLITE_CORRUPT => {
            BackupError::invalid_db(OP, path, failure.to_string())
        }
        ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED => BackupError::Busy {
            op: OP,
            path: path.to_path_buf(),
            waited: std::time::Duration::ZERO,
            failure,
        },
        _ => BackupError::Sqlite {
            op: OP,
            path: path.to_path_buf(),
            failure,
        },
    }
}
