//! Preconditions every backup entry point checks before touching any data.

use std::ffi::CString;
use std::path::PathBuf;

use libsqlite3_sys as ffi;

use crate::error::{BackupError, Operation, SqliteFailure};
use crate::raw::{DbRef, Storage};

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
        Ok((header, _)) => match super::header::Header::unwritable(&header) {
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
    for suffix in ["-journal", "-wal"] {
        let mut name = db_path.as_os_str().to_owned();
        name.push(suffix);
        let Ok(meta) = std::fs::symlink_metadata(&name) else {
            continue;
        };
        let kind = meta.file_type();
        if !(kind.is_file() || kind.is_symlink()) {
            return Err(BackupError::InvalidInput {
                op,
                path: PathBuf::from(name),
                reason: "SQLite's journal name holds something that is not a file (a FIFO, \
                         device, socket or directory); opening it could block forever, so \
                         remove it first"
                    .into(),
            });
        }
    }
    Ok(())
}
