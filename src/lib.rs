#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod autosave;
mod backup;
mod error;
mod incremental;
mod pool;
mod raw;
#[cfg(feature = "replica")]
mod replica;
mod snapshot;
mod template;

pub use autosave::{Autosave, AutosaveOptions, DEFAULT_EVERY, DEFAULT_QUIET};
pub use backup::{
    Backup, BackupExt, BackupOptions, CancelToken, Progress, StepResult, DEFAULT_PAGES_PER_STEP,
    DEFAULT_TIMEOUT, TEMP_SUFFIX,
};
pub use error::{BackupError, Operation, SqliteFailure};
pub use pool::{
    memory_pool, shared_thread_pool, ReentrancyCheck, SingletonManager, DEFAULT_BUSY_TIMEOUT,
    DEFAULT_CHECKOUT_TIMEOUT,
};
#[allow(deprecated)]
pub use raw::init;
#[cfg(feature = "replica")]
pub use replica::{
    list_syncs, Compression, Replica, ReplicaOptions, RestoreInfo, RestoreTarget, Retain, SyncInfo,
};
pub use snapshot::Snapshot;
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
