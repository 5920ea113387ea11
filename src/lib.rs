#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

// The layers, bottom first: a module imports only from modules declared before it
// (tests/layers.rs checks it). Each has a comment, so rustfmt keeps the order.
// The one public error type.
mod error;
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
// The public trait, which only dispatches.
mod ext;
// The shared in-memory pool.
mod pool;
// Background saves of a pool database.
mod autosave;
// Prebuilt databases, copied into each test.
mod template;

pub use autosave::{Autosave, AutosaveOptions, DEFAULT_EVERY, DEFAULT_QUIET};
pub use copy::{
    Backup, BackupOptions, Progress, StepResult, DEFAULT_PAGES_PER_STEP, DEFAULT_TIMEOUT,
};
pub use error::{BackupError, Operation, SqliteFailure};
pub use ext::BackupExt;
pub use fs::TEMP_SUFFIX;
pub use pool::{
    memory_pool, shared_thread_pool, ReentrancyCheck, SingletonManager, DEFAULT_BUSY_TIMEOUT,
    DEFAULT_CHECKOUT_TIMEOUT,
};
pub use snapshot::Snapshot;
#[allow(deprecated)]
pub use sqlite::init;
pub use sqlite::CancelToken;
pub use template::{KeepOnPanic, Keepable, Template, TemplateCache};

// The texts under docs/ are doctested like the README: every ```rust block there runs.
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
