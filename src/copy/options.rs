//! How a backup runs: step size, pauses, deadline, schema, progress reporting.

use std::fmt;
use std::time::Duration;

use crate::error::Operation;
use crate::sqlite::{Budget, CancelToken};

/// Pages copied per step when the caller does not choose.
///
/// Chosen by `cargo bench --bench backup` (README, "Performance"). On a 200 MiB database a
/// save with 1024 pages per step took 536 ms, against 523 ms with 100 and 568 ms in one
/// step (one step is slowest because the disk cannot start writing until the copy ends).
/// 100 and 1024 are within run-to-run noise of each other; 1024 takes the source's read
/// lock ten times less often, and at 4 KiB pages holds it about 10 ms per step, so writers
/// still get in between steps.
pub const DEFAULT_PAGES_PER_STEP: i32 = 1024;

/// The deadline for busy waits and restarts when the caller does not choose.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a running backup stands, reported after every step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Pages still to copy (`sqlite3_backup_remaining`).
    pub remaining: u32,
    /// Pages in the source database (`sqlite3_backup_pagecount`).
    pub page_count: u32,
}

impl Progress {
    /// Pages copied so far.
    pub fn copied(&self) -> u32 {
        self.page_count.saturating_sub(self.remaining)
    }

    /// True once nothing remains.
    pub fn is_done(&self) -> bool {
        self.remaining == 0
    }
}

/// Options for [`BackupExt`](crate::BackupExt)'s `*_with` methods. Start from
/// [`BackupOptions::default()`] and chain the builder methods.
///
/// ```
/// use std::time::Duration;
/// use diesel_sqlite_backup::BackupOptions;
///
/// let mut steps = 0;
/// let options = BackupOptions::default()
///     .pages_per_step(256)
///     .pause(Duration::from_millis(1))
///     .timeout(Duration::from_secs(5))
///     .on_progress(|p| {
///         steps += 1;
///         assert!(p.remaining <= p.page_count);
///     });
/// # drop(options);
/// ```
pub struct BackupOptions<'a> {
    pub(crate) pages_per_step: i32,
    pub(crate) pause: Duration,
    pub(crate) timeout: Duration,
    pub(crate) schema: String,
    pub(crate) verify: bool,
    pub(crate) progress: Option<Box<dyn FnMut(Progress) + 'a>>,
    pub(crate) cancel: Option<CancelToken>,
    pub(crate) incremental: bool,
}

impl Default for BackupOptions<'_> {
    fn default() -> Self {
        BackupOptions {
            pages_per_step: DEFAULT_PAGES_PER_STEP,
            pause: Duration::ZERO,
            timeout: DEFAULT_TIMEOUT,
            schema: "main".to_owned(),
            verify: false,
            progress: None,
            cancel: None,
            incremental: false,
        }
    }
}

impl fmt::Debug for BackupOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupOptions")
            .field("pages_per_step", &self.pages_per_step)
            .field("pause", &self.pause)
            .field("timeout", &self.timeout)
            .field("schema", &self.schema)
            .field("verify", &self.verify)
            .field("on_progress", &self.progress.is_some())
            .field("cancel_token", &self.cancel)
            .field("incremental", &self.incremental)
            .finish()
    }
}

impl<'a> BackupOptions<'a> {
    /// Pages copied per `sqlite3_backup_step`. Zero or less copies everything in one step,
    /// holding the source's read lock throughout. Default: [`DEFAULT_PAGES_PER_STEP`].
    pub fn pages_per_step(mut self, pages: i32) -> Self {
        self.pages_per_step = pages;
        self
    }

    /// Sleeps this long between steps so other connections can take the lock. Default: none.
    pub fn pause(mut self, pause: Duration) -> Self {
        self.pause = pause;
        self
    }

    /// One time budget for the whole call, counted from its start: every lock wait in every
    /// phase (reaching the connection's handle, opening and reading the source, validation,
    /// the copy, and the commit) draws on it, and so do restarts caused by concurrent
    /// writers. Steps that make progress are never cut short; once the budget is spent, the
    /// next busy lock or restart ends the call with
    /// [`BackupError::Busy`](crate::BackupError::Busy), whose `waited` is the time the call
    /// really spent waiting and whose path names the database that was busy.
    /// Default: [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The schema to copy: `main` (the default), `temp`, or an attached database's name.
    /// For [`restore_from`](crate::BackupExt::restore_from) it names the schema that is
    /// replaced. An unknown name fails with
    /// [`BackupError::UnknownSchema`](crate::BackupError::UnknownSchema).
    pub fn schema(mut self, schema: &str) -> Self {
        schema.clone_into(&mut self.schema);
        self
    }

    /// For [`restore_from`](crate::BackupExt::restore_from): also run
    /// `PRAGMA integrity_check` on the file before anything is replaced, so corruption that
    /// the cheap header, size and schema checks cannot see is refused too: damaged pages,
    /// and indexes that disagree with their tables. Virtual tables that implement an
    /// integrity check (FTS5) are checked as well. Costs at least a full read of the file.
    /// Default: off.
    pub fn verify_integrity(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// Stops the call when `token` is cancelled, from another thread or from the progress
    /// callback; see [`CancelToken`].
    pub fn cancel_token(mut self, token: &CancelToken) -> Self {
        self.cancel = Some(token.clone());
        self
    }

    /// For [`save_as_with`](crate::BackupExt::save_as_with): write only the pages changed
    /// since `path` was last written by this database, or since this database was loaded
    /// from `path` by [`restore_from`](crate::BackupExt::restore_from), in place, under a
    /// rollback journal that any SQLite rolls back should the process die part-way. Only when
    /// the file is provably still that version (same device and inode, size, modification
    /// time and header change counter, not in WAL mode) and the database is a pool's
    /// ([`memory_pool`](crate::memory_pool), [`SingletonManager`](crate::SingletonManager),
    /// [`Template::pool`](crate::Template::pool)), and the changed pages fit in 32 MiB.
    ///
    /// Otherwise the save is full, and falling back is never an error. In this mode a full
    /// save never renames over an existing rollback-journal database: it writes it in place
    /// through SQLite's own backup (journal, locks and syncs), so the file keeps its inode
    /// and a connection opened on it earlier stays valid. A missing file, a WAL file, a
    /// read-only file or one that is not a database is replaced by rename as usual. See the
    /// README, "Incremental saves".
    ///
    /// An in-place save of the changes reports progress once the changed pages are read,
    /// then after the journal is durable and after every page written, counting the pages
    /// still to write; a full save in place reports as a stepped backup does.
    /// Default: off.
    ///
    /// ```
    /// use diesel::RunQueryDsl;
    /// use diesel_sqlite_backup::{memory_pool, BackupExt, BackupOptions};
    ///
    /// let pool = memory_pool()?;
    /// diesel::sql_query("CREATE TABLE t(x)").execute(&mut pool.get()?)?;
    /// let dir = tempfile::tempdir()?;
    /// let file = dir.path().join("doc.db");
    /// pool.get()?.save_as(&file)?; // full: the baseline
    /// diesel::sql_query("INSERT INTO t VALUES (1)").execute(&mut pool.get()?)?;
    /// pool.get()?.save_as_with(&file, BackupOptions::default().incremental(true))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn incremental(mut self, incremental: bool) -> Self {
        self.incremental = incremental;
        self
    }

    /// Called after every step, including the last, with the pages remaining.
    pub fn on_progress(mut self, callback: impl FnMut(Progress) + 'a) -> Self {
        self.progress = Some(Box::new(callback));
        self
    }

    pub(crate) fn report(&mut self, progress: Progress) {
        if let Some(cb) = self.progress.as_mut() {
            cb(progress);
        }
    }

    /// The time budget for one call of `op` under these options.
    pub(crate) fn budget(&self, op: Operation) -> Budget {
        Budget::new(op, self.timeout, self.cancel.clone())
    }

    /// The step size SQLite expects: a positive count, or -1 for "all".
    pub(crate) fn step_pages(&self) -> i32 {
        if self.pages_per_step <= 0 {
            -1
        } else {
            self.pages_per_step
        }
    }
}
