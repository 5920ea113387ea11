//! The autosave thread: looks at the database's change counter through its private
//! connection, and saves when the schedule says so, when `save_now` asks, and once more when
//! stopped.

use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::ThreadId;
use std::time::Instant;

use super::lock::TargetLock;
use super::options::AutosaveOptions;
use super::schedule::{Schedule, Watch};
use super::tickets::{self, Tickets};
use crate::error::BusyReason;
use crate::error::{BackupError, Operation};
use crate::save::save_from;
use crate::sqlite::budget::Budget;
use crate::sqlite::memdb::opens::Flush;
use crate::sqlite::memdb::record::Tracker;
use crate::sqlite::OwnedDb;

/// What the autosave's handle and its thread share.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the thread: a `save_now` ticket or a stop.
    wake: Condvar,
    /// Wakes `save_now` callers: a ticket was answered.
    answered: Condvar,
    pub(crate) saves: AtomicU64,
    /// The autosave's thread, once started.
    pub(crate) thread: OnceLock<ThreadId>,
}

struct State {
    /// Where saves go (a retarget changes it once the thread takes it up).
    path: PathBuf,
    /// The Opens into the database (`sqlite::memdb::opens`) the app has accepted, at `start`,
    /// `resume` or `retarget`: a save that finds more is refused.
    accepted: u64,
    /// A retarget for the thread to take up before its next save.
    retarget: Option<Retarget>,
    /// `resume` asks for the refused changes to be saved soon.
    resumed: bool,
    /// `save_now` tickets.
    tickets: Tickets,
    stop: Option<Stop>,
}

/// Before an Open replaces the database: the commits made so far go to the file first, as a
/// `save_now` waiting within the Open's budget, so an Open right after a commit loses
/// nothing. When that save fails, so does the Open, and the database keeps its document.
impl Flush for Shared {
    fn flush(&self, budget: &Budget) -> Result<(), BackupError> {
        if self.thread.get() == Some(&std::thread::current().id()) {
            return Err(BackupError::InvalidInput {
                op: budget.op(),
                path: self.path(),
                reason: "an Open into the autosaved database on the autosave's own thread \
                         (from on_error or save_options) cannot wait for the autosave to \
                         save the commits made before it"
                    .into(),
            });
        }
        let ticket = self.ask();
        let mut attempt = 0;
        loop {
            {
                let state = self.lock();
                match state.tickets.answer(ticket) {
                    // Nothing to save to: the database holds an Open not yet accepted.
                    Some(Err(BackupError::DocumentOpened { .. })) => return Ok(()),
                    Some(answer) => return answer,
                    None if state.tickets.gone => return Ok(()), // stopped: its last save is done
                    None => {}
                }
            }
            if !budget.wait(attempt) {
                return Err(budget.gave_up_because(&self.path(), BusyReason::AutosaveBehind));
            }
            attempt += 1;
        }
    }
}

/// A new target for the thread: saves go there from its next save on.
pub(crate) struct Retarget {
    pub(crate) path: PathBuf,
    pub(crate) lock: TargetLock,
    pub(crate) accepted: u64,
}

/// How the autosave is being stopped, which decides where a final error goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// `stop()`: returned to the caller.
    Returned,
    /// Drop: given to `on_error`.
    Reported,
}

impl Shared {
    pub(crate) fn new(saves: u64, path: PathBuf, accepted: u64) -> Self {
        let state = State {
            path,
            accepted,
            retarget: None,
            resumed: false,
            tickets: Tickets::default(),
            stop: None,
        };
        Shared {
            state: Mutex::new(state),
            wake: Condvar::new(),
            answered: Condvar::new(),
            saves: AtomicU64::new(saves),
            thread: OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Asks the thread for a save and waits for its answer. `None` when the thread has
    /// ended without answering.
    pub(crate) fn save_now(&self) -> Option<Result<(), BackupError>> {
        let ticket = self.ask();
        tickets::wait(self.lock(), &self.answered, ticket, |s| &s.tickets)
    }

    /// Hands the thread a ticket for a save of every commit so far, and returns it.
    fn ask(&self) -> u64 {
        let ticket = self.lock().tickets.take();
        self.wake.notify_all();
        ticket
    }

    /// Marks the thread ended when dropped, even by a panic, and wakes every waiter.
    pub(crate) fn on_exit(&self) -> impl Drop + '_ {
        struct Exit<'a>(&'a Shared);
        impl Drop for Exit<'_> {
            fn drop(&mut self) {
                self.0.lock().tickets.gone = true;
                self.0.answered.notify_all();
            }
        }
        Exit(self)
    }

    pub(crate) fn request_stop(&self, how: Stop) {
        self.lock().stop.get_or_insert(how);
        self.wake.notify_all();
    }

    /// Where saves go now.
    pub(crate) fn path(&self) -> PathBuf {
        self.lock().path.clone()
    }

    /// Accepts the Opens up to `accepted` for the current file, and wakes the thread.
    pub(crate) fn resume(&self, accepted: u64) {
        let mut state = self.lock();
        state.accepted = state.accepted.max(accepted);
        state.resumed = true;
        self.wake.notify_all();
    }

    /// Hands the thread a new target (replacing one it has not taken up yet).
    pub(crate) fn retarget(&self, to: Retarget) {
        self.lock().retarget = Some(to);
        self.wake.notify_all();
    }
}

/// The thread's own state: its connection, where it saves, and when.
pub(crate) struct Worker {
    pub(crate) db: OwnedDb,
    pub(crate) path: PathBuf,
    /// Makes this the only autosave saving to `path`.
    pub(crate) lock: TargetLock,
    /// The database's write record, which counts the Opens into it.
    pub(crate) tracker: Option<Arc<Tracker>>,
    /// The Opens count last reported to `on_error` as refused.
    pub(crate) reported: Option<u64>,
    pub(crate) options: AutosaveOptions,
    /// What the last look at the database header saw.
    pub(crate) watch: Watch,
}

impl Worker {
    /// Runs until stopped; returns the final save's error when `stop()` should return it.
    pub(crate) fn run(mut self, shared: &Shared) -> Result<(), BackupError> {
        let mut schedule = Schedule::new(self.options.every, self.options.quiet);
        loop {
            let (tickets, stop, retarget, resumed) = {
                let mut state = shared.lock();
                let idle = state.retarget.is_none() && !state.resumed;
                let asked = state.tickets.waiting(state.tickets.requested());
                if idle && state.stop.is_none() && !asked {
                    let sleep = schedule.sleep(Instant::now());
                    state = shared
                        .wake
                        .wait_timeout(state, sleep)
                        .unwrap_or_else(|poison| poison.into_inner())
                        .0;
                }
                let retarget = state.retarget.take();
                if let Some(to) = &retarget {
                    // The new file and the Opens accepted with it go together, between saves.
                    state.path = to.path.clone();
                    state.accepted = state.accepted.max(to.accepted);
                }
                let resumed = std::mem::take(&mut state.resumed);
                (state.tickets.requested(), state.stop, retarget, resumed)
            };
            let moved = retarget.is_some();
            if let Some(to) = retarget {
                self.path = to.path;
                self.lock = to.lock; // releases the old file's lock
            }
            let unsure = self.watch.look(header(&self.db), &mut schedule);
            if moved || (resumed && self.reported.is_some()) {
                // The new file needs the whole database; refused changes wait no longer.
                let at = self.watch.looked_at();
                schedule.changed(at, at);
            }
            if let Some(how) = stop {
                // Nothing is saved after this: the handle waits for the thread to end.
                let result = if schedule.is_pending() || unsure {
                    self.save(shared, &mut schedule)
                } else {
                    Ok(())
                };
                return match (how, result) {
                    (Stop::Reported, Err(e)) => {
                        if !matches!(e, BackupError::DocumentOpened { .. }) {
                            self.report(&e); // a refusal was reported when first met
                        }
                        Ok(())
                    }
                    (_, result) => result,
                };
            }
            let asked = shared.lock().tickets.waiting(tickets);
            if asked || schedule.is_due(Instant::now()) {
                let result = if asked && !schedule.is_pending() && !unsure {
                    Ok(()) // the last save already holds every commit
                } else {
                    self.save(shared, &mut schedule)
                };
                match result {
                    _ if asked => answer(shared, tickets, &result),
                    Err(BackupError::DocumentOpened { .. }) | Ok(()) => {}
                    Err(e) => self.report(&e),
                }
            }
        }
    }

    /// One save of everything committed so far, never panicking. Refused, and reported to
    /// `on_error` once per Open, when the database holds a document opened since the app
    /// last accepted one ([`BackupError::DocumentOpened`]).
    fn save(&mut self, shared: &Shared, schedule: &mut Schedule) -> Result<(), BackupError> {
        let span = tracing::info_span!("autosave", path = %self.path.display(),
            retry = schedule.failures(), elapsed_ms = tracing::field::Empty,
            error = tracing::field::Empty);
        crate::observe::in_span(span, || {
            let result = self.save_once(shared, schedule);
            if result.is_err() {
                tracing::debug!("the changes stay pending: retried after a new change or `every`");
            }
            result
        })
    }

    fn save_once(&mut self, shared: &Shared, schedule: &mut Schedule) -> Result<(), BackupError> {
        let mut refused = None;
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            let mut options = (self.options.save_options)().schema("main");
            let budget = options.budget(Operation::Save);
            // No Open can start while this is held, so the count read here is the one the
            // saved content belongs to.
            let saving = match self.tracker.as_deref() {
                Some(t) => Some(t.opens.save(&budget, &self.path)?),
                None => None,
            };
            if let Some(s) = &saving {
                if s.completed != shared.lock().accepted {
                    refused = Some(s.completed);
                    return Err(BackupError::DocumentOpened {
                        op: Operation::Autosave,
                        path: self.path.clone(),
                    });
                }
            }
            save_from(&self.db.db(), &self.path, &mut options, &budget)
        }))
        .unwrap_or_else(|payload| {
            Err(BackupError::init(
                Operation::Autosave,
                format!("a save panicked: {}", panic_message(&payload)),
            ))
        });
        match &result {
            Ok(()) => {
                shared.saves.fetch_add(1, Ordering::Relaxed);
                schedule.saved();
                self.reported = None;
            }
            Err(_) => schedule.failed(Instant::now()),
        }
        if let (Some(opens), Err(e)) = (refused, &result) {
            if self.reported != Some(opens) {
                self.reported = Some(opens);
                self.report(e);
            }
        }
        result
    }

    fn report(&mut self, error: &BackupError) {
        let on_error = &mut self.options.on_error;
        let _ = panic::catch_unwind(AssertUnwindSafe(|| on_error(error)));
    }
}

/// Answers every ticket up to `tickets` with `result`.
fn answer(shared: &Shared, tickets: u64, result: &Result<(), BackupError>) {
    shared.lock().tickets.settle(tickets, result);
    shared.answered.notify_all();
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// The database header (its first 100 bytes) as the pool's connections last wrote it. SQLite
/// bumps the change counter in it (bytes 24..28) in every commit that changes the database
/// and never on reads (it is what `PRAGMA data_version` compares), and a backup into the
/// database (a restore) sets the schema cookie to one past its old value, so no change
/// leaves the header as it was. Read through SQLite's own file handle without a transaction:
/// memdb serves each read under its store's mutex, so the bytes are never torn, and no
/// SQLite lock is taken, so writers never wait for a look. A look that races a commit may
/// see the new header before the commit ends; the save that follows takes a read lock,
/// which waits for the commit.
pub(crate) fn header(db: &OwnedDb) -> Option<[u8; 100]> {
    let mut header = [0u8; 100];
    db.db().read_file(c"main", &mut header).ok()?;
    Some(header)
}
