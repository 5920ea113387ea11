//! The step loop shared by every entry point: deadline, busy backoff, restart fallback,
//! progress and pauses.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::handle::{RawBackup, StepOutcome};
use super::options::BackupOptions;
use crate::error::{BackupError, Operation, SqliteFailure};
use crate::raw::DbRef;

/// First wait after a busy step; doubled on each further busy step up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_micros(200);
/// Short enough to catch the gaps between a busy writer's transactions.
const MAX_BACKOFF: Duration = Duration::from_millis(8);

/// Runs `backup` to completion under `opts`.
///
/// - A busy or locked step is retried with exponential backoff until the deadline.
/// - A restart (a concurrent writer changed the source, so `remaining` did not shrink) switches to
///   copying everything in one step, which holds one read lock and so cannot restart again.
/// - The deadline only ends the backup when it would otherwise wait or redo work.
pub(crate) fn run(
    backup: &mut RawBackup<'_>,
    opts: &mut BackupOptions<'_>,
    op: Operation,
    path: &Path,
) -> Result<(), BackupError> {
    run_with(backup, opts, op, path, || {})
}

/// [`run`], calling `after_step` after every step that copied pages.
pub(crate) fn run_with(
    backup: &mut RawBackup<'_>,
    opts: &mut BackupOptions<'_>,
    op: Operation,
    path: &Path,
    mut after_step: impl FnMut(),
) -> Result<(), BackupError> {
    let start = Instant::now();
    let deadline = start.checked_add(opts.timeout);
    let past_deadline = |now: Instant| deadline.is_some_and(|d| now >= d);
    let gave_up = |now: Instant, failure| BackupError::Busy {
        op,
        path: path.to_path_buf(),
        waited: now - start,
        failure,
    };
    let mut pages = opts.step_pages();
    let mut last_remaining: Option<u32> = None;
    let mut backoff = MIN_BACKOFF;
    loop {
        let outcome = backup.step(pages).map_err(|failure| BackupError::Sqlite {
            op,
            path: path.to_path_buf(),
            failure,
        })?;
        match outcome {
            StepOutcome::Done => {
                opts.report(backup.progress());
                return Ok(());
            }
            StepOutcome::More => {
                after_step();
                let progress = backup.progress();
                opts.report(progress);
                backoff = MIN_BACKOFF;
                // Without interference every step shrinks `remaining`; if it did not, a concurrent
                // writer restarted the copy (restarts copy from page 1 again).
                if last_remaining.is_some_and(|prev| progress.remaining >= prev) {
                    let now = Instant::now();
                    if past_deadline(now) {
                        return Err(gave_up(now, restarted()));
                    }
                    pages = -1;
                }
                last_remaining = Some(progress.remaining);
                if !opts.pause.is_zero() {
                    thread::sleep(opts.pause);
                }
            }
            StepOutcome::Busy(failure) => {
                let now = Instant::now();
                if past_deadline(now) {
                    return Err(gave_up(now, failure));
                }
                let left = deadline.map_or(backoff, |d| d - now);
                thread::sleep(backoff.min(left));
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn restarted() -> SqliteFailure {
    SqliteFailure {
        code: libsqlite3_sys::SQLITE_BUSY,
        extended_code: libsqlite3_sys::SQLITE_BUSY,
        message: "concurrent writers kept restarting the backup".to_owned(),
    }
}

/// Replaces a connection's busy handler with none while a backup runs, so that the engine's
/// own backoff, not a handler blocking inside one step, decides how long to wait. The previous
/// `busy_timeout` comes back on drop.
pub(crate) struct BusyHandlerPause<'d, 'a> {
    db: &'d DbRef<'a>,
    previous_ms: i32,
}

impl<'d, 'a> BusyHandlerPause<'d, 'a> {
    pub(crate) fn new(db: &'d DbRef<'a>) -> Self {
        let previous_ms = db
            .query_i64("PRAGMA busy_timeout")
            .map_or(0, |ms| ms.clamp(0, i32::MAX as i64) as i32);
        db.set_busy_timeout(0);
        BusyHandlerPause { db, previous_ms }
    }
}

impl Drop for BusyHandlerPause<'_, '_> {
    fn drop(&mut self) {
        self.db.set_busy_timeout(self.previous_ms);
    }
}
