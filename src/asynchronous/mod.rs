//! Async pools on the shared database, and Save As / Open that run on tokio's blocking pool
//! and are cancelled when their future is dropped (feature `async`). See docs/async.md.

mod cancel;

use std::future::Future;
use std::path::{Path, PathBuf};

use diesel::SqliteConnection;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;

use crate::{BackupError, BackupExt, BackupOptions, MemoryDatabase, Operation, Snapshot};
use cancel::on_blocking_pool;

/// The connection type of the async pools: diesel-async's wrapper of a [`SqliteConnection`]
/// that runs every query on tokio's blocking pool.
///
/// ```
/// use diesel_async::{AsyncConnection, SimpleAsyncConnection};
/// use diesel_sqlite_backup::{AsyncSqliteConnection, MemoryDatabase};
///
/// # #[tokio::main(flavor = "multi_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let db = MemoryDatabase::new()?;
/// let mut conn = AsyncSqliteConnection::new(db.connect()?);
/// conn.batch_execute("CREATE TABLE t(x)").await?;
/// # Ok(())
/// # }
/// ```
pub type AsyncSqliteConnection = SyncConnectionWrapper<SqliteConnection>;

impl MemoryDatabase {
    /// A diesel-async connection manager whose connections all open this database, set up
    /// as [`connect`](Self::connect) sets up its own, for `diesel_async`'s deadpool and bb8
    /// pools. Like a [`SingletonManager`](crate::SingletonManager), it never hands out a
    /// connection that came back inside a transaction (a raw `BEGIN` included): the check on
    /// checkout asks SQLite, without a query or a lock. (diesel-async offers no check on
    /// return, so such a connection keeps its locks until the pool next checks it.) The
    /// manager keeps the database alive.
    ///
    /// ```
    /// use diesel_async::pooled_connection::deadpool::Pool;
    /// use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
    /// use diesel_sqlite_backup::MemoryDatabase;
    ///
    /// # #[tokio::main(flavor = "multi_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let db = MemoryDatabase::new()?;
    /// let pool = Pool::builder(db.async_manager()).max_size(4).build()?;
    /// pool.get().await?.batch_execute("CREATE TABLE t(x)").await?;
    /// diesel::sql_query("INSERT INTO t VALUES (1)").execute(&mut pool.get().await?).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn async_manager(&self) -> AsyncDieselConnectionManager<AsyncSqliteConnection> {
        let db = self.clone();
        let mut config = ManagerConfig::<AsyncSqliteConnection>::default();
        // Opening a memdb connection and setting its busy timeout reads nothing and never
        // waits for a lock, so it runs in place.
        config.custom_setup = Box::new(move |_url| {
            let connected = db.connect().map(SyncConnectionWrapper::new);
            Box::pin(std::future::ready(connected))
        });
        config.recycling_method = RecyclingMethod::CustomFunction(Box::new(|conn| {
            conn.spawn_blocking(|c| {
                if crate::pool::left_in_transaction(c) {
                    Err(diesel::result::Error::BrokenTransactionManager)
                } else {
                    Ok(())
                }
            })
        }));
        AsyncDieselConnectionManager::new_with_config(self.uri(), config)
    }
}

/// [`BackupExt`] for async code: Save As, Open and snapshots of a diesel-async
/// [`SyncConnectionWrapper<SqliteConnection>`](AsyncSqliteConnection) (the connection of
/// `diesel_async`'s deadpool and bb8 pools), run on tokio's blocking pool, never on a
/// runtime worker.
///
/// Like an `async fn`, a call starts when its future is first polled.
///
/// **Cancel-safe.** Dropping the future (a `tokio::time::timeout`, a `select!`, a client that
/// went away) cancels the operation through the options' [`CancelToken`](crate::CancelToken)
/// (a fresh one when the options have none; give each call its own token, as dropping
/// cancels it): a restore keeps the old data, a save the old file and no temporary file.
/// The drop returns once the blocking task has stopped (diesel-async waits for it), so the
/// connection goes back to its pool usable, with no transaction open. An operation that
/// already finished when its future is dropped stays done.
///
/// **Runtime shutdown** while a save or restore runs cancels it the same way: no panic, no
/// torn file, and no temporary file once the blocking task has ended.
///
/// On a current-thread runtime, where diesel-async's wait (`block_in_place`) would panic,
/// the drop parks the thread until the cancelled task has ended (at its next step), so the
/// connection goes back to its pool as on a multi-threaded one. (diesel-async's own queries,
/// dropped there, still panic.)
///
/// The `_with` methods take a function that makes the options on the blocking thread, so a
/// progress callback need not be `Send`; it must be `'static`.
///
/// # Errors
/// Those of the [`BackupExt`] call, and [`BackupError::Init`] when the blocking task could
/// not run (the runtime is shutting down) or panicked.
///
/// ```
/// use diesel_async::pooled_connection::deadpool::Pool;
/// use diesel_async::SimpleAsyncConnection;
/// use diesel_sqlite_backup::{AsyncBackupExt, MemoryDatabase};
///
/// # #[tokio::main(flavor = "multi_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let pool = Pool::builder(MemoryDatabase::new()?.async_manager()).build()?;
/// let mut conn = pool.get().await?;
/// conn.batch_execute("CREATE TABLE t(x)").await?;
/// conn.save_as(dir.path().join("doc.db")).await?;
/// conn.restore_from(dir.path().join("doc.db")).await?;
/// # Ok(())
/// # }
/// ```
pub trait AsyncBackupExt {
    /// [`BackupExt::save_as`], on the blocking pool.
    ///
    /// ```
    /// # use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    /// # use diesel_sqlite_backup::{AsyncBackupExt, AsyncSqliteConnection};
    /// # #[tokio::main(flavor = "multi_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let mut conn = AsyncSqliteConnection::establish(":memory:").await?;
    /// conn.batch_execute("CREATE TABLE t(x)").await?;
    /// conn.save_as(dir.path().join("doc.db")).await?;
    /// # Ok(())
    /// # }
    /// ```
    fn save_as(
        &mut self,
        path: impl AsRef<Path>,
    ) -> impl Future<Output = Result<(), BackupError>> + Send;

    /// [`BackupExt::save_as_with`] with the options `options()` makes on the blocking thread.
    ///
    /// ```
    /// # use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    /// # use diesel_sqlite_backup::{AsyncBackupExt, AsyncSqliteConnection, BackupOptions};
    /// # #[tokio::main(flavor = "multi_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let mut conn = AsyncSqliteConnection::establish(":memory:").await?;
    /// # conn.batch_execute("CREATE TABLE t(x)").await?;
    /// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    /// conn.save_as_with(dir.path().join("doc.db"), move || {
    ///     BackupOptions::default().pages_per_step(1).on_progress(move |p| {
    ///         let _ = tx.send(p.remaining);
    ///     })
    /// })
    /// .await?;
    /// let mut last = None;
    /// while let Some(remaining) = rx.recv().await {
    ///     last = Some(remaining); // the channel closes with the options
    /// }
    /// assert_eq!(last, Some(0));
    /// # Ok(())
    /// # }
    /// ```
    fn save_as_with(
        &mut self,
        path: impl AsRef<Path>,
        options: impl FnOnce() -> BackupOptions<'static> + Send + 'static,
    ) -> impl Future<Output = Result<(), BackupError>> + Send;

    /// [`BackupExt::restore_from`], on the blocking pool.
    ///
    /// ```
    /// # use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    /// # use diesel_sqlite_backup::{AsyncBackupExt, AsyncSqliteConnection};
    /// # #[tokio::main(flavor = "multi_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let file = dir.path().join("doc.db");
    /// # let mut conn = AsyncSqliteConnection::establish(":memory:").await?;
    /// # conn.batch_execute("CREATE TABLE t(x)").await?;
    /// # conn.save_as(&file).await?;
    /// let mut other = AsyncSqliteConnection::establish(":memory:").await?;
    /// other.restore_from(&file).await?;
    /// other.batch_execute("SELECT x FROM t").await?;
    /// # Ok(())
    /// # }
    /// ```
    fn restore_from(
        &mut self,
        path: impl AsRef<Path>,
    ) -> impl Future<Output = Result<(), BackupError>> + Send;

    /// [`BackupExt::restore_from_with`] with the options `options()` makes on the blocking
    /// thread.
    ///
    /// ```
    /// # use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    /// # use diesel_sqlite_backup::{AsyncBackupExt, AsyncSqliteConnection, BackupOptions};
    /// # #[tokio::main(flavor = "multi_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let file = dir.path().join("doc.db");
    /// # let mut conn = AsyncSqliteConnection::establish(":memory:").await?;
    /// # conn.batch_execute("CREATE TABLE t(x)").await?;
    /// # conn.save_as(&file).await?;
    /// conn.restore_from_with(&file, || BackupOptions::default().verify_integrity(true))
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    fn restore_from_with(
        &mut self,
        path: impl AsRef<Path>,
        options: impl FnOnce() -> BackupOptions<'static> + Send + 'static,
    ) -> impl Future<Output = Result<(), BackupError>> + Send;

    /// [`BackupExt::snapshot`], on the blocking pool.
    ///
    /// ```
    /// # use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    /// # use diesel_sqlite_backup::{AsyncBackupExt, AsyncSqliteConnection};
    /// # #[tokio::main(flavor = "multi_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut conn = AsyncSqliteConnection::establish(":memory:").await?;
    /// conn.batch_execute("CREATE TABLE t(x)").await?;
    /// let snapshot = conn.snapshot().await?;
    /// assert!(snapshot.starts_with(b"SQLite format 3\0"));
    /// # Ok(())
    /// # }
    /// ```
    fn snapshot(&mut self) -> impl Future<Output = Result<Snapshot, BackupError>> + Send;

    /// [`BackupExt::snapshot_with`] with the options `options()` makes on the blocking
    /// thread.
    ///
    /// ```
    /// # use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    /// # use diesel_sqlite_backup::{AsyncBackupExt, AsyncSqliteConnection, BackupOptions};
    /// # #[tokio::main(flavor = "multi_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = AsyncSqliteConnection::establish(":memory:").await?;
    /// conn.batch_execute("CREATE TABLE t(x)").await?;
    /// let snapshot = conn.snapshot_with(|| BackupOptions::default().pages_per_step(8)).await?;
    /// # drop(snapshot);
    /// # Ok(())
    /// # }
    /// ```
    fn snapshot_with(
        &mut self,
        options: impl FnOnce() -> BackupOptions<'static> + Send + 'static,
    ) -> impl Future<Output = Result<Snapshot, BackupError>> + Send;

    /// [`BackupExt::restore_from_bytes`], on the blocking pool. `bytes` is moved there: a
    /// [`Snapshot`], a `Vec<u8>`, an `Arc<[u8]>`.
    ///
    /// ```
    /// # use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    /// # use diesel_sqlite_backup::{AsyncBackupExt, AsyncSqliteConnection};
    /// # #[tokio::main(flavor = "multi_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = AsyncSqliteConnection::establish(":memory:").await?;
    /// conn.batch_execute("CREATE TABLE t(x)").await?;
    /// let snapshot = conn.snapshot().await?;
    /// let mut other = AsyncSqliteConnection::establish(":memory:").await?;
    /// other.restore_from_bytes(snapshot).await?;
    /// other.batch_execute("SELECT x FROM t").await?;
    /// # Ok(())
    /// # }
    /// ```
    fn restore_from_bytes(
        &mut self,
        bytes: impl AsRef<[u8]> + Send + 'static,
    ) -> impl Future<Output = Result<(), BackupError>> + Send;

    /// [`BackupExt::restore_from_bytes_with`] with the options `options()` makes on the
    /// blocking thread.
    ///
    /// ```
    /// # use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    /// # use diesel_sqlite_backup::{AsyncBackupExt, AsyncSqliteConnection, BackupOptions};
    /// # #[tokio::main(flavor = "multi_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut conn = AsyncSqliteConnection::establish(":memory:").await?;
    /// # conn.batch_execute("CREATE TABLE t(x)").await?;
    /// let bytes = conn.snapshot().await?.into_vec();
    /// conn.restore_from_bytes_with(bytes, || BackupOptions::default().timeout(std::time::Duration::from_secs(1)))
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    fn restore_from_bytes_with(
        &mut self,
        bytes: impl AsRef<[u8]> + Send + 'static,
        options: impl FnOnce() -> BackupOptions<'static> + Send + 'static,
    ) -> impl Future<Output = Result<(), BackupError>> + Send;
}

impl AsyncBackupExt for AsyncSqliteConnection {
    fn save_as(
        &mut self,
        path: impl AsRef<Path>,
    ) -> impl Future<Output = Result<(), BackupError>> + Send {
        self.save_as_with(path, BackupOptions::default)
    }

    fn save_as_with(
        &mut self,
        path: impl AsRef<Path>,
        options: impl FnOnce() -> BackupOptions<'static> + Send + 'static,
    ) -> impl Future<Output = Result<(), BackupError>> + Send {
        let path = path.as_ref().to_path_buf();
        let named = (Operation::Save, path.clone());
        on_blocking_pool(self, named, options, move |conn, o| {
            conn.save_as_with(&path, o)
        })
    }

    fn restore_from(
        &mut self,
        path: impl AsRef<Path>,
    ) -> impl Future<Output = Result<(), BackupError>> + Send {
        self.restore_from_with(path, BackupOptions::default)
    }

    fn restore_from_with(
        &mut self,
        path: impl AsRef<Path>,
        options: impl FnOnce() -> BackupOptions<'static> + Send + 'static,
    ) -> impl Future<Output = Result<(), BackupError>> + Send {
        let path = path.as_ref().to_path_buf();
        let named = (Operation::Restore, path.clone());
        on_blocking_pool(self, named, options, move |conn, o| {
            conn.restore_from_with(&path, o)
        })
    }

    fn snapshot(&mut self) -> impl Future<Output = Result<Snapshot, BackupError>> + Send {
        self.snapshot_with(BackupOptions::default)
    }

    fn snapshot_with(
        &mut self,
        options: impl FnOnce() -> BackupOptions<'static> + Send + 'static,
    ) -> impl Future<Output = Result<Snapshot, BackupError>> + Send {
        let named = (Operation::Snapshot, PathBuf::new());
        on_blocking_pool(self, named, options, |conn, o| conn.snapshot_with(o))
    }

    fn restore_from_bytes(
        &mut self,
        bytes: impl AsRef<[u8]> + Send + 'static,
    ) -> impl Future<Output = Result<(), BackupError>> + Send {
        self.restore_from_bytes_with(bytes, BackupOptions::default)
    }

    fn restore_from_bytes_with(
        &mut self,
        bytes: impl AsRef<[u8]> + Send + 'static,
        options: impl FnOnce() -> BackupOptions<'static> + Send + 'static,
    ) -> impl Future<Output = Result<(), BackupError>> + Send {
        let named = (Operation::Restore, PathBuf::new());
        on_blocking_pool(self, named, options, move |conn, o| {
            conn.restore_from_bytes_with(bytes.as_ref(), o)
        })
    }
}
