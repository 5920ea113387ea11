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
/// gains nothing), and a dropped pool leaves nothing running:
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

/// The builder behind [`memory_pool`](crate::memory_pool) and `Template::pool`: the shared
/// thread pool, no reaper, [`DEFAULT_CHECKOUT_TIMEOUT`], and [`ReentrancyCheck`].
pub(crate) fn build(max_size: u32) -> Result<r2d2::Pool<SingletonManager>, r2d2::Error> {
    r2d2::Pool::builder()
        .max_size(max_size)
        .thread_pool(shared_thread_pool())
        .idle_timeout(None)
        .max_lifetime(None)
        .connection_timeout(DEFAULT_CHECKOUT_TIMEOUT)
        .event_handler(Box::new(
            ReentrancyCheck::new(max_size).checkout_timeout(DEFAULT_CHECKOUT_TIMEOUT),
        ))
        .build(SingletonManager::new())
}

/// An r2d2 event handler that turns a checkout that can never succeed into a panic that says
/// why: when `pool.get()` times out on a thread that itself holds every connection of the
/// pool, no other thread can give one back. r2d2 offers no hook before `get` starts waiting,
/// so this speaks at the checkout timeout, like `RefCell` does for a borrow it can never grant.
/// Only a plain `get()` (whose wait is the pool's `connection_timeout`, which you tell the
/// check with [`checkout_timeout`](Self::checkout_timeout)) panics; an explicit
/// `get_timeout(..)` gets its `Err` as usual.
///
/// ```
/// use diesel_sqlite_backup::{ReentrancyCheck, SingletonManager};
///
/// let pool = r2d2::Pool::builder()
///     .max_size(2)
///     .event_handler(Box::new(ReentrancyCheck::new(2)))
///     .build(SingletonManager::new())?;
/// let (_a, _b) = (pool.get()?, pool.get()?); // fine: the check only speaks on a timeout
/// # Ok::<(), r2d2::Error>(())
/// ```
#[derive(Debug)]
pub struct ReentrancyCheck {
    max_size: u32,
    checkout_timeout: Duration,
    holders: Mutex<HashMap<u64, ThreadId>>,
}

impl ReentrancyCheck {
    /// A check for a pool built with `max_size` and r2d2's default `connection_timeout`
    /// (30 s).
    pub fn new(max_size: u32) -> Self {
        ReentrancyCheck {
            max_size,
            checkout_timeout: Duration::from_secs(30),
            holders: Mutex::new(HashMap::new()),
        }
    }

    /// The pool's `connection_timeout`, when you set one: the wait of a plain `get()`.
    pub fn checkout_timeout(mut self, timeout: Duration) -> Self {
        self.checkout_timeout = timeout;
        self
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
        let me = thread::current().id();
        let held = self.holders().values().filter(|t| **t == me).count();
        if event.timeout() == self.checkout_timeout && held as u32 >= self.max_size {
            panic!(
                "diesel-sqlite-backup: pool.get() waited {:?} for a connection, but this \
                 thread already holds all {} of the pool's connections, so none can come \
                 back. Pass the connection you hold down the call chain instead of calling \
                 get() again, or build the pool with a larger max_size.",
                event.timeout(),
                self.max_size
            );
        }
    }
}
