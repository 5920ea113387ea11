//! When an [`Autosave`](super::Autosave) saves, and how.

use std::fmt;
use std::time::Duration;

use crate::copy::BackupOptions;
use crate::error::BackupError;

/// The longest time from a commit to the completed save that holds it, by default.
///
/// ```
/// assert_eq!(diesel_sqlite_backup::DEFAULT_EVERY, std::time::Duration::from_secs(1));
/// ```
pub const DEFAULT_EVERY: Duration = Duration::from_secs(1);

/// How long the database must stay without commits before a save, by default.
///
/// ```
/// assert_eq!(diesel_sqlite_backup::DEFAULT_QUIET, std::time::Duration::from_millis(200));
/// ```
pub const DEFAULT_QUIET: Duration = Duration::from_millis(200);

pub(crate) type ErrorHandler = Box<dyn FnMut(&BackupError) + Send>;

/// The default `on_error` of a background `who`: a tracing warning when a subscriber
/// listens, else a line on standard error.
pub(crate) fn report_by_default(who: &'static str) -> ErrorHandler {
    Box::new(move |e| {
        if crate::observe::listening() {
            tracing::warn!(error = %e, "{who} failed, will retry");
        } else {
            eprintln!("diesel-sqlite-backup {who}: {e}");
        }
    })
}
pub(crate) type SaveOptionsFactory = Box<dyn Fn() -> BackupOptions<'static> + Send>;

/// Options for [`Autosave::start`](super::Autosave::start). Start from
/// [`AutosaveOptions::default()`] and chain the builder methods.
///
/// ```
/// use std::time::Duration;
/// use diesel_sqlite_backup::{AutosaveOptions, BackupOptions};
///
/// let options = AutosaveOptions::default()
///     .every(Duration::from_secs(5))
///     .quiet(Duration::from_millis(500))
///     .on_error(|e| eprintln!("autosave failed, will retry: {e}"))
///     .save_options(|| BackupOptions::default().timeout(Duration::from_secs(10)));
/// # drop(options);
/// ```
pub struct AutosaveOptions {
    pub(crate) every: Duration,
    pub(crate) quiet: Duration,
    pub(crate) on_error: ErrorHandler,
    pub(crate) save_options: SaveOptionsFactory,
}

impl Default for AutosaveOptions {
    fn default() -> Self {
        AutosaveOptions {
            every: DEFAULT_EVERY,
            quiet: DEFAULT_QUIET,
            on_error: report_by_default("autosave"),
            save_options: Box::new(|| BackupOptions::default().incremental(true)),
        }
    }
}

impl fmt::Debug for AutosaveOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AutosaveOptions")
            .field("every", &self.every)
            .field("quiet", &self.quiet)
            .finish_non_exhaustive()
    }
}

impl AutosaveOptions {
    /// The longest time from a commit to the completed save that holds it, not counting the
    /// save itself (nor a save that was already running when the commit came). Default:
    /// [`DEFAULT_EVERY`]. A zero duration is treated as one millisecond.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use diesel_sqlite_backup::AutosaveOptions;
    /// let options = AutosaveOptions::default().every(Duration::from_millis(250));
    /// # drop(options);
    /// ```
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every.max(Duration::from_millis(1));
        self
    }

    /// Waits until no commit has come for this long before saving, but never past
    /// [`every`](Self::every), so that a burst of commits becomes one save. Zero saves as
    /// soon as a change is seen. Default: [`DEFAULT_QUIET`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use diesel_sqlite_backup::AutosaveOptions;
    /// let options = AutosaveOptions::default().quiet(Duration::ZERO);
    /// # drop(options);
    /// ```
    pub fn quiet(mut self, quiet: Duration) -> Self {
        self.quiet = quiet;
        self
    }

    /// Called on the autosave thread with every failed background save (and a failed final
    /// save when the [`Autosave`](super::Autosave) is dropped rather than stopped). The
    /// autosave keeps going and retries on the next change or after [`every`](Self::every).
    /// A panic in the callback is caught and ignored. Default: a `tracing` warning, or a line
    /// on standard error when no `tracing` subscriber is installed.
    ///
    /// ```
    /// # use diesel_sqlite_backup::AutosaveOptions;
    /// let options = AutosaveOptions::default().on_error(|e| eprintln!("not saved: {e}"));
    /// # drop(options);
    /// ```
    pub fn on_error(mut self, callback: impl FnMut(&BackupError) + Send + 'static) -> Self {
        self.on_error = Box::new(callback);
        self
    }

    /// Makes the [`BackupOptions`] for each save (timeout, step size, pause, progress,
    /// cancellation, incremental). Called once per save. The schema is always `main`.
    /// Default: `BackupOptions::default().incremental(true)`: each save writes only the pages
    /// changed since the last one, in place ([`BackupOptions::incremental`]). A factory that
    /// leaves `incremental` off makes every save a full one, replacing the file by rename.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use diesel_sqlite_backup::{AutosaveOptions, BackupOptions};
    /// let options = AutosaveOptions::default()
    ///     .save_options(|| BackupOptions::default().pages_per_step(256));
    /// # drop(options);
    /// ```
    pub fn save_options(
        mut self,
        make: impl Fn() -> BackupOptions<'static> + Send + 'static,
    ) -> Self {
        self.save_options = Box::new(make);
        self
    }
}
