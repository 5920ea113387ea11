//! The pool manager: one in-memory database shared by every connection of an r2d2 pool.

mod database;
mod manager;
mod shared;

pub use database::MemoryDatabase;
#[cfg(feature = "async")]
pub(crate) use manager::left_in_transaction;
pub use manager::{SingletonManager, DEFAULT_BUSY_TIMEOUT};
pub(crate) use shared::build;
pub use shared::{shared_thread_pool, ReentrancyCheck, DEFAULT_CHECKOUT_TIMEOUT};

/// A pool pinned to one fresh in-memory database, like SQLAlchemy's `SingletonThreadPool`:
/// `max_size` is 1, so every thread shares one connection, one at a time.
///
/// The pool runs no reaper and no threads of its own (it uses [`shared_thread_pool`]), so
/// dropping it leaves nothing behind, and a checkout waits at most
/// [`DEFAULT_CHECKOUT_TIMEOUT`].
///
/// **Re-entrancy pitfall:** a thread that calls `pool.get()` while it still holds the only
/// connection can never get one. After [`DEFAULT_CHECKOUT_TIMEOUT`] the call returns r2d2's
/// error and [`ReentrancyCheck`] gives a line that names the cause (a `tracing` error event,
/// or standard error without a subscriber). Pass
/// the connection you hold down the call chain instead, or build a larger pool with
/// [`SingletonManager::pool_builder`].
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
    build(1)
}
