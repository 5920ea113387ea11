//! Opens into a pool's database, counted for autosave: an Open (`restore_from`,
//! `restore_from_bytes`, `backup_to` or `Template::copy_into` into the database) puts another
//! document in memory, and an autosave must not write it over the file of the one before
//! unless the app says so.
//!
//! An Open and an autosave's save exclude each other here, so a save either ends before an
//! Open writes anything or starts after it, seeing the count it left. A save overlapping an
//! Open could otherwise copy part of the new document over the old file (a stepped backup
//! restarts on a changed source and copies the new content). Only autosaves take part:
//! explicit saves never wait here. Each side waits for the other within its own budget.
//!
//! Before an Open replaces the database, each autosave of it saves the commits made so far
//! to its file (a [`Flush`] it registered), so none is lost with the old document.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::error::BackupError;
use crate::error::BusyReason;
use crate::sqlite::budget::Budget;
use crate::sqlite::memdb::record::Tracker;

/// Gets the commits made so far into a file before an Open replaces them: an autosave,
/// which registers itself (this layer knows nothing of autosaves).
pub(crate) trait Flush: Send + Sync {
    /// Returns once the commits made before the call are saved, or there is nothing to save
    /// them to; waits within `budget`, and fails when they could not be saved.
    fn flush(&self, budget: &Budget) -> Result<(), BackupError>;
}

#[derive(Default)]
pub(crate) struct Opens {
    state: Mutex<State>,
    /// The autosaves of this database; gone ones are skipped.
    flushes: Mutex<Vec<Weak<dyn Flush>>>,
}

impl std::fmt::Debug for Opens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opens")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    opening: usize,
    saving: usize,
    /// Opens that completed.
    completed: u64,
}

impl Opens {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits within `budget` until nothing of the other kind runs (`saving`: for Opens to
    /// end, else for saves), then counts one of this kind under way. Returns the Opens
    /// completed by then.
    fn enter(&self, saving: bool, budget: &Budget, path: &Path) -> Result<u64, BackupError> {
        let mut attempt = 0;
        loop {
            {
                let mut s = self.lock();
                if saving && s.opening == 0 {
                    s.saving += 1;
                    return Ok(s.completed);
                }
                if !saving && s.saving == 0 {
                    s.opening += 1;
                    return Ok(s.completed);
                }
            }
            if !budget.wait(attempt) {
                let reason = match saving {
                    true => BusyReason::OpenInProgress,
                    false => BusyReason::AutosaveSaving,
                };
                return Err(budget.gave_up_because(path, reason));
            }
            attempt += 1;
        }
    }

    /// Starts an autosave's save of the database `path` names, once no Open runs (waiting
    /// within `budget`).
    pub(crate) fn save(&self, budget: &Budget, path: &Path) -> Result<Saving<'_>, BackupError> {
        let completed = self.enter(true, budget, path)?;
        Ok(Saving {
            opens: self,
            completed,
        })
    }

    /// Opens completed so far.
    pub(crate) fn completed(&self) -> u64 {
        self.lock().completed
    }

    /// Has `flush` run before every Open from now on, for as long as it lives.
    pub(crate) fn register(&self, flush: Weak<dyn Flush>) {
        let mut flushes = self.flushes.lock().unwrap_or_else(|p| p.into_inner());
        flushes.retain(|f| f.strong_count() > 0);
        flushes.push(flush);
    }

    /// Runs every registered flush, within `budget`.
    fn flush(&self, budget: &Budget) -> Result<(), BackupError> {
        let live: Vec<_> = {
            let flushes = self.flushes.lock().unwrap_or_else(|p| p.into_inner());
            flushes.iter().filter_map(Weak::upgrade).collect()
        };
        live.iter().try_for_each(|f| f.flush(budget))
    }
}

/// Starts an Open into the database `path` names, if it has a write record (`tracker`):
/// has its autosaves save the commits made so far, then waits within `budget` while an
/// autosave saves. Counted only if [`Opening::completed`] is called.
///
/// Called while the Open's destination connection holds no lock (its callers check
/// `checks::dest_idle` first and lock the destination only afterwards). That order is what
/// keeps the flush from deadlocking: the autosave's save takes the database's read lock
/// through its own connection and waits for Opens under way, so the Open must neither hold
/// the database nor count as under way while it waits for the save.
pub(crate) fn begin(
    tracker: Option<Arc<Tracker>>,
    budget: &Budget,
    path: &Path,
) -> Result<Opening, BackupError> {
    if let Some(t) = &tracker {
        t.opens.flush(budget)?;
        t.opens.enter(false, budget, path)?;
    }
    Ok(Opening {
        tracker,
        completed: false,
    })
}

/// An Open under way: autosaves wait until it is dropped.
#[derive(Debug)]
pub(crate) struct Opening {
    tracker: Option<Arc<Tracker>>,
    completed: bool,
}

impl Opening {
    /// The Open replaced the database's content.
    pub(crate) fn completed(mut self) {
        self.completed = true;
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        if let Some(t) = &self.tracker {
            let mut s = t.opens.lock();
            s.opening -= 1;
            s.completed += u64::from(self.completed);
        }
    }
}

/// An autosave's save under way: Opens wait until it is dropped.
#[derive(Debug)]
pub(crate) struct Saving<'a> {
    opens: &'a Opens,
    /// Opens completed before it started.
    pub(crate) completed: u64,
}

impl Drop for Saving<'_> {
    fn drop(&mut self) {
        self.opens.lock().saving -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Operation;
    use std::time::Duration;

    #[test]
    fn opens_and_saves_exclude_each_other_and_only_completed_opens_count() {
        let tracker = Arc::new(Tracker::default());
        let opens = &tracker.opens;
        let db = Path::new("db");
        let now = Budget::new(Operation::Restore, Duration::ZERO, None);
        let open = || begin(Some(Arc::clone(&tracker)), &now, db);
        let saving = opens.save(&now, db).unwrap();
        assert!(open().unwrap_err().is_busy());
        drop(saving);
        drop(open().unwrap()); // failed: not counted
        assert_eq!(opens.completed(), 0);
        open().unwrap().completed();
        assert_eq!(opens.save(&now, db).unwrap().completed, 1);
        let opening = open().unwrap();
        assert!(opens.save(&now, db).unwrap_err().is_busy());
        std::thread::scope(|s| {
            let saver = s.spawn(|| {
                let patient = Budget::new(Operation::Save, Duration::from_secs(120), None);
                opens.save(&patient, db).unwrap().completed
            });
            opening.completed();
            assert_eq!(saver.join().unwrap(), 2, "the save waited for the Open");
        });
    }
}
