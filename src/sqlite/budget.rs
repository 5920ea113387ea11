//! One time budget per call, shared by every phase that can wait for a lock, and the busy
//! handler that draws on it from inside SQLite.
//!
//! Waiting inside SQLite's busy handler, rather than failing the step and retrying from
//! outside, is what lets a copy into a busy database get through. A write into memdb first
//! takes RESERVED, which turns away new readers, then waits for the readers already in to
//! leave before it takes EXCLUSIVE. SQLite calls the busy handler while it holds RESERVED; a
//! step that fails instead lets go of RESERVED, and readers in tight loops get back in first.

use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use libsqlite3_sys as ffi;

use crate::error::{BackupError, BusyReason, Operation, SqliteFailure};
use crate::sqlite::DbRef;

/// First wait after a busy lock; doubled on each further try up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_micros(200);
/// Short enough to catch the gaps between a busy writer's transactions.
const MAX_BACKOFF: Duration = Duration::from_millis(8);

/// Cancels a running backup from another thread or from its own progress callback.
///
/// Pass a clone to [`BackupOptions::cancel_token`](crate::BackupOptions::cancel_token) and
/// call [`cancel`](Self::cancel) whenever you like. The backup stops at its next step or lock
/// wait and returns [`BackupError::Cancelled`]: a cancelled restore leaves the old data, a
/// cancelled save leaves the old file and no temporary file.
///
/// ```
/// use diesel::RunQueryDsl;
/// use diesel_sqlite_backup::{memory_pool, BackupError, BackupExt, BackupOptions, CancelToken};
///
/// let pool = memory_pool()?;
/// let mut conn = pool.get()?;
/// diesel::sql_query("CREATE TABLE t(x)").execute(&mut conn)?;
/// diesel::sql_query(
///     "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
///      INSERT INTO t SELECT randomblob(1000) FROM n",
/// )
/// .execute(&mut conn)?;
/// let dir = tempfile::tempdir()?;
/// let token = CancelToken::new();
/// let in_callback = token.clone();
/// let options = BackupOptions::default()
///     .pages_per_step(1)
///     .cancel_token(&token)
///     .on_progress(move |_| in_callback.cancel());
/// let result = conn.save_as_with(dir.path().join("never.db"), options);
/// assert!(matches!(result, Err(BackupError::Cancelled { .. })));
/// assert!(!dir.path().join("never.db").exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every backup holding this token to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// True once [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The time one call may spend, counted from its start, and the time it really spent waiting.
pub(crate) struct Budget {
    op: Operation,
    deadline: Option<Instant>,
    waited: Cell<Duration>,
    cancel: Option<CancelToken>,
    /// The database whose busy handler gave up last, to name it in the error.
    busy_at: RefCell<Option<PathBuf>>,
}

impl Budget {
    pub(crate) fn new(op: Operation, timeout: Duration, cancel: Option<CancelToken>) -> Self {
        Budget {
            op,
            deadline: Instant::now().checked_add(timeout),
            waited: Cell::new(Duration::ZERO),
            cancel,
            busy_at: RefCell::new(None),
        }
    }

    pub(crate) fn op(&self) -> Operation {
        self.op
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(CancelToken::is_cancelled)
    }

    pub(crate) fn is_spent(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Sleeps before try number `attempt` (0-based) of a busy lock, counting the sleep as
    /// waited. False, without sleeping, once the budget is spent or the call cancelled.
    pub(crate) fn wait(&self, attempt: u32) -> bool {
        if self.is_cancelled() {
            return false;
        }
        let now = Instant::now();
        let left = match self.deadline {
            Some(d) if now >= d => return false,
            Some(d) => d - now,
            None => MAX_BACKOFF,
        };
        let backoff = MIN_BACKOFF
            .saturating_mul(1 << attempt.min(6))
            .min(MAX_BACKOFF);
        thread::sleep(backoff.min(left));
        let slept = now.elapsed();
        self.waited.set(self.waited.get() + slept);
        tracing::trace!(
            op = %self.op,
            attempt,
            slept_us = slept.as_micros() as u64,
            waited_us = self.waited.get().as_micros() as u64,
            "waited for a busy lock"
        );
        true
    }

    /// [`wait`](Self::wait), remembering `path()` as the busy database when it gives up.
    pub(crate) fn wait_for(&self, attempt: u32, path: impl FnOnce() -> PathBuf) -> bool {
        let again = self.wait(attempt);
        if !again {
            let path = path();
            tracing::debug!(op = %self.op, path = %path.display(),
                waited_us = self.waited.get().as_micros() as u64,
                "a lock stayed busy: the budget is spent or the call cancelled");
            self.busy_at.replace(Some(path));
        }
        again
    }

    /// The error for a lock that stayed busy, or for a cancelled call. It names the database
    /// whose busy handler gave up, or else `path`.
    pub(crate) fn gave_up(&self, path: &Path, failure: SqliteFailure) -> BackupError {
        self.gave_up_because(path, BusyReason::Locked(failure))
    }

    /// [`Self::gave_up`] for a condition of the crate's own that SQLite never reported.
    pub(crate) fn gave_up_because(&self, path: &Path, reason: BusyReason) -> BackupError {
        if self.is_cancelled() {
            return self.cancelled(path);
        }
        let busy = self.busy_at.take().unwrap_or_else(|| path.to_path_buf());
        BackupError::Busy {
            op: self.op,
            path: busy,
            waited: self.waited.get(),
            reason,
        }
    }

    /// A failure of a phase that waited within this budget: Busy when it was a lock.
    pub(crate) fn failed(&self, path: &Path, failure: SqliteFailure) -> BackupError {
        if is_busy(&failure) {
            return self.gave_up(path, failure);
        }
        BackupError::sqlite(self.op, path, failure)
    }

    pub(crate) fn cancelled(&self, path: &Path) -> BackupError {
        BackupError::Cancelled {
            op: self.op,
            path: path.to_path_buf(),
        }
    }
}

pub(crate) fn is_busy(failure: &SqliteFailure) -> bool {
    matches!(failure.code, ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED)
}

/// Replaces a connection's busy handler with one that waits within `budget`, for as long as
/// the guard lives; the connection's previous `busy_timeout` comes back on drop (none where it
/// was 0). A custom handler installed with `sqlite3_busy_handler` by other code is not restored:
/// SQLite gives no way to read one back.
pub(crate) struct BudgetedBusyHandler<'d, 'a> {
    db: &'d DbRef<'a>,
    previous_ms: i32,
    // Boxed so that the address SQLite holds stays put while the guard moves.
    _context: Box<HandlerContext>,
}

struct HandlerContext {
    budget: *const Budget,
    path: PathBuf,
}

impl<'d, 'a> BudgetedBusyHandler<'d, 'a> {
    /// Installs the handler on `db`, whose database `path` names in errors.
    pub(crate) fn install(db: &'d DbRef<'a>, budget: &'d Budget, path: &Path) -> Self {
        let previous_ms = db
            .query_i64("PRAGMA busy_timeout")
            .map_or(0, |ms| ms.clamp(0, i32::MAX as i64) as i32);
        let context = Box::new(HandlerContext {
            budget,
            path: path.to_path_buf(),
        });
        // SAFETY: open handle. The argument points at the boxed context, which lives as long
        // as this guard; the budget it points to outlives the guard ('d). The guard removes
        // the handler (busy_timeout replaces it) before either goes away.
        unsafe {
            ffi::sqlite3_busy_handler(
                db.as_ptr(),
                Some(on_busy),
                (&*context as *const HandlerContext).cast_mut().cast(),
            )
        };
        BudgetedBusyHandler {
            db,
            previous_ms,
            _context: context,
        }
    }
}

impl Drop for BudgetedBusyHandler<'_, '_> {
    fn drop(&mut self) {
        // 0 removes the handler: the connection gives up at once again, as before the call.
        self.db.set_busy_timeout(self.previous_ms);
    }
}

/// SQLite's busy callback: 1 to try the lock again, 0 to give up with SQLITE_BUSY.
unsafe extern "C" fn on_busy(context: *mut c_void, attempt: c_int) -> c_int {
    // SAFETY: `context` is the boxed context installed by BudgetedBusyHandler, alive while
    // the handler is installed, and its budget outlives it. SQLite calls the handler on the
    // thread using the connection, which is the thread that owns the budget (a Budget is not
    // Sync and never leaves it). No reference is held across the budget's own borrows.
    let (context, budget) = unsafe {
        let context = &*context.cast::<HandlerContext>();
        (context, &*context.budget)
    };
    c_int::from(budget.wait_for(attempt.max(0) as u32, || context.path.clone()))
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
