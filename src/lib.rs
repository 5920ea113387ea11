#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod autosave;
mod backup;
mod error;
mod incremental;
mod pool;
mod raw;
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
pub use raw::init;
pub use snapshot::Snapshot;
pub use template::{KeepOnPanic, Keepable, Template, TemplateCache};

use diesel::{Connection, ConnectionResult, SqliteConnection};

/// Opens a plain Diesel connection (a file path, `:memory:`, or a `file:` URI) that supports
/// [`BackupExt`].
///
/// ```
/// use diesel_sqlite_backup::{establish, BackupExt};
///
/// let dir = tempfile::tempdir()?;
/// let mut conn = establish(dir.path().join("app.db").to_str().unwrap())?;
/// conn.save_as(dir.path().join("copy.db"))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn establish(url: &str) -> ConnectionResult<SqliteConnection> {
    init();
    SqliteConnection::establish(url)
}
