//! Pages between two connections: SQLite's online backup API, its one stepping loop, the
//! checks both ends pass first, and the conversions a destination may need.

pub(crate) mod checks;
pub(crate) mod convert;
pub(crate) mod engine;
pub(crate) mod handle;
mod options;
mod reencode;

use std::ffi::CStr;

use diesel::SqliteConnection;

use crate::error::{BackupError, Operation};
use crate::sqlite::{self, memdb, Budget, DbRef};

pub use handle::{Backup, StepResult};
pub use options::{BackupOptions, Progress, DEFAULT_PAGES_PER_STEP, DEFAULT_TIMEOUT};

/// [`BackupExt::backup_to`](crate::BackupExt::backup_to): `options.schema` of `src` over
/// `dest`'s `main` database.
pub(crate) fn backup_to(
    src: &mut SqliteConnection,
    dest: &mut SqliteConnection,
    options: &mut BackupOptions<'_>,
) -> Result<(), BackupError> {
    use tracing::field::Empty;
    let span = tracing::info_span!(
        "backup_to",
        plan = Empty,
        pages = Empty,
        elapsed_ms = Empty,
        error = Empty
    );
    crate::observe::in_span(span, || {
        let budget = options.budget(Operation::Backup);
        let src = sqlite::raw_handle(src);
        let src_schema = checks::schema(&src, &options.schema, budget.op())?;
        let dst = sqlite::raw_handle(dest);
        copy(&src, &src_schema, &dst, options, &budget)
    })
}

/// Copies a raw source's `main` database over `dest`'s `main` database, converting it first
/// where the destination cannot take it page for page.
pub(crate) fn copy_between(
    src: &DbRef<'_>,
    dest: &mut SqliteConnection,
    options: &mut BackupOptions<'_>,
    op: Operation,
) -> Result<(), BackupError> {
    let budget = options.budget(op);
    let dst = sqlite::raw_handle(dest);
    copy(src, c"main", &dst, options, &budget)
}

/// The connection-to-connection copy: both sides checked, the source converted if the
/// destination needs it, the engine's loop, then finish.
fn copy(
    src: &DbRef<'_>,
    src_schema: &CStr,
    dst: &DbRef<'_>,
    options: &mut BackupOptions<'_>,
    budget: &Budget,
) -> Result<(), BackupError> {
    let op = budget.op();
    checks::source_not_writing(src, src_schema, op)?;
    checks::distinct_databases(src, src_schema, dst, c"main", op)?;
    let path = checks::dest_idle(dst, c"main", op)?;
    let src_path = src.display_path(src_schema);
    checks::writable_format(src, src_schema, op, &src_path)?;
    let from = convert::End {
        db: src,
        schema: src_schema,
        path: &src_path,
    };
    let to = convert::End {
        db: dst,
        schema: c"main",
        path: &path,
    };
    let tracker = memdb::tracker_of(dst, c"main");
    let opening = memdb::opens::begin(tracker, budget, &path)?;
    let plan = convert::copy(from, to, false, &path, options, budget)?;
    crate::observe::record("plan", tracing::field::debug(&plan));
    opening.completed();
    Ok(())
}
