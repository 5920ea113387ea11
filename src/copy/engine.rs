//! The one backup loop every entry point shares ("init, step, finish"): busy backoff within
//! the call's budget, restart fallback, progress, pauses and cancellation.

use std::ffi::CStr;
use std::path::Path;
use std::thread;

use super::handle::{RawBackup, StepOutcome};
use super::options::BackupOptions;
use crate::error::BusyReason;
use crate::error::{BackupError, SqliteFailure};
use crate::sqlite::{Budget, DbRef};

/// Copies `src` over `dst` (each a connection and a schema) through one backup object: init,
/// [`run`], finish. `failed` turns the backup object's own failures (init, finish) into
/// the error; failures of a step name `path`.
pub(crate) fn copy_pages(
    (dst, dst_schema): (&DbRef<'_>, &CStr),
    (src, src_schema): (&DbRef<'_>, &CStr),
    opts: &mut BackupOptions<'_>,
    budget: &Budget,
    path: &Path,
    failed: impl Fn(SqliteFailure) -> BackupError,
    after_step: impl FnMut(),
) -> Result<(), BackupError> {
    let mut backup = RawBackup::new(dst, dst_schema, src, src_schema).map_err(&failed)?;
    run(&mut backup, opts, budget, path, after_step)?;
    backup.finish().map_err(failed)
}

/// Runs `backup` to completion under `opts`, within `budget`.
///
/// - Lock waits mostly happen inside SQLite, in the busy handlers the caller installed on both
///   connections; a step that still answers busy is retried with backoff until the budget is
///   spent.
/// - A restart (a concurrent writer changed the source, so `remaining` did not shrink) switches
///   to copying everything in one step, which holds one read lock and so cannot restart again.
/// - The budget only ends the backup when it would otherwise wait or redo work.
/// - A cancelled token stops it before the next step.
///
/// `after_step` runs after every step that copied pages.
fn run(
    backup: &mut RawBackup<'_>,
    opts: &mut BackupOptions<'_>,
    budget: &Budget,
    path: &Path,
    mut after_step: impl FnMut(),
) -> Result<(), BackupError> {
    let mut pages = opts.step_pages();
    let mut last_remaining: Option<u32> = None;
    let mut busy_tries = 0;
    loop {
        if budget.is_cancelled() {
            return Err(budget.cancelled(path));
        }
        let outcome = backup
            .step(pages)
            .map_err(BackupError::sqlite_at(budget.op(), path))?;
        match outcome {
            StepOutcome::Done => {
                let progress = backup.progress();
                crate::observe::record("pages", progress.page_count);
                opts.report(progress);
                return Ok(());
            }
            StepOutcome::More => {
                after_step();
                let progress = backup.progress();
                opts.report(progress);
                busy_tries = 0;
                // Without interference every step shrinks `remaining`; if it did not, a
                // concurrent writer restarted the copy (restarts copy from page 1 again).
                if last_remaining.is_some_and(|prev| progress.remaining >= prev) {
                    if budget.is_spent() {
                        return Err(budget.gave_up_because(path, BusyReason::SourceKeptChanging));
                    }
                    pages = -1;
                    tracing::debug!(
                        remaining = progress.remaining,
                        "the source changed during the backup: the rest goes in one step"
                    );
                }
                last_remaining = Some(progress.remaining);
                if !opts.pause.is_zero() {
                    thread::sleep(opts.pause);
                }
            }
            StepOutcome::Busy(failure) => {
                if !budget.wait(busy_tries) {
                    return Err(budget.gave_up(path, failure));
                }
                busy_tries += 1;
            }
        }
    }
}
