//! The autosave thread: looks at the database's change counter through its private
//! connection, and saves when the schedule says so, when `save_now` asks, and once more when
//! stopped.

use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::options::AutosaveOptions;
use super::schedule::Schedule;
use crate::backup::save_from;
use crate::error::{BackupError, Operation};
use crate::raw::OwnedDb;

/// What the autosave's handle and its thread share.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the thread: a `save_now` ticket or a stop.
    wake: Condvar,
    /// Wakes `save_now` callers: a ticket was answered.
    answered: Condvar,
    pub(crate) saves: AtomicU64,
}

#[derive(Default)]
struct State {
    /// `save_now` tickets handed out, and answered so far.
    requested: u64,
    answered: u64,
    /// Every ticket up to this one was answered by a successful save.
    answered_ok: u64,
    /// The error of the last failed answer.
    last_error: Option<BackupError>,
    stop: Option<Stop>,
    /// The thread has ended (stopped, or died): nobody will answer new tickets.
    gone: bool,
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
    pub(crate) fn new(saves: u64) -> Self {
        Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            answered: Condvar::new(),
            saves: AtomicU64::new(saves),
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
        let mut state = self.lock();
        state.requested += 1;
        let ticket = state.requested;
        self.wake.notify_all();
        while state.answered < ticket {
            if state.gone {
                return None;
            }
            state = self
                .answered
                .wait(state)
                .unwrap_or_else(|poison| poison.into_inner());
        }
        Some(match &state.last_error {
            Some(e) if state.answered_ok < ticket => Err(e.duplicate()),
            _ => Ok(()),
        })
    }

    /// Marks the thread ended when dropped, even by a panic, and wakes every waiter.
    pub(crate) fn on_exit(&self) -> impl Drop + '_ {
        struct Exit<'a>(&'a Shared);
        impl Drop for Exit<'_> {
            fn drop(&mut self) {
                self.0.lock().gone = true;
                self.0.answered.notify_all();
            }
        }
        Exit(self)
    }

    pub(crate) fn request_stop(&self, how: Stop) {
        self.lock().stop.get_or_insert(how);
        self.wake.notify_all();
    }
}

/// The thread's own state: its connection, where it saves, and when.
pub(crate) struct Worker {
    pub(crate) db: OwnedDb,
    pub(crate) path: PathBuf,
    pub(crate) options: AutosaveOptions,
    /// The database header at the last look, and when that look was.
    pub(crate) version: [u8; 100],
    pub(crate) looked_at: Instant,
}

impl Worker {
    /// Runs until stopped; returns the final save's error when `stop()` should return it.
    pub(crate) fn run(mut self, shared: &Shared) -> Result<(), BackupError> {
        let mut schedule = Schedule::new(self.options.every, self.options.quiet);
        loop {
            let (tickets, stop) = {
                let mut state = shared.lock();
                if state.stop.is_none() && state.requested == state.answered {
                    let sleep = schedule.sleep(Instant::now());
                    state = shared
                        .wake
                        .wait_timeout(state, sleep)
                        .unwrap_or_else(|poison| poison.into_inner())
                        .0;
                }
                (state.requested, state.stop)
            };
            let unsure = self.look(&mut schedule);
            if let Some(how) = stop {
                // Nothing is saved after this: the handle waits for the thread to end.
                let result = if schedule.is_pending() || unsure {
                    self.save(shared, &mut schedule)
                } else {
                    Ok(())
                };
                return match (how, result) {
                    (Stop::Reported, Err(e)) => {
                        self.report(&e);
                        Ok(())
                    }
                    (_, result) => result,
                };
            }
            let asked = tickets > shared.lock().answered;
            if asked || schedule.is_due(Instant::now()) {
                let result = if asked && !schedule.is_pending() && !unsure {
                    Ok(()) // the last save already holds every commit
                } else {
                    self.save(shared, &mut schedule)
                };
                match result {
                    _ if asked => answer(shared, tickets, &result),
                    Err(e) => self.report(&e),
                    Ok(()) => {}
                }
            }
        }
    }

    /// Reads the database's header and tells the schedule about a change. Returns
    /// true when it could not be read: a change cannot be ruled out.
    fn look(&mut self, schedule: &mut Schedule) -> bool {
        let now = Instant::now();
        let previous = std::mem::replace(&mut self.looked_at, now);
        match header(&self.db) {
            Some(v) if v != self.version => {
                self.version = v;
                schedule.changed(previous, now);
                false
            }
            Some(_) => false,
            None => true,
        }
    }

    /// One save of everything committed so far, never panicking.
    fn save(&mut self, shared: &Shared, schedule: &mut Schedule) -> Result<(), BackupError> {
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            let mut options = (self.options.save_options)().schema("main");
            let budget = options.budget(Operation::Save);
            save_from(&self.db.db(), &self.path, &mut options, &budget)
        }))
        .unwrap_or_else(|payload| {
            Err(BackupError::Init {
                op: Operation::Autosave,
                source: format!("a save panicked: {}", panic_message(&payload)).into(),
            })
        });
        match &result {
            Ok(()) => {
                shared.saves.fetch_add(1, Ordering::Relaxed);
                schedule.saved();
            }
            Err(_) => schedule.failed(Instant::now()),
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
    let mut state = shared.lock();
    state.answered = state.answered.max(tickets);
    match result {
        Ok(()) => state.answered_ok = state.answered_ok.max(tickets),
        Err(e) => state.last_error = Some(e.duplicate()),
    }
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
