#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

// The layers, bottom first: a module imports only from modules declared before it
// (tests/layers.rs checks it). Each has a comment, so rustfmt keeps the order.
// The one public error type.
mod error;
// Spans and events for `tracing` subscribers.
mod observe;
// SQLite's on-disk formats, pure functions.
mod format;
// File-system rules with no SQLite in them.
mod fs;
// The FFI layer: handles, file objects, VFS shims, the budget.
mod sqlite;
// Pages between two connections: the one backup loop, checks, conversions.
mod copy;
// File or bytes -> memory.
mod open;
// Memory -> file.
mod save;
// Database images in memory.
mod snapshot;
// The shared in-memory pool.
mod pool;
// Background saves of a pool database.
mod autosave;
// Replicas in object storage.
#[cfg(feature = "replica")]
mod replica;
// The public trait, which only dispatches.
mod ext;
// Async pools and cancel-safe async Save As / Open.
#[cfg(feature = "async")]
mod asynchronous;
// Prebuilt databases, copied into each test.
mod template;

#[cfg(feature = "async")]
pub use asynchronous::{AsyncBackupExt, AsyncSqliteConnection};
pub use autosave::{Autosave, AutosaveOptions, DEFAULT_EVERY, DEFAULT_QUIET};
pub use copy::{
    Backup, BackupOptions, Progress, StepResult, DEFAULT_PAGES_PER_STEP, DEFAULT_TIMEOUT,
};
pub use error::{BackupError, BusyReason, Operation, SqliteFailure};
pub use ext::BackupExt;
pub use fs::TEMP_SUFFIX;
pub use pool::{
    memory_pool, shared_thread_pool, MemoryDatabase, ReentrancyCheck, SingletonManager,
    DEFAULT_BUSY_TIMEOUT, DEFAULT_CHECKOUT_TIMEOUT,
};
#[cfg(feature = "replica")]
pub use replica::{
    list_syncs, Compression, Replica, ReplicaOptions, RestoreInfo, RestoreTarget, Retain, SyncInfo,
};
pub use snapshot::Snapshot;
#[allow(deprecated)]
pub use sqlite::init;
pub use sqlite::CancelToken;
pub use template::{KeepOnPanic, Keepable, Template, TemplateCache};

/// Makes a function a test that gets its own migrated database, with fixtures, cloned from a
/// template built once per (migrations, fixtures) set and cached on disk by their content.
///
/// The function's one argument is the database: `conn: &mut SqliteConnection` or
/// `mut conn: SqliteConnection` (a private copy), or `pool: r2d2::Pool<SingletonManager>` (a
/// pool holding a private copy). It returns `()` or `Result<(), E>` with `E: Debug`. A test
/// that panics or returns `Err` keeps its database, as [`KeepOnPanic`] does, and prints
/// `sqlite3 <path>`. Do not add `#[test]`: under `cfg(test)` the attribute does; elsewhere
/// (a doctest, an example's `main`) the test is an ordinary function without arguments.
///
/// Arguments, all optional:
/// - `migrations = "path"`: the migrations folder, relative to the test crate's
///   `Cargo.toml`; `migrations/` by default; `migrations = false` for none. Embedded with
///   the crate's own `diesel_migrations::embed_migrations!`: your crate needs no dependency
///   on diesel_migrations. As with `embed_migrations!`, a changed migration rebuilds the
///   test, a new one only after the test crate is rebuilt for another reason (or has a
///   `build.rs` with `cargo:rerun-if-changed=migrations`).
/// - `fixtures("users", "posts")`: runs `fixtures/users.sql` then `fixtures/posts.sql` after
///   the migrations; `fixtures(path = "dir", scripts("users"))` (or
///   `fixtures(path = "dir", "users")`) reads them from another folder. They are part of the
///   template, so they cost nothing per test.
/// - `flavor = "multi_thread"`: for `async fn` tests (feature `async`), which otherwise run
///   on a current-thread tokio runtime.
///
/// Templates live in [`TemplateCache::default_dir`] (`target/diesel-sqlite-backup-templates`,
/// or `$DIESEL_SQLITE_BACKUP_TEMPLATES`), named by a hash of the migrations' and fixtures'
/// contents: a one-process-per-test runner (`cargo nextest`) migrates once per change.
///
/// ```
/// use diesel::prelude::*;
/// use diesel_sqlite_backup::SingletonManager;
///
/// // With your own `migrations/` folder, `#[diesel_sqlite_backup::test]` is all it takes.
/// #[diesel_sqlite_backup::test(migrations = false)]
/// fn starts_empty(conn: &mut SqliteConnection) -> QueryResult<()> {
///     diesel::sql_query("CREATE TABLE t(x)").execute(conn)?;
///     Ok(())
/// }
///
/// #[diesel_sqlite_backup::test(migrations = false)]
/// fn with_a_pool(pool: r2d2::Pool<SingletonManager>) {
///     diesel::sql_query("CREATE TABLE t(x)").execute(&mut pool.get().unwrap()).unwrap();
/// }
///
/// // Outside `cargo test`, a function like any other.
/// fn main() -> QueryResult<()> {
///     with_a_pool();
///     starts_empty()
/// }
/// ```
#[cfg(feature = "macros")]
pub use diesel_sqlite_backup_macros::test;

/// What the code `#[diesel_sqlite_backup::test]` generates uses; not a public API.
#[cfg(feature = "macros")]
#[doc(hidden)]
pub mod __private {
    pub use crate::template::attribute::{connection, finish, owned, pool, template, Outcome, Set};
    pub use diesel_migrations;
    #[cfg(feature = "async")]
    pub use tokio;
}

// The texts under docs/ are doctested like the README: every ```rust block there runs.
#[cfg(all(doctest, feature = "async"))]
#[doc = include_str!("../docs/async.md")]
mod docs_async {}
#[cfg(doctest)]
#[doc = include_str!("../docs/design.md")]
mod docs_design {}
#[cfg(doctest)]
#[doc = include_str!("../docs/guarantees.md")]
mod docs_guarantees {}
#[cfg(doctest)]
#[doc = include_str!("../docs/performance.md")]
mod docs_performance {}
#[cfg(doctest)]
#[doc = include_str!("../docs/reliability.md")]
mod docs_reliability {}
#[cfg(all(doctest, feature = "replica"))]
#[doc = include_str!("../docs/replica.md")]
mod docs_replica {}

use diesel::{Connection, ConnectionResult, SqliteConnection};

/// Opens a plain Diesel connection: exactly `SqliteConnection::establish(url)`.
///
/// Every `SqliteConnection` supports [`BackupExt`], however it was opened, so this is no
/// longer needed.
#[deprecated(
    note = "use diesel::SqliteConnection::establish: every SqliteConnection supports BackupExt"
)]
pub fn establish(url: &str) -> ConnectionResult<SqliteConnection> {
    SqliteConnection::establish(url)
}
