//! How a [`Replica`](super::Replica) syncs, keeps history and stores its objects.

use std::fmt;
use std::time::Duration;

use crate::autosave::options::{report_by_default, ErrorHandler};
use crate::error::BackupError;
use crate::{DEFAULT_EVERY, DEFAULT_QUIET};

/// How much history a replica keeps in the store.
///
/// Whatever it says, the latest sync stays restorable: only what lies before a whole image
/// (a snapshot) that is kept is ever deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retain {
    /// Keep every sync younger than this (and the image before the oldest of them).
    For(Duration),
    /// Keep the newest this many snapshots (whole images) and every sync after the oldest
    /// of them; at least one.
    Snapshots(usize),
}

/// How the body of each object is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// As is (the default).
    #[default]
    None,
    /// zstd at this level (1 to 22; 3 is zstd's default). Needs the `replica-zstd` feature,
    /// to write and to read such objects.
    #[cfg(feature = "replica-zstd")]
    Zstd(i32),
}

/// Options for [`Replica::start`](super::Replica::start). Start from
/// [`ReplicaOptions::default()`] and chain the builder methods.
///
/// ```
/// use std::time::Duration;
/// use diesel_sqlite_backup::{ReplicaOptions, Retain};
///
/// let options = ReplicaOptions::default()
///     .every(Duration::from_secs(10))
///     .quiet(Duration::from_secs(1))
///     .retain(Retain::For(Duration::from_secs(7 * 24 * 3600)))
///     .on_error(|e| eprintln!("replica: {e}"));
/// # drop(options);
/// ```
pub struct ReplicaOptions {
    pub(crate) every: Duration,
    pub(crate) quiet: Duration,
    pub(crate) on_error: ErrorHandler,
    pub(crate) retain: Retain,
    pub(crate) compression: Compression,
    pub(crate) compact_after: u32,
    pub(crate) timeout: Duration,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            every: DEFAULT_EVERY,
            quiet: DEFAULT_QUIET,
            on_error: report_by_default("replica"),
            retain: Retain::For(Duration::from_secs(24 * 3600)),
            compression: Compression::None,
            compact_after: 100,
            timeout: crate::DEFAULT_TIMEOUT,
        }
    }
}

impl fmt::Debug for ReplicaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicaOptions")
            .field("every", &self.every)
            .field("quiet", &self.quiet)
            .field("retain", &self.retain)
            .field("compression", &self.compression)
            .field("compact_after", &self.compact_after)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ReplicaOptions {
    /// The longest time from a commit to the start of the sync that holds it, as
    /// [`AutosaveOptions::every`](crate::AutosaveOptions::every). Default: [`DEFAULT_EVERY`].
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every.max(Duration::from_millis(1));
        self
    }

    /// Waits until no commit has come for this long before syncing, but never past
    /// [`every`](Self::every), as [`AutosaveOptions::quiet`](crate::AutosaveOptions::quiet).
    /// Default: [`DEFAULT_QUIET`].
    pub fn quiet(mut self, quiet: Duration) -> Self {
        self.quiet = quiet;
        self
    }

    /// Called on the replica's thread with every failed background sync (and a failed
    /// compaction or retention pass, and a failed final sync on drop). The replica keeps
    /// going and retries. A panic in the callback is caught. Default: a `tracing` warning
    /// when a subscriber is installed, else a line on standard error, as for autosaves.
    pub fn on_error(mut self, callback: impl FnMut(&BackupError) + Send + 'static) -> Self {
        self.on_error = Box::new(callback);
        self
    }

    /// How much history to keep. Default: `Retain::For` 24 hours.
    pub fn retain(mut self, retain: Retain) -> Self {
        self.retain = retain;
        self
    }

    /// How object bodies are stored. Default: [`Compression::None`].
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// After this many syncs of changed pages since the last whole image (or once they add
    /// up to more than a quarter of that image's bytes), a sync also writes a new image, so that a
    /// restore never reads a long chain. Default: 100; at least 1.
    pub fn compact_after(mut self, syncs: u32) -> Self {
        self.compact_after = syncs.max(1);
        self
    }

    /// How long a sync waits for writers to let it read the database. Default:
    /// [`DEFAULT_TIMEOUT`](crate::DEFAULT_TIMEOUT).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub(crate) fn zstd_level(&self) -> Option<i32> {
        match self.compression {
            Compression::None => None,
            #[cfg(feature = "replica-zstd")]
            Compression::Zstd(level) => Some(level),
        }
    }
}
