//! The `sqlite3_backup` object: an internal RAII wrapper over raw handles, and the public
//! stepped [`Backup`] handle for callers who drive the loop themselves.

use std::ffi::CStr;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::ptr::NonNull;

use diesel::SqliteConnection;
use libsqlite3_sys as ffi;

use super::options::Progress;
use crate::error::{BackupError, Operation, SqliteFailure};
use crate::sqlite::DbRef;

/// What one step did, as the engine sees it.
pub(crate) enum StepOutcome {
    Done,
    More,
    Busy(SqliteFailure),
}

/// An initialised `sqlite3_backup`, finished exactly once: by [`RawBackup::finish`] or on drop.
/// The borrows of both connections outlive it, so it is always finished before either closes.
pub(crate) struct RawBackup<'a> {
    ptr: NonNull<ffi::sqlite3_backup>,
    dest: NonNull<ffi::sqlite3>,
    dest_schema: std::ffi::CString,
    _conns: PhantomData<&'a mut ffi::sqlite3>,
}

impl<'a> RawBackup<'a> {
    pub(crate) fn new(
        dest: &DbRef<'a>,
        dest_schema: &CStr,
        src: &DbRef<'a>,
        src_schema: &CStr,
    ) -> Result<Self, SqliteFailure> {
        // SAFETY: both handles are open for 'a (DbRef invariant) and the names are
        // NUL-terminated. On failure SQLite leaves the error on the destination connection.
        let ptr = unsafe {
            ffi::sqlite3_backup_init(
                dest.as_ptr(),
                dest_schema.as_ptr(),
                src.as_ptr(),
                src_schema.as_ptr(),
            )
        };
        match NonNull::new(ptr) {
            Some(ptr) => Ok(RawBackup {
                ptr,
                // SAFETY: non-null, taken from a live DbRef.
                dest: unsafe { NonNull::new_unchecked(dest.as_ptr()) },
                dest_schema: dest_schema.to_owned(),
                _conns: PhantomData,
            }),
            // SAFETY: reading the error state of an open connection.
            None => Err(dest.failure(unsafe { ffi::sqlite3_errcode(dest.as_ptr()) })),
        }
    }

    fn dest(&self) -> DbRef<'a> {
        // SAFETY: the destination outlives 'a, as `new`'s borrow guarantees.
        unsafe { DbRef::from_raw(self.dest) }
    }

    /// Copies up to `pages` pages (-1: all). Busy and locked are reported, not failed.
    pub(crate) fn step(&mut self, pages: i32) -> Result<StepOutcome, SqliteFailure> {
        // SAFETY: `ptr` is a live backup object (not finished until drop/finish); the
        // connections it uses are alive and not used elsewhere during the call.
        let rc = unsafe { ffi::sqlite3_backup_step(self.ptr.as_ptr(), pages) };
        match rc & 0xff {
            ffi::SQLITE_DONE => {
                self.forget_cached_header();
                Ok(StepOutcome::Done)
            }
            ffi::SQLITE_OK => Ok(StepOutcome::More),
            ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED => {
                Ok(StepOutcome::Busy(crate::sqlite::failure_from_code(rc)))
            }
            _ => Err(self.dest().failure(rc)),
        }
    }

    /// The crate's memdb rewrites WAL version bytes and odd encoding fields as page 1 reaches
    /// the database, but the destination connection's own page cache still holds page 1 as the
    /// backup copied it.
    /// Its pages are all clean and unpinned once the copy has committed, so releasing them
    /// makes its next read take page 1 from the database.
    fn forget_cached_header(&self) {
        let dest = self.dest();
        if dest.storage(&self.dest_schema) == crate::sqlite::Storage::PatchedMemdb {
            // SAFETY: open handle, used by this thread; only frees unused cache pages.
            unsafe { ffi::sqlite3_db_release_memory(dest.as_ptr()) };
        }
    }

    pub(crate) fn progress(&self) -> Progress {
        // SAFETY: live backup object; both calls only read its counters.
        unsafe {
            Progress {
                remaining: ffi::sqlite3_backup_remaining(self.ptr.as_ptr()).max(0) as u32,
                page_count: ffi::sqlite3_backup_pagecount(self.ptr.as_ptr()).max(0) as u32,
            }
        }
    }

    /// Releases the backup. A destination left mid-copy is rolled back by SQLite.
    ///
    /// `sqlite3_backup_finish` repeats the last step's error; BUSY and LOCKED from a step
    /// that was merely retried are not new failures, so they are not reported here.
    pub(crate) fn finish(self) -> Result<(), SqliteFailure> {
        let ptr = self.ptr;
        let dest = self.dest();
        std::mem::forget(self);
        // SAFETY: `self` is forgotten, so this is the one and only finish of `ptr`.
        let rc = unsafe { ffi::sqlite3_backup_finish(ptr.as_ptr()) };
        match rc & 0xff {
            ffi::SQLITE_OK | ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED => Ok(()),
            _ => Err(dest.failure(rc)),
        }
    }
}

impl Drop for RawBackup<'_> {
    fn drop(&mut self) {
        // SAFETY: drop runs only when `finish` did not (it forgets self), so this is the one
        // finish; errors are moot because the copy is being abandoned.
        unsafe { ffi::sqlite3_backup_finish(self.ptr.as_ptr()) };
    }
}

/// What a call to [`Backup::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepResult {
    /// Every page is copied and the destination committed.
    Done,
    /// Pages remain; call `step` again.
    More,
    /// A lock was not available (`SQLITE_BUSY` or `SQLITE_LOCKED`); nothing failed, call
    /// `step` again later.
    Busy,
}

/// A stepped backup between two Diesel connections, for callers who drive the loop
/// themselves. Dropping it before it is done cancels the copy: SQLite rolls the destination
/// back and the backup object is finished before either connection can close.
///
/// Most code wants [`BackupExt::backup_to`](crate::BackupExt::backup_to), which adds the
/// deadline, busy backoff and restart handling on top of this.
///
/// ```
/// use diesel::{Connection, RunQueryDsl, SqliteConnection};
/// use diesel_sqlite_backup::{Backup, StepResult};
///
/// let mut src = SqliteConnection::establish(":memory:")?;
/// diesel::sql_query("CREATE TABLE t(x)").execute(&mut src)?;
/// let mut dst = SqliteConnection::establish(":memory:")?;
/// let mut backup = Backup::new(&mut src, &mut dst)?;
/// while backup.step(1)? != StepResult::Done {
///     println!("{} of {} pages left", backup.progress().remaining, backup.progress().page_count);
/// }
/// backup.finish()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Backup<'a> {
    state: State<'a>,
}

enum State<'a> {
    /// Not started yet: a lock another connection holds kept one of the connections from
    /// reading its schema, which the crate needs to reach its handle.
    Waiting(Waiting<'a>),
    Started {
        // Dropped first: the destination is rolled back before the Open ends.
        raw: RawBackup<'a>,
        dest_path: PathBuf,
        /// Into a pool's database: an Open, under way until done or dropped (autosaves wait).
        opening: Option<crate::sqlite::memdb::opens::Opening>,
    },
}

/// A started copy: the backup, the destination's name, and the Open it is.
type Started<'a> = (
    RawBackup<'a>,
    PathBuf,
    Option<crate::sqlite::memdb::opens::Opening>,
);

struct Waiting<'a> {
    src: &'a mut SqliteConnection,
    src_schema: String,
    dst: &'a mut SqliteConnection,
    dst_schema: String,
}

impl<'a> Backup<'a> {
    /// Starts copying `src`'s `main` database over `dst`'s `main` database.
    ///
    /// Like `sqlite3_backup_init`, this adds no wait of its own (a connection's own busy
    /// timeout still applies): a lock another connection holds is reported by
    /// [`step`](Self::step) as [`StepResult::Busy`]. When such a lock keeps a connection from
    /// reading its schema (a fresh connection to a file another connection writes), the copy
    /// starts, and the checks below run, at the first step that gets past it.
    ///
    /// # Errors
    /// - [`BackupError::SourceInWriteTransaction`] or [`BackupError::DestinationInUse`] if
    ///   `src` is writing or `dst` has a transaction open.
    /// - [`BackupError::SameFile`] if both are connections to one pool's database: the copy
    ///   could only wait for itself.
    /// - [`BackupError::InvalidInput`] if `dst` cannot take `src` page for page (a
    ///   different page size or text encoding, or a header the destination would keep that
    ///   SQLite never writes); [`BackupExt::backup_to`] converts those.
    ///
    /// [`BackupExt::backup_to`]: crate::BackupExt::backup_to
    pub fn new(
        src: &'a mut SqliteConnection,
        dst: &'a mut SqliteConnection,
    ) -> Result<Self, BackupError> {
        Self::with_schemas(src, "main", dst, "main")
    }

    /// Starts copying `src_schema` of `src` over `dst_schema` of `dst`.
    pub fn with_schemas(
        src: &'a mut SqliteConnection,
        src_schema: &str,
        dst: &'a mut SqliteConnection,
        dst_schema: &str,
    ) -> Result<Self, BackupError> {
        let mut waiting = Waiting {
            src,
            src_schema: src_schema.to_owned(),
            dst,
            dst_schema: dst_schema.to_owned(),
        };
        let state = match waiting.start()? {
            Some((raw, dest_path, opening)) => State::Started {
                raw,
                dest_path,
                opening,
            },
            None => State::Waiting(waiting),
        };
        Ok(Backup { state })
    }

    /// Copies up to `pages` pages; zero or less copies all that remain. A copy that has not
    /// started yet (see [`new`](Self::new)) starts first: `Busy` while a lock still keeps it
    /// from starting, and the errors of `new` when it cannot start.
    pub fn step(&mut self, pages: i32) -> Result<StepResult, BackupError> {
        if let State::Waiting(waiting) = &mut self.state {
            match waiting.start()? {
                Some((raw, dest_path, opening)) => {
                    self.state = State::Started {
                        raw,
                        dest_path,
                        opening,
                    }
                }
                None => return Ok(StepResult::Busy),
            }
        }
        let State::Started {
            raw,
            dest_path,
            opening,
        } = &mut self.state
        else {
            unreachable!("started above");
        };
        let pages = if pages <= 0 { -1 } else { pages };
        match raw.step(pages) {
            Ok(StepOutcome::Done) => {
                if let Some(opening) = opening.take() {
                    opening.completed();
                }
                Ok(StepResult::Done)
            }
            Ok(StepOutcome::More) => Ok(StepResult::More),
            Ok(StepOutcome::Busy(_)) => Ok(StepResult::Busy),
            Err(failure) => Err(BackupError::Sqlite {
                op: Operation::Backup,
                path: dest_path.clone(),
                failure,
            }),
        }
    }

    /// Pages remaining and total, as of the last step (both 0 before the copy started).
    pub fn progress(&self) -> Progress {
        match &self.state {
            State::Started { raw, .. } => raw.progress(),
            State::Waiting(_) => Progress {
                remaining: 0,
                page_count: 0,
            },
        }
    }

    /// Releases the backup and reports any error SQLite kept from the steps.
    ///
    /// `Ok` means no step failed, not that the copy is complete: a backup finished before
    /// [`step`](Self::step) returned [`StepResult::Done`] (for example right after a
    /// [`StepResult::Busy`]) is cancelled and its destination rolled back. Check the last
    /// step's result, or that `progress().remaining` is 0, to know the copy completed.
    pub fn finish(self) -> Result<(), BackupError> {
        let State::Started { raw, dest_path, .. } = self.state else {
            return Ok(()); // never started: nothing was written
        };
        raw.finish().map_err(|failure| BackupError::Sqlite {
            op: Operation::Backup,
            path: dest_path,
            failure,
        })
    }
}

impl<'a> Waiting<'a> {
    /// Checks both connections and initialises the backup, without waiting for any lock:
    /// `None` when a lock kept a connection's handle out of reach.
    fn start(&mut self) -> Result<Option<Started<'a>>, BackupError> {
        let op = Operation::Backup;
        // A budget that is spent at once: a stepped copy never waits here (see `new`).
        let budget = crate::sqlite::Budget::new(op, std::time::Duration::ZERO, None);
        let src = crate::sqlite::raw_handle(self.src).as_ptr();
        let dst = crate::sqlite::raw_handle(self.dst).as_ptr();
        let (Some(src), Some(dst)) = (NonNull::new(src), NonNull::new(dst)) else {
            unreachable!("raw_handle never returns null");
        };
        // SAFETY: both are the open handles of the connections `Backup::with_schemas`
        // borrowed mutably for 'a, which its signature keeps borrowed while the Backup lives:
        // for 'a they stay open, are used on this thread only, and Diesel cannot use them
        // (the conditions `sqlite::raw_handle` argues, for the whole borrow).
        let (src, dst) = unsafe { (DbRef::<'a>::from_raw(src), DbRef::<'a>::from_raw(dst)) };
        let src_schema = super::checks::schema(&src, &self.src_schema, op)?;
        let dst_schema = super::checks::schema(&dst, &self.dst_schema, op)?;
        super::checks::source_not_writing(&src, &src_schema, op)?;
        super::checks::distinct_databases(&src, &src_schema, &dst, &dst_schema, op)?;
        let dest_path = super::checks::dest_idle(&dst, &dst_schema, op)?;
        // A stepped copy has no place to keep a converted copy of the source: refuse before
        // anything is written, and point at the call that converts. A source or destination
        // too busy to inspect now is left to the steps, which report busy locks themselves.
        let plan = super::convert::plan(&src, &src_schema, &dst, &dst_schema);
        if let Some(plan) = plan.ok().filter(|p| *p != super::convert::Plan::Direct) {
            return Err(BackupError::InvalidInput {
                op,
                path: dest_path,
                reason: format!(
                    "the destination cannot take this source page for page ({plan:?}); \
                     BackupExt::backup_to converts it first"
                ),
            });
        }
        let tracker = crate::sqlite::memdb::record_of(&dst, &dst_schema);
        let opening = match crate::sqlite::memdb::opens::begin(tracker, &budget, &dest_path) {
            Ok(opening) => opening,
            // An autosave is saving this database right now: the next step tries again.
            Err(e) if e.is_busy() => return Ok(None),
            Err(e) => return Err(e),
        };
        let raw = RawBackup::new(&dst, &dst_schema, &src, &src_schema).map_err(|failure| {
            BackupError::Sqlite {
                op,
                path: dest_path.clone(),
                failure,
            }
        })?;
        Ok(Some((raw, dest_path, Some(opening))))
    }
}
