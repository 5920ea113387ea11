//! [`SingletonManager`]: an r2d2 manager whose connections all share one in-memory database.

use std::fmt;
use std::time::Duration;

use diesel::r2d2::{Error, ManageConnection, R2D2Connection};
use diesel::{Connection, ConnectionError, SqliteConnection};

use super::MemoryDatabase;
use crate::sqlite;

/// How long a pooled connection waits for another one's lock before giving up.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// An [`r2d2::ManageConnection`] whose connections, on any thread, all see one in-memory
/// database that belongs to the manager.
///
/// The database (a [`MemoryDatabase`], see [`from_database`](Self::from_database)) lives as
/// long as the manager (so as long as the pool), or any connection to it, or any other
/// handle to it: r2d2 may close and reopen connections (`max_lifetime`, `idle_timeout`, broken
/// or invalid connections, `max_size > 1`) and no committed row is lost. Two managers never
/// share data unless made from one [`MemoryDatabase`]. Dropping the pool (and every other
/// handle) frees the memory.
///
/// Under the hood it is SQLite's `memdb` VFS with a process-unique name starting with `/`,
/// which SQLite shares between the connections of one process with ordinary locking (not
/// shared-cache mode). A private connection held by the database keeps it alive. memdb's
/// default 1 GiB cap is lifted; set one with [`SingletonManager::size_limit`].
///
/// ```
/// use diesel::RunQueryDsl;
/// use diesel_sqlite_backup::SingletonManager;
///
/// let pool = r2d2::Pool::builder()
///     .max_size(4)
///     .build(SingletonManager::new())?;
/// diesel::sql_query("CREATE TABLE t(x)").execute(&mut pool.get()?)?;
/// // Another connection of the same pool sees the table.
/// let (mut a, mut b) = (pool.get()?, pool.get()?);
/// diesel::sql_query("INSERT INTO t VALUES (1)").execute(&mut a)?;
/// diesel::sql_query("SELECT x FROM t").execute(&mut b)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SingletonManager {
    db: MemoryDatabase,
}

impl SingletonManager {
    /// A manager for a fresh, empty in-memory database no other manager can see.
    pub fn new() -> Self {
        SingletonManager {
            db: MemoryDatabase::unopened(),
        }
    }

    /// A manager whose connections open `db`, set up as [`MemoryDatabase::connect`] sets up
    /// its own: pools of every kind, and plain connections, can share one database.
    ///
    /// ```
    /// use diesel::RunQueryDsl;
    /// use diesel_sqlite_backup::{MemoryDatabase, SingletonManager};
    ///
    /// let db = MemoryDatabase::new()?;
    /// let pool = SingletonManager::pool_builder(2).build(SingletonManager::from_database(db.clone()))?;
    /// diesel::sql_query("CREATE TABLE t(x)").execute(&mut pool.get()?)?;
    /// diesel::sql_query("SELECT x FROM t").execute(&mut db.connect()?)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_database(db: MemoryDatabase) -> Self {
        SingletonManager { db }
    }

    /// The database this manager's connections open.
    ///
    /// ```
    /// use diesel_sqlite_backup::SingletonManager;
    ///
    /// let manager = SingletonManager::new();
    /// let uri = manager.uri().to_owned();
    /// assert_eq!(manager.database().uri(), uri);
    /// ```
    pub fn database(&self) -> &MemoryDatabase {
        &self.db
    }

    /// Sets how long each pooled connection waits for a lock another holds
    /// (`sqlite3_busy_timeout`). Default: [`DEFAULT_BUSY_TIMEOUT`].
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.db = self.db.busy_timeout(timeout);
        self
    }

    /// Caps the database at `bytes` (writes past it fail with `SQLITE_FULL`); `None`, the
    /// default, lets it grow as far as memory allows. The cap is the database's, so it holds
    /// for every connection to it, the manager's or not.
    pub fn size_limit(self, bytes: Option<u64>) -> Self {
        self.db.set_size_limit(bytes);
        self
    }

    /// The SQLite URI of the shared database, for opening extra connections to it in this
    /// process (for example with `diesel::SqliteConnection::establish`).
    pub fn uri(&self) -> &str {
        self.db.uri()
    }
}

impl Default for SingletonManager {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SingletonManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingletonManager")
            .field("uri", &self.uri())
            .field("busy_timeout", &self.db.busy_timeout_value())
            .field("size_limit", &self.db.size_limit())
            .finish()
    }
}

impl ManageConnection for SingletonManager {
    type Connection = SqliteConnection;
    type Error = Error;

    fn connect(&self) -> Result<SqliteConnection, Error> {
        self.db
            .ensure_keeper()
            .map_err(|f| Error::ConnectionError(ConnectionError::BadConnection(f.to_string())))?;
        let mut conn = SqliteConnection::establish(self.uri()).map_err(Error::ConnectionError)?;
        // r2d2 runs this on the scheduler every pool of the crate shares (two threads), so it
        // must never wait for this database's lock, or one locked pool would stall the
        // connects of all others: nothing here reads the database. The connection's first
        // statement loads the schema, in the thread that checked it out.
        self.db.set_up(&mut conn).map_err(Error::QueryError)?;
        Ok(conn)
    }

    /// An in-memory connection has no server to lose, and every connection is checked for
    /// open transactions when it comes back (`has_broken`), so checkout only confirms that
    /// Diesel's transaction manager is healthy: no query, no lock.
    fn is_valid(&self, conn: &mut SqliteConnection) -> Result<(), Error> {
        if conn.is_broken() {
            return Err(Error::QueryError(
                diesel::result::Error::BrokenTransactionManager,
            ));
        }
        Ok(())
    }

    /// A connection dropped during a panic, or returned inside a transaction (Diesel's or a
    /// raw `BEGIN`), is never handed out again.
    fn has_broken(&self, conn: &mut SqliteConnection) -> bool {
        std::thread::panicking() || conn.is_broken() || left_in_transaction(conn)
    }
}

/// True when a raw transaction is open; asks SQLite directly, so it never waits for a lock.
pub(crate) fn left_in_transaction(conn: &mut SqliteConnection) -> bool {
    !sqlite::raw_handle(conn).autocommit()
}
