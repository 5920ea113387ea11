//! Autosave: the pool's in-memory database follows itself onto a file.
//!
//! A background thread owns a private connection to the pool's database. Every few
//! milliseconds it reads the database's header (whose change counter every commit that
//! changes the database bumps, and reads never do) through that connection's file handle,
//! without taking a lock, and saves (incrementally, by default) when the schedule says so. Pooled
//! connections are never taken, no hook is installed on them, and writers never wait for a
//! look.

mod lock;
pub(crate) mod options;
pub(crate) mod schedule;
pub(crate) mod tickets;
pub(crate) mod worker;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use diesel::SqliteConnection;

use lock::TargetLock;
pub use options::{AutosaveOptions, DEFAULT_EVERY, DEFAULT_QUIET};
use worker::{Retarget, Shared, Stop, Worker};

use crate::error::{BackupError, Operation};
use crate::pool::{MemoryDatabase, SingletonManager};
use crate::save::save_from;
use crate::sqlite::memdb::{self, opens::Flush, record::Tracker};
use crate::sqlite::{path_cstring, OwnedDb};

/// Saves a [`SingletonManager`] pool's database to a file whenever it changes, on a thread
/// of its own.
///
/// Each save is a [`save_as_with`](crate::BackupExt::save_as_with) with the options of
/// [`save_options`](AutosaveOptions::save_options): by default
/// [`incremental`](crate::BackupOptions::incremental), so only the changed pages are
/// written, in place under a rollback journal. Every file it leaves is a complete database
/// (or the previous one with a hot journal, which the next SQLite to open it rolls back),
/// whatever happens: errors, a kill, writers on other connections. After
/// [`start`](Autosave::start), a commit on any connection of the pool reaches the file within
/// [`every`](AutosaveOptions::every) plus the time of the save. An idle database is never
/// written again, and reads are not changes.
///
/// Dropping it is [`stop`](Autosave::stop) with the error, if any, given to
/// [`on_error`](AutosaveOptions::on_error).
///
/// # Never over another document
/// - **One autosave per file.** An autosave holds an exclusive `flock` on
///   `<file>-autosave.lock` beside its file for as long as it saves there (the lock file is
///   removed when it stops; one a killed process left is taken over; a name too long for
///   the suffix gets a shortened one, the same in every process). A second
///   [`start`](Autosave::start) on the same file, in this process or another, fails with
///   [`BackupError::AlreadyAutosaving`] and writes nothing; in this process that includes
///   the same file under another name (a hard link: same device and inode).
/// - **An Open stops it.** After another database is opened into the autosaved database
///   ([`restore_from`](crate::BackupExt::restore_from),
///   [`restore_from_bytes`](crate::BackupExt::restore_from_bytes),
///   [`backup_to`](crate::BackupExt::backup_to) or
///   [`Template::copy_into`](crate::Template::copy_into) on any connection of the pool), the
///   file still holds the document open before, and the autosave does not write the new one
///   over it: it reports [`BackupError::DocumentOpened`] to `on_error` once, and
///   [`save_now`](Autosave::save_now) and [`stop`](Autosave::stop) return it, until the app
///   says where the new document goes: [`retarget`](Autosave::retarget) to its own file, or
///   [`resume`](Autosave::resume) to overwrite the old file after all. An Open waits, within
///   its own budget, for a save under way to end, so no save mixes the two documents.
///   Opens before `start` do not count.
/// - **An Open saves first.** Before an Open replaces the database, the autosave saves the
///   commits made before it to its file, within the Open's budget, so a commit made just
///   before an Open is not lost. If that save fails (the file is locked, the folder is
///   gone), the Open fails with [`BackupError::Busy`] naming the file, or with the save's
///   error, and the database keeps its document and the commits; the autosave retries as
///   usual. When the autosave is already waiting after an earlier Open, there is nothing to
///   save and the Open goes ahead.
///
/// # Limits
/// - **Hard links across processes.** Another process's autosave to a hard link of the
///   file (another name, so another lock file) is not noticed; the two overwrite each other.
/// - **No `flock`.** On file systems without `flock` there is no lock file, so autosaves in
///   two processes are not kept apart there.
/// - **Opens on the autosave's own thread** (from `on_error` or `save_options`) fail with
///   [`BackupError::InvalidInput`]: the autosave cannot save the commits before them while
///   it runs the callback.
///
/// ```
/// use std::time::Duration;
/// use diesel::RunQueryDsl;
/// use diesel_sqlite_backup::{memory_pool, Autosave, AutosaveOptions};
///
/// let dir = tempfile::tempdir()?;
/// let pool = memory_pool()?;
/// diesel::sql_query("CREATE TABLE notes(body TEXT)").execute(&mut pool.get()?)?;
/// let options = AutosaveOptions::default().every(Duration::from_millis(500));
/// let autosave = Autosave::start(&pool, dir.path().join("notes.db"), options)?;
///
/// diesel::sql_query("INSERT INTO notes VALUES ('hello')").execute(&mut pool.get()?)?;
/// autosave.save_now()?; // the insert is on disk
/// assert_eq!(autosave.saves(), 2);
/// autosave.stop()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Autosave {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Result<(), BackupError>>>,
    /// The database's write record, which counts the Opens into it.
    tracker: Option<Arc<Tracker>>,
}

impl Autosave {
    /// Saves the pool's database to `path` once, then starts the thread that keeps the file
    /// up to date.
    ///
    /// `start` borrows one of the pool's connections, once, to find the database (r2d2 does
    /// not expose the manager), so it waits for one like `pool.get()` does. From then on the
    /// autosave uses a private connection of its own, which also keeps the database alive
    /// if the pool is dropped first.
    ///
    /// # Errors
    /// - [`BackupError::AlreadyAutosaving`] if another autosave (in this process or another)
    ///   saves to `path`; nothing is written.
    /// - [`BackupError::Init`] if no connection could be borrowed from the pool, or the
    ///   thread could not be started.
    /// - Anything [`save_as_with`](crate::BackupExt::save_as_with) returns for the first save, so an
    ///   unusable `path` (a missing folder, a directory, no permission) fails here.
    ///
    /// ```
    /// use diesel_sqlite_backup::{memory_pool, Autosave, AutosaveOptions, BackupError};
    ///
    /// let pool = memory_pool()?;
    /// let missing = std::env::temp_dir().join("no-such-folder-dsb").join("notes.db");
    /// let err = Autosave::start(&pool, missing, AutosaveOptions::default()).unwrap_err();
    /// assert!(matches!(err, BackupError::Io { .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start(
        pool: &r2d2::Pool<SingletonManager>,
        path: impl AsRef<Path>,
        options: AutosaveOptions,
    ) -> Result<Autosave, BackupError> {
        let path = absolute(path.as_ref())?;
        let lock = TargetLock::acquire(&path)?;
        let mut conn = pool
            .get()
            .map_err(|e| BackupError::init(Operation::Autosave, e))?;
        let db = open_private(&mut conn)?;
        drop(conn);
        Self::run(db, path, lock, options)
    }

    /// [`start`](Self::start) for a [`MemoryDatabase`] and every connection to it, whatever
    /// pool (or none) they come from: r2d2, deadpool, bb8, plain
    /// [`connect`](MemoryDatabase::connect). Needs no pool and no async runtime; it saves
    /// once before it returns, so in async code call it where blocking is fine (at start-up,
    /// or in `spawn_blocking`).
    ///
    /// # Errors
    /// As for [`start`](Self::start); [`BackupError::Init`] if the database cannot be opened.
    ///
    /// ```
    /// use diesel::RunQueryDsl;
    /// use diesel_sqlite_backup::{Autosave, AutosaveOptions, MemoryDatabase};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let db = MemoryDatabase::new()?;
    /// let autosave = Autosave::start_with_database(&db, dir.path().join("a.db"), AutosaveOptions::default())?;
    /// diesel::sql_query("CREATE TABLE t(x)").execute(&mut db.connect()?)?;
    /// autosave.stop()?; // the table is in the file
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn start_with_database(
        db: &MemoryDatabase,
        path: impl AsRef<Path>,
        options: AutosaveOptions,
    ) -> Result<Autosave, BackupError> {
        let path = absolute(path.as_ref())?;
        let lock = TargetLock::acquire(&path)?;
        let mut conn = db
            .connect()
            .map_err(|e| BackupError::init(Operation::Autosave, e))?;
        let db = open_private(&mut conn)?;
        drop(conn);
        Self::run(db, path, lock, options)
    }

    /// Saves once and starts the thread, on a private connection `db`, holding `path`'s
    /// `lock`.
    fn run(
        db: OwnedDb,
        path: PathBuf,
        lock: TargetLock,
        options: AutosaveOptions,
    ) -> Result<Autosave, BackupError> {
        let tracker = memdb::tracker_of(&db.db(), c"main");
        // Read before the first save: a commit after this look is saved again later.
        let watch = schedule::Watch::new(worker::header(&db));
        let mut first = (options.save_options)().schema("main");
        let budget = first.budget(Operation::Save);
        let accepted = {
            let saving = match tracker.as_deref() {
                Some(t) => Some(t.opens.save(&budget, &path)?),
                None => None,
            };
            save_from(&db.db(), &path, &mut first, &budget)?;
            saving.map_or(0, |s| s.completed)
        };
        drop(first);

        let shared = Arc::new(Shared::new(1, path.clone(), accepted));
        if let Some(t) = &tracker {
            let flush: Weak<dyn Flush> = Arc::downgrade(&shared) as _;
            t.opens.register(flush);
        }
        let worker = Worker {
            db,
            path,
            lock,
            tracker: tracker.clone(),
            reported: None,
            options,
            watch,
        };
        let thread = std::thread::Builder::new()
            .name("dsb-autosave".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || {
                    let _ = shared.thread.set(std::thread::current().id());
                    let _exit = shared.on_exit();
                    worker.run(&shared)
                }
            })
            .map_err(|e| BackupError::init(Operation::Autosave, e))?;
        Ok(Autosave {
            shared,
            thread: Some(thread),
            tracker,
        })
    }

    /// Saves now, whatever the schedule, and returns once a save holding every commit made
    /// before the call is durable. When nothing was committed since the last successful save,
    /// it returns at once without writing.
    ///
    /// # Errors
    /// - The error of the save that should have held the commits (it is not also given to
    ///   [`on_error`](AutosaveOptions::on_error)). The autosave goes on and retries later.
    /// - [`BackupError::InvalidInput`] when called on the autosave's own thread (from
    ///   `on_error` or `save_options`), where it would wait for itself.
    /// - [`BackupError::Init`] if the autosave thread has ended unexpectedly.
    ///
    /// ```
    /// # use diesel::RunQueryDsl;
    /// # use diesel_sqlite_backup::{memory_pool, Autosave, AutosaveOptions};
    /// # let dir = tempfile::tempdir()?;
    /// # let pool = memory_pool()?;
    /// let autosave = Autosave::start(&pool, dir.path().join("a.db"), AutosaveOptions::default())?;
    /// diesel::sql_query("CREATE TABLE t(x)").execute(&mut pool.get()?)?;
    /// autosave.save_now()?;
    /// autosave.save_now()?; // nothing new: no write
    /// assert_eq!(autosave.saves(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save_now(&self) -> Result<(), BackupError> {
        self.refuse_own_thread("save_now")?;
        self.shared
            .save_now()
            .unwrap_or_else(|| Err(thread_ended()))
    }

    /// Follows the document now in the database to the file at `path`: takes `path`'s lock,
    /// saves the whole database there, and returns once that save is durable; from then on
    /// every save goes there, and the old file's lock is released (the old file keeps what
    /// it held). This is the answer to [`BackupError::DocumentOpened`] after an Open, like
    /// "Save As" for the new document. It accepts every Open so far.
    ///
    /// # Errors
    /// - [`BackupError::AlreadyAutosaving`] if another autosave saves to `path`; nothing
    ///   changes.
    /// - The error of the save to `path` (the autosave stays on `path` and retries later),
    ///   or, as for [`save_now`](Self::save_now), [`BackupError::InvalidInput`] on the
    ///   autosave's own thread.
    ///
    /// ```
    /// # use diesel::RunQueryDsl;
    /// # use diesel_sqlite_backup::{memory_pool, Autosave, AutosaveOptions, BackupExt};
    /// # let dir = tempfile::tempdir()?;
    /// # let pool = memory_pool()?;
    /// let autosave = Autosave::start(&pool, dir.path().join("old.db"), AutosaveOptions::default())?;
    /// # let other = memory_pool()?;
    /// # diesel::sql_query("CREATE TABLE t(x)").execute(&mut other.get()?)?;
    /// # other.get()?.save_as(dir.path().join("other.db"))?;
    /// pool.get()?.restore_from(dir.path().join("other.db"))?; // Open
    /// assert!(autosave.save_now().is_err()); // not over old.db
    /// autosave.retarget(dir.path().join("other.db"))?; // the opened document's own file
    /// assert_eq!(autosave.path(), dir.path().join("other.db"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn retarget(&self, path: impl AsRef<Path>) -> Result<(), BackupError> {
        self.refuse_own_thread("retarget")?;
        let path = absolute(path.as_ref())?;
        let accepted = self.opens_completed();
        let current = self.shared.path();
        if TargetLock::same_file(&current, &path) {
            self.shared.resume(accepted);
            return self.save_now();
        }
        let lock = TargetLock::acquire(&path)?;
        self.shared.retarget(Retarget {
            path,
            lock,
            accepted,
        });
        self.save_now()
    }

    /// Goes on saving to the same file after an Open, overwriting the document it held with
    /// the one now in the database (the next save is due after `quiet`; call
    /// [`save_now`](Self::save_now) to have it at once). It accepts every Open so far; a
    /// later Open stops the autosave again.
    ///
    /// ```
    /// # use diesel_sqlite_backup::{memory_pool, Autosave, AutosaveOptions, BackupExt};
    /// # let dir = tempfile::tempdir()?;
    /// # let pool = memory_pool()?;
    /// let autosave = Autosave::start(&pool, dir.path().join("a.db"), AutosaveOptions::default())?;
    /// let blank = memory_pool()?.get()?.snapshot()?;
    /// pool.get()?.restore_from_bytes(&blank)?; // Open an empty document
    /// assert!(autosave.save_now().is_err());
    /// autosave.resume(); // "yes, replace a.db"
    /// autosave.save_now()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resume(&self) {
        self.shared.resume(self.opens_completed());
    }

    /// The file the autosave saves to (absolute; the one given to [`start`](Self::start)
    /// until a [`retarget`](Self::retarget)).
    pub fn path(&self) -> PathBuf {
        self.shared.path()
    }

    /// Saves what is pending, stops the thread, and returns the error of that last save if it
    /// failed. Nothing is saved after it returns. Called from the autosave's own thread (an
    /// `on_error` or `save_options` callback that owns it), it cannot wait: it returns at
    /// once, the final save runs when the callback returns, and its error goes to `on_error`.
    ///
    /// ```
    /// # use diesel::RunQueryDsl;
    /// # use diesel_sqlite_backup::{memory_pool, Autosave, AutosaveOptions};
    /// # let dir = tempfile::tempdir()?;
    /// # let pool = memory_pool()?;
    /// let autosave = Autosave::start(&pool, dir.path().join("a.db"), AutosaveOptions::default())?;
    /// diesel::sql_query("CREATE TABLE t(x)").execute(&mut pool.get()?)?;
    /// autosave.stop()?; // the table is in the file
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stop(mut self) -> Result<(), BackupError> {
        self.finish(Stop::Returned)
    }

    /// Completed saves so far, `start`'s own included. Saves that failed are not counted.
    ///
    /// ```
    /// # use diesel_sqlite_backup::{memory_pool, Autosave, AutosaveOptions};
    /// # let dir = tempfile::tempdir()?;
    /// # let pool = memory_pool()?;
    /// let autosave = Autosave::start(&pool, dir.path().join("a.db"), AutosaveOptions::default())?;
    /// assert_eq!(autosave.saves(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn saves(&self) -> u64 {
        self.shared.saves.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Opens into the database so far.
    fn opens_completed(&self) -> u64 {
        self.tracker.as_ref().map_or(0, |t| t.opens.completed())
    }

    /// The error for `what` called on the autosave's own thread, where it would wait for
    /// itself.
    fn refuse_own_thread(&self, what: &str) -> Result<(), BackupError> {
        if !self.on_own_thread() {
            return Ok(());
        }
        Err(BackupError::InvalidInput {
            op: Operation::Autosave,
            path: self.shared.path(),
            reason: format!(
                "{what} was called on the autosave's own thread (from on_error or \
                 save_options), where it would wait for itself"
            ),
        })
    }

    fn on_own_thread(&self) -> bool {
        self.thread
            .as_ref()
            .is_some_and(|t| t.thread().id() == std::thread::current().id())
    }

    fn finish(&mut self, how: Stop) -> Result<(), BackupError> {
        if self.on_own_thread() {
            // Stopped from its own callback: the thread saves what is pending once the
            // callback returns, and gives a failure to `on_error`; it cannot wait for itself.
            self.shared.request_stop(Stop::Reported);
            return Ok(());
        }
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.shared.request_stop(how);
        thread.join().unwrap_or_else(|_| Err(thread_ended()))
    }
}

/// Async twins of the calls that wait for the autosave thread (feature `async`): they wait
/// on tokio's blocking pool, not on a runtime worker. Dropping the future does not cancel
/// the call: the save or the stop goes on to its end on the blocking pool.
#[cfg(feature = "async")]
impl Autosave {
    /// [`save_now`](Self::save_now), waiting on the blocking pool.
    ///
    /// ```
    /// use diesel_sqlite_backup::{Autosave, AutosaveOptions, MemoryDatabase};
    ///
    /// # #[tokio::main(flavor = "multi_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let db = MemoryDatabase::new()?;
    /// let autosave = Autosave::start_with_database(&db, dir.path().join("a.db"), AutosaveOptions::default())?;
    /// autosave.save_now_async().await?;
    /// autosave.stop_async().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn save_now_async(&self) -> Result<(), BackupError> {
        let shared = Arc::clone(&self.shared);
        let saved = tokio::task::spawn_blocking(move || shared.save_now());
        saved
            .await
            .map_err(join_failed)?
            .unwrap_or_else(|| Err(thread_ended()))
    }

    /// [`stop`](Self::stop), waiting on the blocking pool.
    ///
    /// ```
    /// use diesel_sqlite_backup::{Autosave, AutosaveOptions, MemoryDatabase};
    ///
    /// # #[tokio::main(flavor = "multi_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let db = MemoryDatabase::new()?;
    /// let autosave = Autosave::start_with_database(&db, dir.path().join("a.db"), AutosaveOptions::default())?;
    /// autosave.stop_async().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn stop_async(self) -> Result<(), BackupError> {
        tokio::task::spawn_blocking(move || self.stop())
            .await
            .map_err(join_failed)?
    }
}

/// A blocking task that panicked or was dropped with its runtime.
#[cfg(feature = "async")]
fn join_failed(e: tokio::task::JoinError) -> BackupError {
    BackupError::init(Operation::Autosave, e)
}

impl Drop for Autosave {
    fn drop(&mut self) {
        // The thread hands a final error to `on_error` itself.
        let _ = self.finish(Stop::Reported);
    }
}

impl fmt::Debug for Autosave {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Autosave")
            .field("path", &self.shared.path())
            .field("saves", &self.saves())
            .finish_non_exhaustive()
    }
}

/// `path` made absolute, so later saves go to the same file if the working directory changes.
fn absolute(path: &Path) -> Result<PathBuf, BackupError> {
    std::path::absolute(path)
        .map_err(|e| BackupError::io(Operation::Autosave, path, "resolve path", e))
}

fn thread_ended() -> BackupError {
    BackupError::init(
        Operation::Autosave,
        "the autosave thread ended unexpectedly (it panicked)",
    )
}

/// A connection of our own to the database of `conn`.
pub(crate) fn open_private(conn: &mut SqliteConnection) -> Result<OwnedDb, BackupError> {
    let op = Operation::Autosave;
    let db = crate::sqlite::raw_handle(conn);
    let name = db.filename(c"main").unwrap_or_default();
    let vfs = db.vfs_name(c"main");
    let target = path_cstring(Path::new(&name));
    let flags = libsqlite3_sys::SQLITE_OPEN_READWRITE;
    let opened = target.map(|t| OwnedDb::open_with_vfs(&t, flags, vfs.as_deref()));
    match opened {
        Some(Ok(private)) => Ok(private),
        Some(Err(failure)) => Err(BackupError::Sqlite {
            op,
            path: PathBuf::from(name),
            failure,
        }),
        None => Err(BackupError::nul_in_path(op, Path::new(&name))),
    }
}
