//! The crate's one error type.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What the crate was doing when an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// [`BackupExt::save_as`](crate::BackupExt::save_as) and friends.
    Save,
    /// [`BackupExt::restore_from`](crate::BackupExt::restore_from) and friends.
    Restore,
    /// [`BackupExt::backup_to`](crate::BackupExt::backup_to) or a [`Backup`](crate::Backup) handle.
    Backup,
    /// Building or cloning a [`Template`](crate::Template).
    Template,
    /// [`BackupExt::snapshot`](crate::BackupExt::snapshot) and friends, and
    /// [`Snapshot::save_as`](crate::Snapshot::save_as).
    Snapshot,
    /// Setting up or running an [`Autosave`](crate::Autosave) (its saves are [`Operation::Save`]).
    Autosave,
    /// Opening a shared in-memory database ([`MemoryDatabase::new`](crate::MemoryDatabase::new)).
    Connect,
    /// Starting or running a `Replica` (feature `replica`): its syncs, compaction and
    /// retention. A restore from a replica is [`Operation::Restore`].
    Replica,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Save => "save",
            Operation::Restore => "restore",
            Operation::Backup => "backup",
            Operation::Template => "template",
            Operation::Snapshot => "snapshot",
            Operation::Autosave => "autosave",
            Operation::Connect => "connect",
            Operation::Replica => "replica",
        })
    }
}

/// SQLite's own account of a failure: result codes and `sqlite3_errmsg` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteFailure {
    /// The primary result code, for example `SQLITE_BUSY` (5).
    pub code: i32,
    /// The extended result code, for example `SQLITE_IOERR_FSYNC` (1034).
    pub extended_code: i32,
    /// The text of `sqlite3_errmsg`, or of `sqlite3_errstr` when no connection had one.
    pub message: String,
}

impl fmt::Display for SqliteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (SQLite code {}, extended {})",
            self.message, self.code, self.extended_code
        )
    }
}

/// What kept an operation busy until it gave up ([`BackupError::Busy`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BusyReason {
    /// SQLite reported `SQLITE_BUSY` or `SQLITE_LOCKED`: another connection held a lock.
    Locked(SqliteFailure),
    /// Writers kept changing the source: each change restarted the stepped copy, or grew
    /// the database past the room a snapshot had made for it.
    SourceKeptChanging,
    /// The old file's `-wal` or `-journal` stayed in use by another connection, so it
    /// could not be settled before the file was replaced.
    LogsInUse,
    /// An [`Autosave`](crate::Autosave) of this database was saving, and an Open waits for
    /// it.
    AutosaveSaving,
    /// Another database was being opened into the autosaved one, and the save waits for it.
    OpenInProgress,
    /// The [`Autosave`](crate::Autosave) could not save the commits made before this Open
    /// to its file in time; the database keeps them.
    AutosaveBehind,
    /// SQLite gave no image of a database that has pages (it could not read it, for
    /// example while another connection held it locked).
    ImageUnavailable,
}

impl fmt::Display for BusyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusyReason::Locked(failure) => failure.fmt(f),
            BusyReason::SourceKeptChanging => {
                f.write_str("writers kept changing the database faster than it could be copied")
            }
            BusyReason::LogsInUse => {
                f.write_str("the old file's -wal or -journal is still in use by another connection")
            }
            BusyReason::AutosaveSaving => f.write_str("an autosave of this database was saving"),
            BusyReason::OpenInProgress => {
                f.write_str("another database was being opened into the autosaved one")
            }
            BusyReason::AutosaveBehind => f.write_str(
                "the autosave could not save the commits made before this Open to its file in \
                 time; the database keeps them",
            ),
            BusyReason::ImageUnavailable => {
                f.write_str("SQLite gave no image of a database that has pages")
            }
        }
    }
}

/// Every failure of this crate. Each variant names the operation and, where
/// there is one, the path; SQLite failures keep SQLite's codes and message.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// A file-system call failed.
    #[error("{op} {}: {action} failed: {source}", path.display())]
    Io {
        /// What was being done.
        op: Operation,
        /// The file or directory involved.
        path: PathBuf,
        /// The step that failed, for example "fsync" or "rename".
        action: &'static str,
        /// The OS error (shared, so that the error is `Clone`).
        #[source]
        source: Arc<io::Error>,
    },

    /// SQLite reported an error that is not one of the more specific variants.
    #[error("{op} {}: {failure}", path.display())]
    Sqlite {
        /// What was being done.
        op: Operation,
        /// The database file involved (`:memory:` or a memdb name for in-memory ones).
        path: PathBuf,
        /// SQLite's codes and message.
        failure: SqliteFailure,
    },

    /// A lock stayed busy, or concurrent writers kept restarting the copy,
    /// until the deadline set by [`BackupOptions::timeout`](crate::BackupOptions::timeout) passed.
    #[error("{op} {}: database stayed busy; gave up after {waited:?} ({reason})", path.display())]
    Busy {
        /// What was being done.
        op: Operation,
        /// The database file involved.
        path: PathBuf,
        /// How long the operation had waited when it gave up.
        waited: Duration,
        /// What kept it busy: SQLite's own busy or locked result, or a condition of this
        /// crate's that SQLite never reported.
        reason: BusyReason,
    },

    /// The call was cancelled through its [`CancelToken`](crate::CancelToken). Nothing was
    /// changed: a restore keeps the old data, a save the old file.
    #[error("{op} {}: cancelled", path.display())]
    Cancelled {
        /// What was being done.
        op: Operation,
        /// The database or file the call was writing.
        path: PathBuf,
    },

    /// The schema named in [`BackupOptions::schema`](crate::BackupOptions::schema) is not attached.
    #[error("{op}: this connection has no database named `{schema}`")]
    UnknownSchema {
        /// What was being done.
        op: Operation,
        /// The name that was asked for.
        schema: String,
    },

    /// The destination connection has a transaction open, so SQLite will not overwrite it.
    #[error("{op} {}: destination is in use (it has an open transaction): {failure}", path.display())]
    DestinationInUse {
        /// What was being done.
        op: Operation,
        /// The destination database.
        path: PathBuf,
        /// SQLite's codes and message.
        failure: SqliteFailure,
    },

    /// The source connection holds an open write transaction. Commit or roll
    /// back first: uncommitted rows are never written to a backup.
    #[error("{op}: the source connection has an uncommitted write transaction on `{schema}`; commit or roll back first")]
    SourceInWriteTransaction {
        /// What was being done.
        op: Operation,
        /// The source schema.
        schema: String,
    },

    /// The file to write is the source database's own file (a save), or the file to read is
    /// the destination's own file (a restore).
    #[error("{op} {}: source and destination are the same database file", path.display())]
    SameFile {
        /// What was being done.
        op: Operation,
        /// The path that was given.
        path: PathBuf,
    },

    /// The file to restore is missing, not a regular file, not SQLite, truncated or corrupt.
    #[error("{op} {}: not a usable SQLite database: {reason}", path.display())]
    InvalidDatabase {
        /// What was being done.
        op: Operation,
        /// The file that was rejected.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },

    /// Never returned: every `SqliteConnection` supports [`BackupExt`](crate::BackupExt),
    /// however it was opened. Kept so that code matching on it still compiles.
    #[deprecated(note = "never returned: every SqliteConnection supports BackupExt")]
    #[error("{op}: this SqliteConnection cannot do backups")]
    NotBackupCapable {
        /// What was being done.
        op: Operation,
    },

    /// A caller-supplied value is unusable, for example a path with no file name.
    #[error("{op} {}: {reason}", path.display())]
    InvalidInput {
        /// What was being done.
        op: Operation,
        /// The path involved.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Another [`Autosave`](crate::Autosave), in this process or another, already saves to
    /// this file: two would overwrite each other's document.
    #[error("{op} {}: another autosave (in this process or another) already saves to this file; stop it first", path.display())]
    AlreadyAutosaving {
        /// What was being done.
        op: Operation,
        /// The file both would save to.
        path: PathBuf,
    },

    /// Another database was opened into an autosaved pool's database (`restore_from`,
    /// `restore_from_bytes`, `backup_to`, `Template::copy_into`), so the
    /// [`Autosave`](crate::Autosave) does not write it over the file it saves to, which
    /// still holds the document open before, until
    /// [`retarget`](crate::Autosave::retarget) or [`resume`](crate::Autosave::resume).
    #[error("{op} {}: another database was opened into the autosaved database; it is not saved over this file until Autosave::retarget or Autosave::resume", path.display())]
    DocumentOpened {
        /// What was being done.
        op: Operation,
        /// The file the autosave keeps as it was.
        path: PathBuf,
    },

    /// A [`Template`](crate::Template) initialiser failed, or the connection or pool a copy
    /// goes into could not be set up.
    #[error("{op}: {source}")]
    Init {
        /// What was being done.
        op: Operation,
        /// The initialiser's own error (shared, so that the error is `Clone`).
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

impl BackupError {
    /// SQLite's codes and message, when SQLite reported the failure.
    pub fn sqlite_failure(&self) -> Option<&SqliteFailure> {
        match self {
            BackupError::Sqlite { failure, .. }
            | BackupError::Busy {
                reason: BusyReason::Locked(failure),
                ..
            }
            | BackupError::DestinationInUse { failure, .. } => Some(failure),
            _ => None,
        }
    }

    /// The primary SQLite result code, when SQLite reported the failure.
    pub fn code(&self) -> Option<i32> {
        self.sqlite_failure().map(|f| f.code)
    }

    /// The extended SQLite result code, when SQLite reported the failure.
    pub fn extended_code(&self) -> Option<i32> {
        self.sqlite_failure().map(|f| f.extended_code)
    }

    /// The path the error is about, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            BackupError::Io { path, .. }
            | BackupError::Sqlite { path, .. }
            | BackupError::Busy { path, .. }
            | BackupError::DestinationInUse { path, .. }
            | BackupError::SameFile { path, .. }
            | BackupError::InvalidDatabase { path, .. }
            | BackupError::InvalidInput { path, .. }
            | BackupError::Cancelled { path, .. }
            | BackupError::AlreadyAutosaving { path, .. }
            | BackupError::DocumentOpened { path, .. } => Some(path),
            _ => None,
        }
    }

    /// True for [`BackupError::Busy`]: retrying later may succeed.
    pub fn is_busy(&self) -> bool {
        matches!(self, BackupError::Busy { .. })
    }

    pub(crate) fn io(op: Operation, path: &Path, action: &'static str, source: io::Error) -> Self {
        BackupError::Io {
            op,
            path: path.to_path_buf(),
            action,
            source: Arc::new(source),
        }
    }

    /// The error of a set-up step (`source`) while doing `op`.
    pub(crate) fn init(
        op: Operation,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        BackupError::Init {
            op,
            source: Arc::from(source.into()),
        }
    }

    /// SQLite's `failure` while `op` worked on `path`.
    pub(crate) fn sqlite(op: Operation, path: &Path, failure: SqliteFailure) -> Self {
        BackupError::Sqlite {
            op,
            path: path.to_path_buf(),
            failure,
        }
    }

    /// [`Self::sqlite`] for `map_err`.
    pub(crate) fn sqlite_at(
        op: Operation,
        path: &Path,
    ) -> impl Fn(SqliteFailure) -> Self + Copy + '_ {
        move |failure| Self::sqlite(op, path, failure)
    }

    /// A path SQLite cannot take: C strings end at NUL.
    pub(crate) fn nul_in_path(op: Operation, path: &Path) -> Self {
        BackupError::InvalidInput {
            op,
            path: path.to_path_buf(),
            reason: "path contains a NUL byte".into(),
        }
    }

    pub(crate) fn invalid_db(op: Operation, path: &Path, reason: impl Into<String>) -> Self {
        BackupError::InvalidDatabase {
            op,
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_static<T: std::error::Error + Send + Sync + 'static>() {}

    #[test]
    fn error_is_send_sync_static() {
        assert_send_sync_static::<BackupError>();
    }

    #[test]
    fn display_names_operation_path_and_codes() {
        let e = BackupError::Sqlite {
            op: Operation::Save,
            path: PathBuf::from("/tmp/notes.db"),
            failure: SqliteFailure {
                code: 10,
                extended_code: 1034,
                message: "disk I/O error".into(),
            },
        };
        let text = e.to_string();
        assert!(
            text.starts_with("save /tmp/notes.db: disk I/O error"),
            "{text}"
        );
        assert!(text.contains("1034"), "{text}");
        assert_eq!(e.code(), Some(10));
        assert_eq!(e.extended_code(), Some(1034));
        assert_eq!(e.path(), Some(Path::new("/tmp/notes.db")));
    }
}
