//! Snapshots: a database as bytes, out and back in.
//!
//! Taking one costs one copy of the database and no second one: a memdb database (a pool's)
//! is read in one piece under a read transaction; any other is copied with SQLite's online
//! backup API into a private memdb database whose pages memdb writes straight into the
//! buffer the [`Snapshot`] then owns (see `take`).
//! Loading bytes borrows them read-only (`sqlite3_deserialize` with `READONLY`) and runs the
//! checks and the copy of [`restore_from`](crate::BackupExt::restore_from).

mod load;
mod take;

use std::fmt;
use std::io::Write;
use std::ops::Deref;
use std::path::Path;

pub(crate) use load::restore_from_bytes;
pub(crate) use take::snapshot;

use crate::error::{BackupError, Operation};
use crate::save::replace_atomically;
use crate::sqlite::budget::Budget;

/// A complete SQLite database image, taken with [`BackupExt::snapshot`](crate::BackupExt::snapshot):
/// one consistent state of the database, as bytes.
///
/// Written to a file as it is (with [`save_as`](Self::save_as), or `std::fs::write`), any
/// SQLite opens it and finds the committed data. Load it back with
/// [`BackupExt::restore_from_bytes`](crate::BackupExt::restore_from_bytes) or
/// [`Template::from_bytes`](crate::Template::from_bytes). A snapshot of a WAL-mode file keeps
/// the file's WAL header: SQLite opens such an image as a WAL database whose log is empty.
///
/// ```
/// use diesel::RunQueryDsl;
/// use diesel_sqlite_backup::{memory_pool, BackupExt};
///
/// let pool = memory_pool()?;
/// diesel::sql_query("CREATE TABLE t(x)").execute(&mut pool.get()?)?;
/// let snapshot = pool.get()?.snapshot()?;
/// assert!(snapshot.starts_with(b"SQLite format 3\0"));
/// let bytes: Vec<u8> = snapshot.into_vec(); // send it, store it as a blob, ...
/// memory_pool()?.get()?.restore_from_bytes(&bytes)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Snapshot {
    bytes: Vec<u8>,
}

impl Snapshot {
    pub(crate) fn from_vec(bytes: Vec<u8>) -> Snapshot {
        Snapshot { bytes }
    }

    /// The image's size in bytes: its page count times its page size.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True only for the image of a database that has no pages (SQLite gives every database
    /// written once at least one page, so a snapshot is never empty in practice).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The bytes, without copying them.
    pub fn into_vec(self) -> Vec<u8> {
        self.bytes
    }

    /// Writes the snapshot to `path` with the same atomic, durable replace as
    /// [`BackupExt::save_as`](crate::BackupExt::save_as): into a temporary file beside
    /// `path` (named `.<name>.<random>.dsb-tmp`), checked against its header, fsynced,
    /// renamed over `path`, and the directory fsynced. After a crash, kill or error `path`
    /// holds the complete old file or the complete new one; after an error no temporary file
    /// is left. A symbolic link at `path` is followed, not replaced. A `-wal` or `-journal`
    /// the old file left behind is settled first, as `save_as` does (with
    /// [`DEFAULT_TIMEOUT`](crate::DEFAULT_TIMEOUT) to wait for it).
    ///
    /// # Errors
    /// [`BackupError::InvalidInput`] for a directory or another non-regular file at `path`,
    /// or a path with no file name; [`BackupError::Io`] when the file cannot be created,
    /// written, synced or renamed; [`BackupError::Busy`] when another connection still uses
    /// the old file's WAL or journal.
    ///
    /// ```
    /// use diesel::{Connection, SqliteConnection};
    /// use diesel_sqlite_backup::BackupExt;
    ///
    /// let snapshot = SqliteConnection::establish(":memory:")?.snapshot()?; // taken now...
    /// let dir = tempfile::tempdir()?;
    /// snapshot.save_as(dir.path().join("later.db"))?; // ...written later
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save_as(&self, path: impl AsRef<Path>) -> Result<(), BackupError> {
        let op = Operation::Snapshot;
        let budget = Budget::new(op, crate::DEFAULT_TIMEOUT, None);
        let span = tracing::info_span!("snapshot_save", path = %path.as_ref().display(),
            bytes = self.bytes.len() as u64, elapsed_ms = tracing::field::Empty,
            error = tracing::field::Empty);
        crate::observe::in_span(span, || {
            replace_atomically(path.as_ref(), op, &budget, |temp, dest| {
                let mut file = temp.as_file();
                file.write_all(&self.bytes)
                    .map_err(|e| BackupError::io(op, dest, "write", e))
            })
        })
    }
}

impl Deref for Snapshot {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsRef<[u8]> for Snapshot {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("bytes", &self.bytes.len())
            .finish()
    }
}
