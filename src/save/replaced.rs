//! Files that a save replaced by rename keep their RESERVED lock, held by this process, for
//! as long as it lives (within the limits below).
//!
//! A connection opened on the old file keeps its inode after the rename. SQLite pairs a file
//! with its journal by name, so that connection would take the next in-place save's
//! `-journal` for a hot journal of its own: roll it into the old inode and delete it, leaving
//! the in-place save without its journal. But SQLite calls a journal hot only when nobody
//! holds the RESERVED lock of *its* file (`hasHotJournal` in `pager.c` asks first). So before
//! the rename the old file is opened with SQLite and RESERVED is taken on it through the
//! connection's own handle; the connection is kept, idle, and such stale connections leave
//! the journal alone. They can still read the old file; they can no longer write it.
//!
//! Every route that renames over a file does this (`save_as`, `Snapshot::save_as`, the
//! template cache, incremental mode's renames): a later in-place save to the same path may
//! come from this process or another. Holding keeps the replaced file's blocks on disk, so
//! at most [`MAX_HELD`] files and [`MAX_HELD_BYTES`] are kept, the oldest let go first.

use std::path::Path;
use std::sync::Mutex;

use libsqlite3_sys as ffi;

use crate::error::BackupError;
use crate::fs::FileId;
use crate::sqlite::budget::{is_busy, Budget};
use crate::sqlite::{path_cstring, OwnedDb};

/// The most replaced files whose lock this process keeps.
const MAX_HELD: usize = 64;

/// The most bytes of replaced files kept on disk by holding them (the newest is always kept).
const MAX_HELD_BYTES: u64 = 1 << 30;

static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());

/// The old file at `dest`, opened and holding RESERVED, until [`keep`] or drop, and its size.
pub(crate) struct Held {
    /// Kept open for its lock.
    _file: OwnedDb,
    size: u64,
}

/// Takes RESERVED on the file at `dest`, waiting within `budget` for a writer of it to
/// finish. `Ok(None)` when there is nothing to hold: no file, or one this process cannot open
/// for writing (a lock needs a writable descriptor). `Busy` when another connection keeps
/// writing it: replacing a file under a writer would pair its journal with the new file.
/// When the file at `dest` is replaced meanwhile (another save renamed over it, and keeps the
/// old file's RESERVED for good), the wait goes on with the new file.
pub(crate) fn hold(dest: &Path, budget: &Budget) -> Result<Option<Held>, BackupError> {
    let mut attempt = 0;
    loop {
        match try_hold(dest, budget, &mut attempt)? {
            Attempt::Held(held) => return Ok(held),
            Attempt::Replaced => continue,
        }
    }
}

enum Attempt {
    Held(Option<Held>),
    /// The file at `dest` is no longer the one opened.
    Replaced,
}

fn try_hold(dest: &Path, budget: &Budget, attempt: &mut u32) -> Result<Attempt, BackupError> {
    let size = match std::fs::metadata(dest) {
        Ok(meta) if meta.is_file() && !has_other_names(&meta) => meta.len(),
        _ => return Ok(Attempt::Held(None)),
    };
    let id = |f: FileId| (f.dev, f.ino);
    let before = FileId::of(dest).map(id);
    let Some(name) = path_cstring(dest) else {
        return Ok(Attempt::Held(None));
    };
    let Ok(file) = OwnedDb::open(&name, ffi::SQLITE_OPEN_READWRITE) else {
        return Ok(Attempt::Held(None));
    };
    if file.db().is_readonly(c"main") {
        return Ok(Attempt::Held(None));
    }
    // Compared by stat only: `before` may already name a newer file than the one opened,
    // which costs one needless retry at worst.
    let replaced = || before.is_some() && FileId::of(dest).map(id) != before;
    for level in [ffi::SQLITE_LOCK_SHARED, ffi::SQLITE_LOCK_RESERVED] {
        loop {
            match file.db().lock_file(c"main", level) {
                Ok(()) => break,
                Err(f) if is_busy(&f) => {
                    if !budget.wait(*attempt) {
                        return Err(budget.gave_up(dest, f));
                    }
                    *attempt += 1;
                    if replaced() {
                        return Ok(Attempt::Replaced);
                    }
                }
                Err(f) => return Err(budget.failed(dest, f)),
            }
        }
    }
    Ok(Attempt::Held(Some(Held { _file: file, size })))
}

/// A file with another hard link lives on under that name after the rename: it is no stale
/// copy but a database in use, and holding its RESERVED lock would lock its writers out.
fn has_other_names(meta: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        std::os::unix::fs::MetadataExt::nlink(meta) > 1
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        false
    }
}

/// Keeps `held` (the rename happened) for the rest of the process.
pub(crate) fn keep(held: Held) {
    let mut all = HELD.lock().unwrap_or_else(|p| p.into_inner());
    all.push(held);
    // Closing one releases its lock and lets the filesystem free its blocks.
    while all.len() > MAX_HELD
        || (all.len() > 1 && all.iter().map(|h| h.size).sum::<u64>() > MAX_HELD_BYTES)
    {
        all.remove(0);
    }
}
