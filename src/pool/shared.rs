//! What every pool the crate builds shares: one scheduler thread pool, no reaper, and a loud
//! answer to a thread that waits for a connection it holds itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, ThreadId};
use std::time::Duration;

use r2d2::event::{CheckinEvent, CheckoutEvent, TimeoutEvent};
use r2d2::HandleEvent;
use scheduled_thread_pool::ScheduledThreadPool;

use super::SingletonManager;

/// Threads in [`shared_thread_pool`]: r2d2 uses them only to open connections in the
/// background (and for its reaper, which the crate's pools do not run).
const SHARED_THREADS: usize = 2;

/// How long a checkout from [`memory_pool`](crate::memory_pool) waits before it fails.
pub const DEFAULT_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);

static SHARED: OnceLock<Arc<ScheduledThreadPool>> = OnceLock::new();

/// The one scheduler thread pool that every pool this crate builds uses, started on first use.
///
/// r2d2 gives each pool built without [`r2d2::Builder::thread_pool`] three threads of its own,
/// which outlive the pool until its reaper next runs (up to 30 s): a test suite that builds a
/// pool per test runs out of threads. Pass this one to pools you build yourself, and turn the
/// reaper off (a [`SingletonManager`]'s database outlives its connections, so recycling them
/// gains nothing), and a dropped pool leaves nothing running. A [`SingletonManager`] never
/// waits for its database's lock while it connects, so a locked pool cannot hold these threads
/// (a manager of another kind that waits in `connect` can):
///
/// ```
/// use diesel_sqlite_backup::{shared_thread_pool, SingletonManager};
///
/// let pool = r2d2::Pool::builder()
///     .max_size(4)
///     .thread_pool(shared_thread_pool())
///     .idle_timeout(None)
///     .max_lifetime(None)
///     .build(SingletonManager::new())?;
/// # drop(pool);
/// # Ok::<(), r2d2::Error>(())
/// ```
pub fn shared_thread_pool() -> Arc<ScheduledThreadPool> {
    SHARED
        .get_or_init(|| {
            Arc::new(
                ScheduledThreadPool::builder()
                    .num_threads(SHARED_THREADS)
                    .thread_name_pattern("diesel-sqlite-backup-pool-{}")
                    .build(),
            )
        })
        .clone()
}

/// The builder behind [`memory_pool`](crate::memory_pool) and `Template::pool`.
pub(crate) fn build(max_size: u32) -> Result<r2d2::Pool<SingletonManager>, r2d2::Error> {
    SingletonManager::pool_builder(max_size).build(SingletonManager::new())
}

impl SingletonManager {
    /// An r2d2 builder with the set-up of the crate's own pools, for a pool of `max_size`
    /// connections: the [`shared_thread_pool`], no reaper (no idle timeout, no max lifetime),
    /// [`DEFAULT_CHECKOUT_TIMEOUT`], and a [`ReentrancyCheck`] sized to the pool. Change what
    /// you like before `build`, but not `max_size` (the check is sized to this one).
    ///
    /// ```
    /// use diesel_sqlite_backup::{MemoryDatabase, SingletonManager};
    ///
    /// let db = MemoryDatabase::new()?;
    /// let pool = SingletonManager::pool_builder(8).build(SingletonManager::from_database(db))?;
    /// let (_a, _b) = (pool.get()?, pool.get()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pool_builder(max_size: u32) -> r2d2::Builder<SingletonManager> {
        r2d2::Pool::builder()
            .max_size(max_size)
            .thread_pool(shared_thread_pool())
            .idle_timeout(None)
            .max_lifetime(None)
            .connection_timeout(DEFAULT_CHECKOUT_TIMEOUT)
            .event_handler(Box::new(ReentrancyCheck::new(max_size)))
    }
}

/// An r2d2 event handler that explains a checkout that timed out because the waiting thread
/// itself checked out every connection of the pool and has returned none: the usual cause
/// is a thread calling `pool.get()` while it still holds the connection it got earlier, which
/// can never succeed on a one-connection pool.
///
/// r2d2 offers no hook before `get` starts waiting, and cannot see a connection handed to
/// another thread, so this neither fails sooner nor changes the result: `get()` still returns
/// r2d2's `Err` at the pool's `connection_timeout`. It gives one line that names the likely
/// cause and the fix (a `tracing` error event, or standard error when no `tracing`
/// subscriber is installed), so the reason shows up within that timeout
/// ([`DEFAULT_CHECKOUT_TIMEOUT`] for [`memory_pool`](crate::memory_pool)) instead of after
/// 30 s of silence. A thread that handed its connection to another thread and is waiting for
/// it to come back gets the same line; the "if" in it is for that case.
///
/// ```
/// use diesel_sqlite_backup::{ReentrancyCheck, SingletonManager};
///
/// let pool = r2d2::Pool::builder()
///     .max_size(2)
///     .event_handler(Box::new(ReentrancyCheck::new(2)))
///     .build(SingletonManager::new())?;
/// let (_a, _b) = (pool.get()?, pool.get()?);
/// assert!(pool.get_timeout(std::time::Duration::from_millis(10)).is_err());
/// # Ok::<(), r2d2::Error>(())
/// ```
#[derive(Debug)]
pub struct ReentrancyCheck {
    max_size: u32,
    holders: Mutex<HashMap<u64, ThreadId>>,
}

impl ReentrancyCheck {
    /// A check for a pool built with `max_size`.
    pub fn new(max_size: u32) -> Self {
        ReentrancyCheck {
            max_size,
            holders: Mutex::new(HashMap::new()),
        }
    }

    /// The explanation for a checkout of `waited` that timed out on this thread, when this
    /// thread checked out every connection and returned none.
    fn explanation(&self, waited: Duration) -> Option<String> {
        let me = thread::current().id();
        let held = self.holders().values().filter(|t| **t == me).count();
        (held as u32 >= self.max_size).then(|| {
            format!(
                "diesel-sqlite-backup: pool.get() gave up after {waited:?}: this thread \
                 checked out all {} of the pool's connections and returned none. If it still \
                 holds one, get() can never succeed: pass the connection you hold down the \
                 call chain instead of calling get() again, or build the pool with a larger \
                 max_size.",
                self.max_size
            )
        })
    }

    fn holders(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ThreadId>> {
        self.holders.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl HandleEvent for ReentrancyCheck {
    fn handle_checkout(&self, event: CheckoutEvent) {
        self.holders()
            .insert(event.connection_id(), thread::current().id());
    }

    fn handle_checkin(&self, event: CheckinEvent) {
        self.holders().remove(&event.connection_id());
    }

    fn handle_timeout(&self, event: TimeoutEvent) {
        if let Some(explanation) = self.explanation(event.timeout()) {
            if crate::observe::listening() {
                tracing::error!("{explanation}");
            } else {
                eprintln!("{explanation}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The explanation is given exactly when this thread checked out every connection and
    /// returned none, and not for another thread's wait.
    #[test]
    fn explains_only_a_thread_holding_every_connection() {
        let check = ReentrancyCheck::new(1);
        let wait = Duration::from_secs(5);
        assert_eq!(check.explanation(wait), None);
        check.holders().insert(7, thread::current().id());
        let text = check.explanation(wait).expect("explained");
        assert!(text.contains("checked out all 1"), "{text}");
        let elsewhere = {
            let check = &check;
            thread::scope(|s| s.spawn(move || check.explanation(wait)).join().unwrap())
        };
        assert_eq!(elsewhere, None);
        check.holders().remove(&7);
        assert_eq!(check.explanation(wait), None);
    }
}
