//! Incremental saves: write only the pages that changed since the file was last written by
//! (or loaded into) this database, in place, without ever tearing the file.
//!
//! # Knowing what changed
//! Every pool database lives in the crate's memdb shim (`sqlite::memdb::vfs`), whose `xWrite`
//! and `xTruncate` run for every write of every connection of the pool: commits, cache
//! spills before a commit, rollbacks restoring pages, `VACUUM`'s copy-back, backups into it.
//! So a [`Tracker`] beside each database (shared by name by all its file objects)
//! sees every byte that reaches the pages. It keeps a bitmap of pages written since its
//! *baseline*: a file this database equalled page for page. It never guesses: a write that
//! is not exactly one aligned page, a page size other than the baseline's, a truncation to a
//! partial page, all make the record "unknown", and the next save full. A write past the end
//! marks the gap memdb zero-fills too. Writes under rollback count as changes (conservative).
//!
//! Baselines come from a full save (the record is cleared when the save starts, so writes
//! during its stepped copy are recorded again; the new file's identity is taken from the
//! temporary file before the rename, or, in place, under a lock after the commit) and from `restore_from` of a rollback-mode file copied
//! page for page (the restoring connection's own writes are marked untracked while it holds
//! the write transaction; any conversion, a WAL source, a failure: no baseline). An epoch
//! counter makes sure that only the operation that last cleared the record installs its
//! baseline, and an incremental save *takes* the baseline, so two saves can never both use
//! it with half the record each.
//!
//! # Writing in place without tearing
//! This is what SQLite itself does in `journal_mode=DELETE`, so every SQLite reader already
//! knows how to recover from any crash of ours:
//! 1. the changed pages (and page 1) are read from memory under one read transaction, the
//!    same consistent state a full save copies;
//! 2. the file is opened with SQLite and locked with `BEGIN EXCLUSIVE` (a hot journal left by
//!    a crash is rolled back right there); under that lock SQLite's own view of the file must
//!    show the baseline's change counter, size and page size, rollback mode, and `stat` the
//!    same device, inode, size and modification time; otherwise the save is a full one;
//! 3. a rollback journal in SQLite's documented format ([`journal`]) gets the original of
//!    every page about to change (and of every page a shrink cuts), streamed to the file in
//!    chunks (never a second whole copy in memory), and is fsynced, with its directory;
//! 4. the new pages go through the connection's own `sqlite3_file` (page 1 with the change
//!    counter bumped, so every reader's cache is invalidated), then truncate and `xSync`;
//! 5. deleting the journal is the commit point.
//!
//! The changed pages are copied out of memory so that the source's read lock (which pool
//! writers wait for) is held only for that copy, into a buffer whose memory is faulted in
//! before the lock is taken. Above 32 MiB of them, the full save is used:
//! in incremental mode it is in place as well ([`full`]), streaming through SQLite's pager.
//!
//! A crash before 5 leaves the old file with a hot journal, which any SQLite opening it rolls
//! back; after 5, the new file. Readers never see a half-written state: they need SHARED,
//! which the EXCLUSIVE lock keeps out. No descriptor of ours is ever opened on the database
//! file itself (closing it would drop this process's POSIX locks); only the journal, which
//! SQLite never locks, is written with `std::fs`.
//!
//! Full saves in this mode never rename over an existing rollback-mode database ([`full`]
//! says why): renames and in-place journals must not mix.
//!
//! Why not a reflink copy: it needs a filesystem that has one, still renames (breaking other
//! processes' open handles to the document), and leaves the old route everywhere else.

use std::fs;
use std::path::{Path, PathBuf};

use libsqlite3_sys as ffi;

use crate::copy::checks::begin_read;
use crate::copy::{BackupOptions, Progress};
use crate::error::BackupError;
use crate::format::header;
use crate::format::journal::{self, Journal};
use crate::format::pages::{pending_byte_page, run_pages, runs};
use crate::fs::{canonical, journal_of, parent_dir, sync_dir, FileId};
use crate::sqlite::budget::{is_busy, Budget, BudgetedBusyHandler};
use crate::sqlite::memdb::record::{Baseline, Taken, Tracker};
use crate::sqlite::{path_cstring, DbRef, OwnedDb};

/// The most changed-page bytes an incremental save copies out of memory before writing them.
/// Copying is what lets it hold the source's read lock only briefly (writers in the pool wait
/// for it); above this, the memory cost outweighs that, and the full save runs instead.
const MAX_BUFFERED_BYTES: u64 = 32 << 20;

/// Why an incremental save gave way to a full one (for tests and debugging only).
type Fallback = &'static str;

/// Why an incremental save did not happen.
pub(crate) enum Stop {
    /// The changes cannot be proven or written in place: save the whole database instead.
    /// The reason is for a debugger; the caller's answer is the same whatever it is.
    Fallback(#[allow(dead_code)] Fallback),
    /// A lock stayed busy past the budget, or the call was cancelled, before anything was
    /// written. The save fails with this error and keeps its baseline, so the next save can
    /// still be incremental (a full save would need the same locks, and far longer).
    Failed(BackupError),
}

impl From<Fallback> for Stop {
    fn from(why: Fallback) -> Self {
        Stop::Fallback(why)
    }
}

/// The pages an incremental save copies, read from the source under one read transaction.
struct Changes {
    page_size: u32,
    pages: u32,
    /// The page numbers, ascending; page 1 always first.
    numbers: Vec<u32>,
    /// Their content, one page after another.
    data: Vec<u8>,
    /// Nothing at all was written since the baseline.
    untouched: bool,
}

/// Saves `src`'s main database into the file at `dest` in place, if the tracker can prove
/// what changed since that file was written. [`Stop::Fallback`] means "do a full save"; the
/// tracker's baseline is gone then, and the file is either untouched, or holds a hot journal
/// that the next SQLite to open it (the full save's `settle_logs`) rolls back.
/// [`Stop::Failed`] leaves the file untouched and the baseline in place.
pub(crate) fn save_in_place(
    src: &DbRef<'_>,
    tracker: &Tracker,
    dest: &Path,
    opts: &mut BackupOptions<'_>,
    budget: &Budget,
) -> Result<(), Stop> {
    if budget.is_cancelled() {
        return Err(Stop::Failed(budget.cancelled(dest)));
    }
    if !src.autocommit() {
        return Err("the source connection has a transaction open".into());
    }
    let buffer = touched_buffer(tracker.marked_bytes());
    // The read transaction keeps every writer out (memdb's EXCLUSIVE needs all readers
    // gone), so what the tracker holds when taken is exactly what changed up to this state.
    if let Err(failure) = begin_read(src, dest, budget) {
        return Err(if is_busy(&failure) {
            Stop::Failed(budget.failed(&src.display_path(c"main"), failure))
        } else {
            "source unreadable".into()
        });
    }
    let taken = tracker.take();
    let read = read_changes(src, &taken, dest, buffer);
    let _ = src.exec("COMMIT");
    let (changes, baseline) = read?;
    opts.report(Progress {
        remaining: changes.numbers.len() as u32,
        page_count: changes.pages,
    });
    match write_in_place(&changes, &baseline, dest, opts, budget) {
        Ok(new_base) => {
            crate::observe::record("pages", changes.numbers.len() as u64);
            tracker.install(taken.epoch, new_base);
            Ok(())
        }
        Err(Stop::Failed(e)) => {
            tracker.give_back(taken);
            Err(Stop::Failed(e))
        }
        Err(fallback) => Err(fallback),
    }
}

/// Checks the record against the source and reads page 1 and every page written since.
fn read_changes(
    src: &DbRef<'_>,
    taken: &Taken,
    dest: &Path,
    mut data: Vec<u8>,
) -> Result<(Changes, Baseline), Fallback> {
    let base = taken.baseline.clone().ok_or("no baseline")?;
    if canonical(dest).as_ref() != Some(&base.path) {
        return Err("the baseline is another file");
    }
    let dirty = taken
        .dirty
        .as_ref()
        .ok_or("a write the record cannot describe")?;
    let page_size = src
        .query_i64("PRAGMA main.page_size")
        .map_err(|_| "page size unreadable")?;
    if page_size != i64::from(base.page_size) {
        return Err("page size changed");
    }
    let len = src.file_len(c"main").map_err(|_| "size unreadable")?;
    let ps = u64::from(base.page_size);
    if len % ps != 0 || len / ps > u64::from(u32::MAX) || len == 0 {
        return Err("odd source size");
    }
    let pages = (len / ps) as u32;
    let old_pages = (base.id.size / ps) as u32;
    let pending = pending_byte_page(base.page_size);
    // Page 1 always (its change counter moves); pages past the old end are new.
    let mut numbers = vec![1u32];
    numbers.extend(dirty.iter().copied().filter(|&p| p > 1 && p <= pages));
    numbers.extend((old_pages + 1).max(2)..=pages);
    numbers.sort_unstable();
    numbers.dedup();
    numbers.retain(|&p| p != pending);
    // The pages are held in memory from here until they are written: past the limit, the
    // full save (which streams through SQLite's own pager, in place as well) is used.
    if numbers.len() as u64 * ps > MAX_BUFFERED_BYTES {
        return Err("too many changed pages to hold in memory");
    }
    data.resize(numbers.len() * ps as usize, 0);
    for (at, run) in runs(&numbers, run_pages(base.page_size)) {
        let bytes = &mut data[at * ps as usize..(at + run.len()) * ps as usize];
        src.read_at(c"main", u64::from(run[0] - 1) * ps, bytes)
            .map_err(|_| "source read failed")?;
    }
    // Every commit leaves its counter in page 1: one the record did not see last means a
    // connection that bypasses the shim committed pages the record does not hold.
    if header::field(&data, header::CHANGE_COUNTER) != taken.counter {
        return Err("committed through a connection the record does not see");
    }
    Ok((
        Changes {
            page_size: base.page_size,
            pages,
            numbers,
            data,
            untouched: dirty.is_empty(),
        },
        base,
    ))
}

/// A buffer for about `bytes` of pages, plus a margin for commits that land before the read
/// lock, with every page of it already written once. A fresh allocation is mapped lazily,
/// and faulting it in page by page during the copy doubled how long the read lock was held
/// (writers in the pool wait for it); this moves that cost before the lock.
///
/// Nothing is touched when the pages already exceed what a save may buffer: it falls back.
fn touched_buffer(bytes: u64) -> Vec<u8> {
    if bytes > MAX_BUFFERED_BYTES {
        return Vec::new();
    }
    let bytes = (bytes + bytes / 8 + (64 << 10)).min(MAX_BUFFERED_BYTES) as usize;
    vec![1u8; bytes]
}

/// Locks the file, proves it is the baseline, journals, writes, syncs, commits.
fn write_in_place(
    changes: &Changes,
    base: &Baseline,
    dest: &Path,
    opts: &mut BackupOptions<'_>,
    budget: &Budget,
) -> Result<Baseline, Stop> {
    if FileId::of(dest) != Some(base.id) {
        return Err("the file at the path is not the baseline".into());
    }
    let name = path_cstring(dest).ok_or("path has a NUL")?;
    let file = OwnedDb::open(&name, ffi::SQLITE_OPEN_READWRITE).map_err(|_| "cannot open")?;
    let db = file.db();
    if db.is_readonly(c"main") {
        // The journal could be created but the pages never written: no write in place.
        return Err("the file is read-only".into());
    }
    let result = {
        let _waits = BudgetedBusyHandler::install(&db, budget, dest);
        locked_write(&db, changes, base, dest, opts, budget)
    };
    if !db.autocommit() {
        // Ends a transaction that wrote nothing through the pager: releases the lock only.
        let _ = db.exec("ROLLBACK");
    }
    drop(file);
    let counter = result?;
    let id = FileId::of(dest).ok_or("file vanished")?;
    if (id.dev, id.ino) != (base.id.dev, base.id.ino) {
        return Err("file replaced during the save".into());
    }
    Ok(Baseline {
        path: base.path.clone(),
        id,
        counter,
        page_size: base.page_size,
    })
}

/// Under `BEGIN EXCLUSIVE`: the checks, then the journal, the pages and the commit. Returns
/// the file's new change counter.
fn locked_write(
    db: &DbRef<'_>,
    changes: &Changes,
    base: &Baseline,
    dest: &Path,
    opts: &mut BackupOptions<'_>,
    budget: &Budget,
) -> Result<u32, Stop> {
    // Taking SHARED first rolls back any hot journal, as every SQLite client does.
    if let Err(failure) = db.exec("BEGIN EXCLUSIVE; SELECT count(*) FROM sqlite_schema;") {
        return Err(if is_busy(&failure) {
            Stop::Failed(budget.failed(dest, failure))
        } else {
            "destination unreadable".into()
        });
    }
    let mode = db
        .query_column("PRAGMA main.journal_mode")
        .map_err(|_| "journal mode unreadable")?;
    if !mode
        .first()
        .is_some_and(|m| m.eq_ignore_ascii_case("delete"))
    {
        return Err("the file is not in rollback-journal (DELETE) mode".into());
    }
    let (header, len) = db.file_header(c"main").map_err(|_| "header unreadable")?;
    if !header::is_rollback_mode(&header) {
        return Err("the file is in WAL mode".into());
    }
    let counter_now = header::change_counter(&header);
    let page_size_now = header::page_size(&header);
    if counter_now != base.counter || len != base.id.size || page_size_now != base.page_size {
        return Err("the file changed since the baseline".into());
    }
    // The same file, still unchanged, now that nobody else can write it.
    if FileId::of(dest) != Some(base.id) {
        return Err("the file at the path is not the baseline".into());
    }
    let ps = u64::from(changes.page_size);
    let old_pages = (len / ps) as u32;
    if changes.untouched && changes.pages == old_pages {
        return Ok(base.counter); // the file already equals memory: write nothing
    }
    let counter = base.counter.wrapping_add(1);
    // Readers in other connections keep a parsed schema for as long as the schema cookie
    // stays the same. Memory's cookie says nothing about the file's (a full save writes 1,
    // a restore sets memory's to its own old value plus one), so copying it could leave a
    // changed schema under an unchanged cookie. Bump the file's own instead.
    let schema_cookie = header::schema_cookie(&header).wrapping_add(1);
    let journal_path = journal_path(db, dest)?;
    write_journal(db, changes, old_pages, &journal_path, dest)?;
    let total = changes.numbers.len();
    opts.report(progress(changes, total));
    // Page 1 on its own, with the file's counters; then the others in runs.
    let mut first = changes.data[..ps as usize].to_vec();
    let version = ffi::SQLITE_VERSION_NUMBER as u32;
    header::stamp(&mut first, counter, schema_cookie, version);
    db.write_at(c"main", 0, &first)
        .map_err(|_| "write failed")?;
    let mut written = 1;
    opts.report(progress(changes, total - written));
    for (at, run) in runs(&changes.numbers[1..], run_pages(changes.page_size)) {
        let at = at + 1;
        let bytes = &changes.data[at * ps as usize..(at + run.len()) * ps as usize];
        db.write_at(c"main", u64::from(run[0] - 1) * ps, bytes)
            .map_err(|_| "write failed")?;
        written += run.len();
        opts.report(progress(changes, total - written));
    }
    if changes.pages < old_pages {
        db.truncate_file(c"main", u64::from(changes.pages) * ps)
            .map_err(|_| "truncate failed")?;
    }
    db.sync_file(c"main").map_err(|_| "sync failed")?;
    opts.report(progress(changes, 0));
    // The commit point: without its journal the file is the new version.
    fs::remove_file(&journal_path).map_err(|_| "journal not deleted")?;
    let _ = sync_dir(&parent_dir(&journal_path));
    db.exec("COMMIT").map_err(|_| "commit failed")?;
    Ok(counter)
}

fn progress(changes: &Changes, remaining: usize) -> Progress {
    Progress {
        remaining: remaining as u32,
        page_count: changes.pages,
    }
}

/// Where SQLite looks for this database's rollback journal: its full name plus `-journal`.
fn journal_path(db: &DbRef<'_>, dest: &Path) -> Result<PathBuf, Fallback> {
    let full = db.filename(c"main").filter(|f| !f.is_empty());
    Ok(journal_of(
        &full.map_or_else(|| dest.to_path_buf(), PathBuf::from),
    ))
}

/// Writes the original content of every page about to change, and makes it durable (the
/// journal's data and its directory entry) before the database is touched.
fn write_journal(
    db: &DbRef<'_>,
    changes: &Changes,
    old_pages: u32,
    path: &Path,
    dest: &Path,
) -> Result<(), Fallback> {
    let ps = changes.page_size;
    let pending = pending_byte_page(ps);
    let overwritten = changes.numbers.iter().copied().filter(|&p| p <= old_pages);
    let cut = (changes.pages + 1..=old_pages).filter(|&p| p != pending);
    let numbers: Vec<u32> = overwritten.chain(cut).collect();
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        // SQLite gives a journal its database's permissions, and never follows a symbolic
        // link planted at its name (which would write the original pages elsewhere).
        if let Ok(meta) = fs::metadata(dest) {
            options.mode(meta.permissions().mode() & 0o777);
        }
        options.custom_flags(libc::O_NOFOLLOW);
    }
    let file = options.open(path).map_err(|_| "journal not created")?;
    let records = numbers.len() as u32;
    // SQLite's order at synchronous=FULL (see `journal`): records, fsync, folder fsync,
    // then the magic and count, fsync again. Before the seal is durable the journal is not
    // hot, so no power loss can roll a half-written record back over the database.
    let written = stream_originals(db, &numbers, ps, old_pages, file)
        .map_err(|_| "journal not written")
        .and_then(|file| {
            file.sync_all()
                .map(|()| file)
                .map_err(|_| "journal not synced")
        })
        .and_then(|file| {
            sync_dir(&parent_dir(path)).map_err(|_| "journal directory not synced")?;
            seal_journal(&file, records).map_err(|_| "journal not sealed")
        });
    if let Err(e) = written {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// Writes the journal's magic and record count (step 3) and makes them durable (step 4).
fn seal_journal(file: &fs::File, records: u32) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = file;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&journal::seal(records))?;
    file.sync_data()
}

/// Reads the original of each page in `numbers` from the file, in runs, into the journal.
fn stream_originals(
    db: &DbRef<'_>,
    numbers: &[u32],
    page_size: u32,
    old_pages: u32,
    file: fs::File,
) -> std::io::Result<fs::File> {
    let records = u32::try_from(numbers.len()).map_err(std::io::Error::other)?;
    let mut journal = Journal::start(file, page_size, old_pages, records);
    let page = page_size as usize;
    let max = run_pages(page_size);
    let mut originals = vec![0u8; max * page];
    for (_, run) in runs(numbers, max) {
        let bytes = &mut originals[..run.len() * page];
        db.read_at(c"main", u64::from(run[0] - 1) * u64::from(page_size), bytes)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        for (p, original) in run.iter().zip(bytes.chunks_exact(page)) {
            journal.push(*p, original)?;
        }
    }
    journal.finish()
}
