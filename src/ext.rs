//! The public trait: each method checks nothing itself and hands over to the layer that
//! does the work (`save`, `open`, `copy`, `snapshot`).

use std::path::Path;

use diesel::SqliteConnection;

use crate::copy::BackupOptions;
use crate::error::BackupError;
use crate::snapshot::Snapshot;

/// Save As, Open and copy for a Diesel [`SqliteConnection`].
///
/// Implemented for `SqliteConnection`, so it works on a pooled connection through
/// `PooledConnection`'s `Deref`: `pool.get()?.save_as(path)?`.
///
/// Every connection supports it, however it was opened: `SqliteConnection::establish`,
/// diesel's own r2d2 `ConnectionManager`, a [`SingletonManager`](crate::SingletonManager).
pub trait BackupExt {
    /// Saves this connection's `main` database to `path`, atomically replacing any file
    /// there. Same as [`save_as_with`](Self::save_as_with) with default options.
    ///
    /// ```
    /// use diesel::RunQueryDsl;
    /// use diesel_sqlite_backup::{memory_pool, BackupExt};
    ///
    /// let pool = memory_pool()?;
    /// diesel::sql_query("CREATE TABLE notes(body TEXT)").execute(&mut pool.get()?)?;
    /// let dir = tempfile::tempdir()?;
    /// pool.get()?.save_as(dir.path().join("notes.db"))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn save_as(&mut self, path: impl AsRef<Path>) -> Result<(), BackupError> {
        self.save_as_with(path, BackupOptions::default())
    }

    /// Saves the database named by [`BackupOptions::schema`] to `path`.
    ///
    /// The copy is an online, stepped backup into a temporary file beside `path` (named
    /// `.<name>.<random>.dsb-tmp`, see [`TEMP_SUFFIX`](crate::TEMP_SUFFIX)). The temporary file is fsynced, renamed
    /// over `path`, and the directory is fsynced, so after a crash, kill or error `path` holds
    /// either the complete old file or the complete new one. On an error the process survives,
    /// the temporary file is removed. A save holds an `flock` on its temporary file while it
    /// writes, so the temporary files that killed processes left behind (nobody holds their
    /// lock) are removed by the next save to the same `path`; a file another live saver is
    /// writing is never touched. A symbolic link at `path` is followed, not replaced. The new
    /// file gets the old one's permissions, read-only included (the folder decides whether
    /// the rename is allowed).
    /// A `-wal` or `-journal` the old file left behind (SQLite pairs logs with files by name,
    /// and would replay it over the new file) is settled first by opening the old file with
    /// SQLite; while another connection still uses it, the save waits within
    /// [`BackupOptions::timeout`], then fails with [`BackupError::Busy`] and replaces nothing.
    ///
    /// # Errors
    /// - [`BackupError::SourceInWriteTransaction`] if this connection has uncommitted writes:
    ///   they would never be saved, so the call refuses at once.
    /// - [`BackupError::SameFile`] if `path` is the source database's own file.
    /// - [`BackupError::Busy`] if another connection kept the source locked (or kept
    ///   restarting the copy), or still used the old file's WAL or journal, past
    ///   [`BackupOptions::timeout`].
    /// - [`BackupError::UnknownSchema`], [`BackupError::InvalidInput`] (a directory, no file
    ///   name), [`BackupError::Io`] (cannot create, write, sync or rename), or
    ///   [`BackupError::Sqlite`] for anything else SQLite reports.
    ///
    /// ```
    /// use diesel::{Connection, SqliteConnection};
    /// use diesel_sqlite_backup::{BackupExt, BackupOptions};
    ///
    /// let mut conn = SqliteConnection::establish(":memory:")?;
    /// let dir = tempfile::tempdir()?;
    /// let mut steps = 0;
    /// conn.save_as_with(
    ///     dir.path().join("copy.db"),
    ///     BackupOptions::default().pages_per_step(1).on_progress(|_| steps += 1),
    /// )?;
    /// assert!(steps >= 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn save_as_with(
        &mut self,
        path: impl AsRef<Path>,
        options: BackupOptions<'_>,
    ) -> Result<(), BackupError>;

    /// Replaces this connection's `main` database with the database file at `path`.
    /// Same as [`restore_from_with`](Self::restore_from_with) with default options.
    ///
    /// ```
    /// use diesel::RunQueryDsl;
    /// use diesel_sqlite_backup::{memory_pool, BackupExt};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let file = dir.path().join("doc.db");
    /// let pool = memory_pool()?;
    /// diesel::sql_query("CREATE TABLE t(x)").execute(&mut pool.get()?)?;
    /// pool.get()?.save_as(&file)?;
    ///
    /// let reopened = memory_pool()?;
    /// reopened.get()?.restore_from(&file)?;
    /// diesel::sql_query("SELECT x FROM t").execute(&mut reopened.get()?)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn restore_from(&mut self, path: impl AsRef<Path>) -> Result<(), BackupError> {
        self.restore_from_with(path, BackupOptions::default())
    }

    /// Replaces the database named by [`BackupOptions::schema`] with the file at `path`
    /// (the application's "Open"). Every connection to the same database sees the result;
    /// for a [`SingletonManager`](crate::SingletonManager) pool that is every pooled
    /// connection.
    ///
    /// The file is opened by SQLite alone, read-only, and never created; no descriptor of
    /// the crate's own touches it, so this process's locks on it stay intact. It is read
    /// inside one read transaction kept until the copy ends, and every check is SQLite's
    /// view under that lock: before anything is replaced the file must be a regular file
    /// with a header whose page count fits its length and a schema SQLite can parse, or
    /// empty (zero bytes, which SQLite reads as an empty database, and so does this); with
    /// [`BackupOptions::verify_integrity`] it must also pass `PRAGMA integrity_check`. A WAL
    /// file is read with its `-wal`. A hot journal left by a crashed writer is rolled back
    /// first, as every SQLite client does (this writes the file). The copy runs in one
    /// destination transaction, so any failure leaves the current data as it was.
    ///
    /// A file the destination cannot take page for page is converted first into a private
    /// in-memory copy, which costs a second copy's memory while it runs: another text
    /// encoding (row by row), or another page size than a non-empty in-memory or WAL
    /// destination (`VACUUM INTO`).
    ///
    /// # Errors
    /// - [`BackupError::Io`] (with `NotFound`) for a missing file.
    /// - [`BackupError::InvalidDatabase`] for a directory, a file that is not SQLite, a
    ///   truncated or corrupt file, or a hot journal that cannot be rolled back because the
    ///   file or its folder is not writable.
    /// - [`BackupError::SameFile`] if `path` is this connection's own database file.
    /// - [`BackupError::DestinationInUse`] if this connection has a transaction open.
    /// - [`BackupError::Busy`] if the file or the destination stayed locked past the
    ///   budget ([`BackupOptions::timeout`]); it names the one that was busy.
    /// - [`BackupError::Cancelled`] if its [`CancelToken`](crate::CancelToken) was cancelled.
    fn restore_from_with(
        &mut self,
        path: impl AsRef<Path>,
        options: BackupOptions<'_>,
    ) -> Result<(), BackupError>;

    /// Copies this connection's database (schema from [`BackupOptions::schema`]) over
    /// `dest`'s `main` database, for example into a file database other code has open.
    /// Unlike [`save_as`](Self::save_as) this writes in place through `dest`'s own journal;
    /// it is as atomic as a transaction on `dest`.
    ///
    /// # Errors
    /// - [`BackupError::DestinationInUse`] if `dest` has a transaction open.
    /// - [`BackupError::SameFile`], at once, if `dest` and this connection belong to one
    ///   [`SingletonManager`](crate::SingletonManager) pool's database. Two connections to
    ///   one file get [`BackupError::Busy`] at the deadline.
    /// - [`BackupError::Busy`] if another connection keeps `dest` or the source locked past
    ///   the deadline.
    ///
    /// ```
    /// use diesel::{Connection, RunQueryDsl, SqliteConnection};
    /// use diesel_sqlite_backup::{BackupExt, BackupOptions};
    ///
    /// let mut src = SqliteConnection::establish(":memory:")?;
    /// diesel::sql_query("CREATE TABLE t(x)").execute(&mut src)?;
    /// let mut dest = SqliteConnection::establish(":memory:")?;
    /// src.backup_to(&mut dest, BackupOptions::default())?;
    /// diesel::sql_query("SELECT x FROM t").execute(&mut dest)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn backup_to(
        &mut self,
        dest: &mut SqliteConnection,
        options: BackupOptions<'_>,
    ) -> Result<(), BackupError>;

    /// This connection's `main` database as bytes. Same as
    /// [`snapshot_with`](Self::snapshot_with) with default options.
    ///
    /// ```
    /// use diesel::RunQueryDsl;
    /// use diesel_sqlite_backup::{memory_pool, BackupExt};
    ///
    /// let pool = memory_pool()?;
    /// diesel::sql_query("CREATE TABLE t(x)").execute(&mut pool.get()?)?;
    /// let undo = pool.get()?.snapshot()?; // an undo point in memory
    /// diesel::sql_query("DROP TABLE t").execute(&mut pool.get()?)?;
    /// pool.get()?.restore_from_bytes(&undo)?;
    /// diesel::sql_query("SELECT x FROM t").execute(&mut pool.get()?)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn snapshot(&mut self) -> Result<Snapshot, BackupError> {
        self.snapshot_with(BackupOptions::default())
    }

    /// The database named by [`BackupOptions::schema`] as a complete database image: one
    /// consistent state, even while other connections (other pooled connections included)
    /// write. Works for a [`SingletonManager`](crate::SingletonManager) pool's shared
    /// database, `:memory:`, file databases (WAL included), and attached and temp schemas.
    ///
    /// It costs one copy of the database. A memdb database (a pool's) is read in one piece
    /// under a read transaction, reporting progress once. Any other database is the same
    /// stepped copy as [`save_as_with`](Self::save_as_with), written straight into the buffer
    /// the [`Snapshot`] owns. Both honour the [`BackupOptions::timeout`] budget,
    /// [`BackupOptions::on_progress`] and [`BackupOptions::cancel_token`] (a one-piece read
    /// checks the token before it starts).
    ///
    /// # Errors
    /// - [`BackupError::SourceInWriteTransaction`] if this connection has uncommitted
    ///   writes: they would never be in the snapshot, so the call refuses at once.
    /// - [`BackupError::Busy`] if another connection kept the database locked past the
    ///   budget; [`BackupError::Cancelled`]; [`BackupError::UnknownSchema`].
    ///
    /// ```
    /// use diesel::{Connection, SqliteConnection};
    /// use diesel_sqlite_backup::{BackupExt, BackupOptions};
    ///
    /// let mut conn = SqliteConnection::establish(":memory:")?;
    /// let mut reports = 0;
    /// let snapshot = conn.snapshot_with(BackupOptions::default().on_progress(|_| reports += 1))?;
    /// assert!(reports >= 1);
    /// assert!(!snapshot.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn snapshot_with(&mut self, options: BackupOptions<'_>) -> Result<Snapshot, BackupError>;

    /// Replaces this connection's `main` database with the database image `bytes`. Same as
    /// [`restore_from_bytes_with`](Self::restore_from_bytes_with) with default options.
    ///
    /// ```
    /// use diesel_sqlite_backup::{memory_pool, BackupExt};
    ///
    /// const FIXTURE: &[u8] = b"not a database"; // e.g. include_bytes!("fixture.db")
    /// let pool = memory_pool()?;
    /// assert!(pool.get()?.restore_from_bytes(FIXTURE).is_err()); // refused, data kept
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn restore_from_bytes(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
        self.restore_from_bytes_with(bytes, BackupOptions::default())
    }

    /// Replaces the database named by [`BackupOptions::schema`] with the database image
    /// `bytes` (a [`Snapshot`], a blob, `include_bytes!` of a file), with every guarantee of
    /// [`restore_from_with`](Self::restore_from_with): before anything is replaced the bytes
    /// must carry a valid header whose page count fits their length and a schema SQLite can
    /// parse (and pass `PRAGMA integrity_check` with
    /// [`BackupOptions::verify_integrity`]); the copy runs in one destination transaction;
    /// every pooled connection sees the result; a different page size or encoding is
    /// converted. The bytes are read in place, read-only, and never modified; an image whose
    /// header says WAL is read from a copy.
    ///
    /// # Errors
    /// [`BackupError::InvalidDatabase`] for short, truncated, non-SQLite or corrupt bytes
    /// (errors name them `<snapshot bytes>`), and otherwise as
    /// [`restore_from_with`](Self::restore_from_with). No bytes at all are not an error: they
    /// load as an empty database, as a zero-byte file does.
    ///
    /// ```
    /// use diesel::{Connection, RunQueryDsl, SqliteConnection};
    /// use diesel_sqlite_backup::{memory_pool, BackupExt, BackupOptions};
    ///
    /// let mut source = SqliteConnection::establish(":memory:")?;
    /// diesel::sql_query("CREATE TABLE t(x)").execute(&mut source)?;
    /// let bytes = source.snapshot()?.into_vec();
    /// let pool = memory_pool()?;
    /// pool.get()?
    ///     .restore_from_bytes_with(&bytes, BackupOptions::default().verify_integrity(true))?;
    /// diesel::sql_query("SELECT x FROM t").execute(&mut pool.get()?)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn restore_from_bytes_with(
        &mut self,
        bytes: &[u8],
        options: BackupOptions<'_>,
    ) -> Result<(), BackupError>;

    /// Replaces the database with the sync `target` names from the replica under `prefix`
    /// in `store` (written by a [`Replica`](crate::Replica), in any process), with every
    /// guarantee of [`restore_from_bytes`](Self::restore_from_bytes): the image is rebuilt
    /// in memory, every object's checksums, sync number, generation and page count checked,
    /// and its page 1 a database header, before one destination transaction replaces the
    /// database; on any failure the old data stays. Like `restore_from_bytes` on its
    /// defaults, it does not run `PRAGMA integrity_check` (the checksums prove the pages are
    /// the ones the replica read; run it on the result to check the source itself). From
    /// `LocalFileSystem` the objects are memory-mapped: no other program may rewrite them
    /// in place meanwhile (docs/replica.md, "Reading it back"). Feature `replica`.
    ///
    /// # Errors
    /// [`BackupError::InvalidInput`] naming the prefix when no sync matches `target`;
    /// [`BackupError::InvalidDatabase`] naming the object when one is missing, truncated,
    /// corrupt or from another replica; [`BackupError::Io`] naming it when the store
    /// fails; and as [`restore_from_bytes_with`](Self::restore_from_bytes_with).
    #[cfg(feature = "replica")]
    fn restore_from_replica(
        &mut self,
        store: std::sync::Arc<dyn object_store::ObjectStore>,
        prefix: &object_store::path::Path,
        target: crate::RestoreTarget,
    ) -> Result<crate::RestoreInfo, BackupError> {
        // A default body, so that implementations outside the crate keep compiling.
        let _ = (store, target);
        Err(BackupError::InvalidInput {
            op: crate::Operation::Restore,
            path: prefix.as_ref().into(),
            reason: "restore_from_replica is implemented for SqliteConnection only".into(),
        })
    }
}

impl BackupExt for SqliteConnection {
    fn save_as_with(
        &mut self,
        path: impl AsRef<Path>,
        mut options: BackupOptions<'_>,
    ) -> Result<(), BackupError> {
        crate::save::save_as(self, path.as_ref(), &mut options)
    }

    fn restore_from_with(
        &mut self,
        path: impl AsRef<Path>,
        mut options: BackupOptions<'_>,
    ) -> Result<(), BackupError> {
        crate::open::restore_from(self, path.as_ref(), &mut options)
    }

    fn backup_to(
        &mut self,
        dest: &mut SqliteConnection,
        mut options: BackupOptions<'_>,
    ) -> Result<(), BackupError> {
        crate::copy::backup_to(self, dest, &mut options)
    }

    fn snapshot_with(&mut self, mut options: BackupOptions<'_>) -> Result<Snapshot, BackupError> {
        crate::snapshot::snapshot(self, &mut options)
    }

    fn restore_from_bytes_with(
        &mut self,
        bytes: &[u8],
        mut options: BackupOptions<'_>,
    ) -> Result<(), BackupError> {
        crate::snapshot::restore_from_bytes(self, bytes, &mut options)
    }

    #[cfg(feature = "replica")]
    fn restore_from_replica(
        &mut self,
        store: std::sync::Arc<dyn object_store::ObjectStore>,
        prefix: &object_store::path::Path,
        target: crate::RestoreTarget,
    ) -> Result<crate::RestoreInfo, BackupError> {
        crate::replica::restore_from_replica(self, store, prefix, target)
    }
}
