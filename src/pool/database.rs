//! [`MemoryDatabase`]: the shared in-memory database as a value, for any pool or none.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::{Connection, ConnectionError, ConnectionResult, QueryResult, SqliteConnection};

use super::DEFAULT_BUSY_TIMEOUT;
use crate::error::{BackupError, Operation, SqliteFailure};
use crate::sqlite::{memdb, OwnedDb};

/// One in-memory database that every connection from [`connect`](Self::connect), in any
/// thread, shares: the database of a [`SingletonManager`](crate::SingletonManager) pool, as a
/// value any pool (r2d2, deadpool, bb8) or plain code can open connections to.
///
/// Clones are cheap handles to the same database. The database lives while any clone, any
/// [`SingletonManager`](crate::SingletonManager) made [`from_database`](crate::SingletonManager::from_database)
/// it, or any connection to it lives, and its memory is freed when the last of them goes.
/// Everything the crate does for a pool's database (incremental saves, the fast Open,
/// [`Autosave`](crate::Autosave)) holds for connections from `connect`.
///
/// ```
/// use diesel::RunQueryDsl;
/// use diesel_sqlite_backup::{MemoryDatabase, SingletonManager};
///
/// let db = MemoryDatabase::new()?;
/// let mut conn = db.connect()?;
/// diesel::sql_query("CREATE TABLE t(x)").execute(&mut conn)?;
/// // An r2d2 pool on the same database sees the table.
/// let pool = SingletonManager::pool_builder(4).build(SingletonManager::from_database(db.clone()))?;
/// diesel::sql_query("INSERT INTO t VALUES (1)").execute(&mut pool.get()?)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct MemoryDatabase {
    shared: Arc<Shared>,
    busy_timeout: Duration,
}

struct Shared {
    uri: String,
    keeper: Mutex<Keeper>,
}

/// A private connection that keeps the database alive (memdb frees a database when its last
/// connection closes) and is never handed out; opened at once by [`MemoryDatabase::new`],
/// on first connect for a [`SingletonManager::new`](crate::SingletonManager::new), whose
/// constructor cannot fail.
struct Keeper {
    db: Option<OwnedDb>,
    size_limit: Option<u64>,
}

impl MemoryDatabase {
    /// A fresh, empty in-memory database that nothing else in the process can see.
    ///
    /// # Errors
    /// [`BackupError::Sqlite`] if SQLite cannot open it (out of memory).
    ///
    /// ```
    /// let db = diesel_sqlite_backup::MemoryDatabase::new()?;
    /// assert!(db.uri().starts_with("file:/"));
    /// # Ok::<(), diesel_sqlite_backup::BackupError>(())
    /// ```
    pub fn new() -> Result<MemoryDatabase, BackupError> {
        let db = Self::unopened();
        db.ensure_keeper().map_err(|failure| BackupError::Sqlite {
            op: Operation::Connect,
            path: PathBuf::from(db.uri()),
            failure,
        })?;
        Ok(db)
    }

    /// A database whose keeper opens on first use.
    pub(crate) fn unopened() -> MemoryDatabase {
        MemoryDatabase {
            shared: Arc::new(Shared {
                uri: memdb::unique_uri("pool"),
                keeper: Mutex::new(Keeper {
                    db: None,
                    size_limit: None,
                }),
            }),
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
        }
    }

    /// The SQLite URI of the database. Any connection of this process opened on it shares
    /// the database (it names the crate's memdb VFS), but only [`connect`](Self::connect)
    /// also applies the set-up (the busy timeout).
    ///
    /// ```
    /// use diesel::{Connection, RunQueryDsl, SqliteConnection};
    ///
    /// let db = diesel_sqlite_backup::MemoryDatabase::new()?;
    /// diesel::sql_query("CREATE TABLE t(x)").execute(&mut db.connect()?)?;
    /// let mut plain = SqliteConnection::establish(db.uri())?;
    /// diesel::sql_query("SELECT x FROM t").execute(&mut plain)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn uri(&self) -> &str {
        &self.shared.uri
    }

    /// Opens a connection to the database, set up exactly as a
    /// [`SingletonManager`](crate::SingletonManager)'s are (see [`set_up`](Self::set_up)).
    /// The connection keeps the database alive even when every `MemoryDatabase` is gone.
    ///
    /// ```
    /// use diesel::RunQueryDsl;
    /// use diesel_sqlite_backup::{BackupExt, MemoryDatabase};
    ///
    /// let db = MemoryDatabase::new()?;
    /// let mut conn = db.connect()?;
    /// diesel::sql_query("CREATE TABLE t(x)").execute(&mut conn)?;
    /// let snapshot = conn.snapshot()?;
    /// assert!(!snapshot.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(&self) -> ConnectionResult<SqliteConnection> {
        self.ensure_keeper()
            .map_err(|f| ConnectionError::BadConnection(f.to_string()))?;
        let mut conn = SqliteConnection::establish(self.uri())?;
        self.set_up(&mut conn)
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
        Ok(conn)
    }

    /// Applies the set-up every connection of the crate's pools gets to `conn`, a connection
    /// opened on [`uri`](Self::uri) by other means (a pool that only takes a URL): the busy
    /// timeout (`PRAGMA busy_timeout`, [`DEFAULT_BUSY_TIMEOUT`] unless
    /// [`busy_timeout`](Self::busy_timeout) says otherwise). It reads nothing, so it never
    /// waits for a lock.
    ///
    /// ```
    /// use diesel::{Connection, SqliteConnection};
    ///
    /// let db = diesel_sqlite_backup::MemoryDatabase::new()?;
    /// let mut conn = SqliteConnection::establish(db.uri())?;
    /// db.set_up(&mut conn)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_up(&self, conn: &mut SqliteConnection) -> QueryResult<()> {
        let ms = self.busy_timeout.as_millis().min(i32::MAX as u128);
        conn.batch_execute(&format!("PRAGMA busy_timeout = {ms}"))
    }

    /// Sets how long connections from this handle ([`connect`](Self::connect), and the
    /// managers made from it afterwards) wait for a lock another connection holds. Other
    /// clones keep theirs. Default: [`DEFAULT_BUSY_TIMEOUT`].
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let db = diesel_sqlite_backup::MemoryDatabase::new()?.busy_timeout(Duration::from_secs(1));
    /// # drop(db);
    /// # Ok::<(), diesel_sqlite_backup::BackupError>(())
    /// ```
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    pub(crate) fn busy_timeout_value(&self) -> Duration {
        self.busy_timeout
    }

    /// Caps the database at `bytes` (`None`: no cap), for every connection to it.
    pub(crate) fn set_size_limit(&self, bytes: Option<u64>) {
        let mut keeper = self.keeper();
        keeper.size_limit = bytes;
        if let Some(db) = &keeper.db {
            let limit = bytes.map_or(i64::MAX, |l| l.min(i64::MAX as u64) as i64);
            db.db().set_memdb_size_limit(c"main", limit);
        }
    }

    pub(crate) fn size_limit(&self) -> Option<u64> {
        self.keeper().size_limit
    }

    /// Opens the keeper unless it is open.
    pub(crate) fn ensure_keeper(&self) -> Result<(), SqliteFailure> {
        let mut keeper = self.keeper();
        if keeper.db.is_none() {
            keeper.db = Some(memdb::open_keeper(self.uri(), keeper.size_limit)?);
        }
        Ok(())
    }

    fn keeper(&self) -> std::sync::MutexGuard<'_, Keeper> {
        self.shared
            .keeper
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl fmt::Debug for MemoryDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryDatabase")
            .field("uri", &self.uri())
            .field("busy_timeout", &self.busy_timeout)
            .finish_non_exhaustive()
    }
}
