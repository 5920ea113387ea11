//! The pool manager: one in-memory database shared by every connection of an r2d2 pool.

mod manager;

pub use manager::{SingletonManager, DEFAULT_BUSY_TIMEOUT};

/// A pool pinned to one fresh in-memory database, like SQLAlchemy's `SingletonThreadPool`:
/// `max_size` is 1, so every thread shares one connection, one at a time.
///
/// **Re-entrancy pitfall:** a thread that calls `pool.get()` while it still holds the first
/// connection waits for the pool's `connection_timeout` (30 s by default) and then gets an
/// error, because the only connection is its own. Pass the connection you hold down the call
/// chain instead, or build a larger pool yourself:
/// `r2d2::Pool::builder().max_size(4).build(SingletonManager::new())`.
///
/// ```
/// use diesel::RunQueryDsl;
/// use diesel_sqlite_backup::memory_pool;
///
/// let pool = memory_pool()?;
/// diesel::sql_query("CREATE TABLE t(x)").execute(&mut pool.get()?)?;
/// let handle = std::thread::spawn({
///     let pool = pool.clone();
///     move || diesel::sql_query("INSERT INTO t VALUES (1)").execute(&mut pool.get().unwrap())
/// });
/// handle.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn memory_pool() -> Result<r2d2::Pool<SingletonManager>, r2d2::Error> {
    r2d2::Pool::builder()
        .max_size(1)
        .build(SingletonManager::new())
}
