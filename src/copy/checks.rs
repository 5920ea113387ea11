//! Preconditions every backup entry point checks before touching any data.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use libsqlite3_sys as ffi;

use crate::error::{BackupError, Operation, SqliteFailure};
use crate::format::header::Header;
use crate::fs::{journal_of, wal_of};
use crate::sqlite::{Budget, BudgetedBusyHandler, DbRef, Storage};

/// The metadata of `path`, a regular file: a missing file or a directory gets a precise
/// error before SQLite is asked. Only metadata is read: no descriptor is opened on the file.
pub(crate) fn regular_file(path: &Path, op: Operation) -> Result<std::fs::Metadata, BackupError> {
    let meta = std::fs::metadata(path).map_err(|e| BackupError::io(op, path, "open", e))?;
    if meta.is_file() {
        return Ok(meta);
    }
    let what = if meta.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    Err(BackupError::invalid_db(op, path, format!("it is {what}")))
}

/// `name` as a C string, if the connection has a schema by that name.
pub(crate) fn schema(db: &DbRef<'_>, name: &str, op: Operation) -> Result<CString, BackupError> {
    let unknown = || BackupError::UnknownSchema {
        op,
        schema: name.to_owned(),
    };
    let c = CString::new(name).map_err(|_| unknown())?;
    // SQLite opens the temp schema on first use, and the backup API does so itself.
    if name.eq_ignore_ascii_case("temp") {
        return Ok(c);
    }
    db.filename(&c).map(|_| c).ok_or_else(unknown)
}

/// SQLite answers BUSY forever while the source connection itself is writing; refuse at once.
pub(crate) fn source_not_writing(
    db: &DbRef<'_>,
    schema: &std::ffi::CStr,
    op: Operation,
) -> Result<(), BackupError> {
    if db.txn_state(schema) == ffi::SQLITE_TXN_WRITE {
        return Err(BackupError::SourceInWriteTransaction {
            op,
            schema: schema.to_string_lossy().into_owned(),
        });
    }
    Ok(())
}

/// SQLite refuses to overwrite a database its own connection is reading or writing.
/// Returns the destination's printable path.
pub(crate) fn dest_idle(
    db: &DbRef<'_>,
    schema: &std::ffi::CStr,
    op: Operation,
) -> Result<PathBuf, BackupError> {
    let path = db.display_path(schema);
    if db.txn_state(schema) != ffi::SQLITE_TXN_NONE || !db.autocommit() {
        return Err(BackupError::DestinationInUse {
            op,
            path,
            failure: SqliteFailure {
                code: ffi::SQLITE_ERROR,
                extended_code: ffi::SQLITE_ERROR,
                message: "destination database is in use".to_owned(),
            },
        });
    }
    Ok(path)
}

/// Refuses a copy between two connections of one pool (one memdb name): the destination's
/// write lock would wait for the source's read lock until the budget ran out. Files are
/// not compared: a path names the file there now, and a connection may still hold one that
/// was renamed over or deleted, so a path match could refuse two distinct databases. Two
/// connections to one file, and a plain `vfs=memdb` connection (SQLite reports no name for
/// its database), get `Busy` at the budget instead.
pub(crate) fn distinct_databases(
    src: &DbRef<'_>,
    src_schema: &std::ffi::CStr,
    dst: &DbRef<'_>,
    dst_schema: &std::ffi::CStr,
    op: Operation,
) -> Result<(), BackupError> {
    let (Some(a), Some(b)) = (src.filename(src_schema), dst.filename(dst_schema)) else {
        return Ok(());
    };
    let memdb = |s: Storage| matches!(s, Storage::Memdb | Storage::PatchedMemdb);
    // An empty name is a private in-memory or temp database, never shared.
    let same =
        !a.is_empty() && a == b && memdb(src.storage(src_schema)) && memdb(dst.storage(dst_schema));
    if same {
        return Err(BackupError::SameFile {
            op,
            path: PathBuf::from(b),
        });
    }
    Ok(())
}

/// Refuses a source whose header asks for a file format SQLite cannot write (see
/// `Header::unwritable`): its pages would leave the destination read-only for good. A source
/// without a file (`:memory:`) has no header to read here and passes.
pub(crate) fn writable_format(
    db: &DbRef<'_>,
    schema: &std::ffi::CStr,
    op: Operation,
    label: &std::path::Path,
) -> Result<(), BackupError> {
    match db.file_header(schema) {
        Ok((header, _)) => match Header::unwritable(&header) {
            Some(reason) => Err(BackupError::invalid_db(op, label, reason)),
            None => Ok(()),
        },
        Err(_) => Ok(()),
    }
}

/// Refuses a database whose `-journal` or `-wal` name holds a FIFO, socket, device or
/// directory: SQLite opens the journal name to see whether it is hot, and opening a FIFO
/// blocks forever, past any budget. Only metadata is read (`lstat`); a symbolic link is left
/// to SQLite, which never follows one there.
pub(crate) fn logs_are_plain_files(
    db_path: &std::path::Path,
    op: Operation,
) -> Result<(), BackupError> {
    for name in [journal_of(db_path), wal_of(db_path)] {
        let Ok(meta) = std::fs::symlink_metadata(&name) else {
            continue;
        };
        let kind = meta.file_type();
        if !(kind.is_file() || kind.is_symlink()) {
            return Err(BackupError::InvalidInput {
                op,
                path: name,
                reason: "SQLite's journal name holds something that is not a file (a FIFO, \
                         device, socket or directory); opening it could block forever, so \
                         remove it first"
                    .into(),
            });
        }
    }
    Ok(())
}

/// Starts the read transaction and makes SQLite parse the schema, which rejects files that
/// are not databases or whose schema is malformed. Lock waits happen within `budget`.
pub(crate) fn begin_read(
    db: &DbRef<'_>,
    path: &Path,
    budget: &Budget,
) -> Result<(), SqliteFailure> {
    let _waits = BudgetedBusyHandler::install(db, budget, path);
    let begun = db.exec("BEGIN; SELECT count(*) FROM sqlite_schema;");
    if begun.is_err() && !db.autocommit() {
        let _ = db.exec("ROLLBACK");
    }
    begun
}

/// A header and the length of what it describes: long enough, and consistent. In WAL mode the
/// newest pages may live in the -wal file, so the length says nothing; `Header` skips the
/// check for WAL sources. Zero bytes are no header at all: SQLite reads them as an empty
/// database (the file `sqlite3_open` leaves), and so does a restore.
pub(crate) fn check_header(bytes: &[u8], len: u64, label: &Path) -> Result<(), BackupError> {
    if len == 0 {
        return Ok(());
    }
    let Some(header) = bytes.first_chunk::<100>().filter(|_| len >= 100) else {
        return Err(BackupError::invalid_db(
            Operation::Restore,
            label,
            format!("only {len} bytes, shorter than a database header"),
        ));
    };
    Header::parse(header, len)
        .map_err(|reason| BackupError::invalid_db(Operation::Restore, label, reason))?;
    Ok(())
}

/// `PRAGMA integrity_check` under the open read transaction.
pub(crate) fn verify_integrity(db: &DbRef<'_>, label: &Path) -> Result<(), BackupError> {
    let report = db
        .query_column("PRAGMA main.integrity_check(4)")
        .unwrap_or_else(|failure| vec![failure.message]);
    if report.first().map(String::as_str) == Some("ok") {
        return Ok(());
    }
    let detail = report.join("; ");
    Err(BackupError::invalid_db(
        Operation::Restore,
        label,
        format!("integrity check failed: {detail}"),
    ))
}

/// Turns SQLite's verdict on a bad file into the specific error.
pub(crate) fn classify(path: &Path, failure: SqliteFailure) -> BackupError {
    match failure.code {
        ffi::SQLITE_NOTADB | ffi::SQLITE_CORRUPT => {
            BackupError::invalid_db(Operation::Restore, path, failure.to_string())
        }
        _ => BackupError::sqlite(Operation::Restore, path, failure),
    }
}
