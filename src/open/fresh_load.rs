//! Open into an empty pool database: the file's bytes go straight into memdb, in large
//! reads and writes, instead of page by page through two pagers.
//!
//! `sqlite3_backup` copies each page three times in user space (read-ahead buffer to the
//! source's page cache, to the destination's, to memdb) and runs both pagers for every page.
//! Into a database that holds nothing there is nothing to journal, so this route reads the
//! source file through SQLite's own handle, under the read transaction the restore already
//! holds, and writes it into the pool's database through a memdb file object of its own,
//! holding memdb's EXCLUSIVE lock from before the first byte to after the last. No connection
//! can read the database meanwhile; a failure, a cancel or a panic truncates it back to empty
//! before the lock is released, so nobody ever sees a partial load. Page 1 gets exactly the
//! header changes a backup and its commit would make, so the result is the same bytes, and
//! every connection notices the new content by its change counter, as after any commit.
//!
//! Taken only when every condition holds, from SQLite's view under both locks: the
//! destination is the crate's memdb and holds zero bytes, the source is a rollback-mode file
//! holding all its pages, and the plan is a direct copy. Anything else (including a lock
//! another connection holds) leaves the work to the backup, which waits within the budget.

use std::ffi::{CStr, CString};
use std::path::Path;
use std::thread;

use libsqlite3_sys as ffi;

use crate::copy::convert::{self, Plan};
use crate::copy::{BackupOptions, Progress};
use crate::error::{BackupError, SqliteFailure};
use crate::format::header::{self, Header};
use crate::format::pages;
use crate::sqlite::memdb::file::SharedMemdbFile;
use crate::sqlite::{Budget, BudgetedBusyHandler};
use crate::sqlite::{DbRef, Storage};

/// Bytes per read and write: fewer system calls and memdb calls than the 64 KiB read-ahead,
/// and still small enough to stay in the CPU's L2 cache between the read and the write. In
/// `--open-profile fresh 200` (README, Open) 1 MiB was faster than 256 KiB and 4 MiB, on a
/// machine too noisy for that to be more than indicative.
const CHUNK: usize = 1 << 20;

/// The source as the load copies it: `pages` pages of `page_size` bytes from offset 0.
struct Source {
    page_size: u64,
    pages: u64,
    /// The file's length, as SQLite's handle reported it.
    len: u64,
}

/// Loads `src` (main) into `schema` of `dst` if the fast route applies: `Ok(Some(Direct))`
/// when done, `Ok(None)` when the caller must run the ordinary copy, and an error (with the
/// destination still empty) when the load itself failed.
pub(crate) fn try_load(
    src: &DbRef<'_>,
    dst: &DbRef<'_>,
    schema: &CStr,
    dst_path: &Path,
    label: &Path,
    opts: &mut BackupOptions<'_>,
    budget: &Budget,
) -> Result<Option<Plan>, BackupError> {
    // The plan's queries may wait for another connection's lock: within the budget.
    let _src_waits = BudgetedBusyHandler::install(src, budget, label);
    let _dst_waits = BudgetedBusyHandler::install(dst, budget, dst_path);
    let Some(source) = eligible_source(src, dst, schema) else {
        return Ok(None);
    };
    let Some(file) = locked_empty_destination(dst, schema) else {
        return Ok(None);
    };
    let loading = Loading {
        file: &file,
        done: false,
    };
    loading.run(src, &source, dst_path, label, opts, budget)?;
    crate::observe::record("pages", source.pages);
    drop(file);
    refresh(dst, schema);
    Ok(Some(Plan::Direct))
}

/// The source's shape, if this route can copy it: a direct plan, and SQLite's view of the
/// source under its read lock is a rollback-mode file that holds every page it counts.
fn eligible_source(src: &DbRef<'_>, dst: &DbRef<'_>, schema: &CStr) -> Option<Source> {
    if dst.storage(schema) != Storage::PatchedMemdb || src.storage(c"main") != Storage::File {
        return None;
    }
    if convert::plan(src, c"main", dst, schema).ok()? != Plan::Direct {
        return None;
    }
    let page_size = u64::try_from(src.query_i64("PRAGMA main.page_size").ok()?).ok()?;
    let pages = u64::try_from(src.query_i64("PRAGMA main.page_count").ok()?).ok()?;
    let (header, len) = src.file_header(c"main").ok()?;
    let parsed = Header::parse(&header, len).ok()?;
    let rollback = header::is_rollback_mode(&header);
    let whole = pages > 0 && len >= pages.checked_mul(page_size)?;
    (rollback && whole && u64::from(parsed.page_size) == page_size).then_some(Source {
        page_size,
        pages,
        len,
    })
}

/// A file object on the destination's database holding its EXCLUSIVE lock, if it could be
/// taken at once and the database is empty under it.
fn locked_empty_destination(dst: &DbRef<'_>, schema: &CStr) -> Option<SharedMemdbFile> {
    // Only a name starting with `/` is shared: memdb would open any other as a new,
    // private database, and the load would land there.
    let name = dst
        .filename(schema)
        .filter(|n| n.len() > 1 && n.starts_with('/'))?;
    let name = CString::new(name).ok()?;
    let own = dst.file_object(schema)?;
    let mut file = SharedMemdbFile::open(&name).ok()?;
    for level in [
        ffi::SQLITE_LOCK_SHARED,
        ffi::SQLITE_LOCK_RESERVED,
        ffi::SQLITE_LOCK_EXCLUSIVE,
    ] {
        file.lock(level).ok()?;
    }
    if file.size().ok()? != 0 {
        return None;
    }
    file.track_like(own);
    Some(file)
}

/// Makes the destination connection read the new page 1 now, as the backup's connection
/// does: until its next transaction, an idle connection still answers `PRAGMA page_size`
/// from the empty database it saw. Other connections catch up at their next transaction.
/// A failure (only a lock wait past the budget) leaves that to the next transaction too;
/// the caller has the budget's busy handler installed.
fn refresh(dst: &DbRef<'_>, schema: &CStr) {
    let quoted = convert::quote(schema);
    let _ = dst.exec(&format!("SELECT count(*) FROM {quoted}.sqlite_schema"));
}

/// A load under way: until it is marked done, dropping it truncates the destination back
/// to empty (the lock is released after, when the file object is dropped).
struct Loading<'f> {
    file: &'f SharedMemdbFile,
    done: bool,
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        if !self.done {
            // memdb's truncate to a smaller size cannot fail.
            let _ = self.file.truncate(0);
        }
    }
}

impl Loading<'_> {
    /// Copies the pages in steps of the options' size, reporting progress, pausing and
    /// honouring cancellation between steps as the backup's loop does.
    fn run(
        mut self,
        src: &DbRef<'_>,
        source: &Source,
        dst_path: &Path,
        label: &Path,
        opts: &mut BackupOptions<'_>,
        budget: &Budget,
    ) -> Result<(), BackupError> {
        let total = source.pages * source.page_size;
        let step = match opts.step_pages() {
            n if n > 0 => u64::try_from(n).unwrap_or(u64::MAX) * source.page_size,
            _ => total,
        };
        let sqlite =
            |path: &Path, failure: SqliteFailure| BackupError::sqlite(budget.op(), path, failure);
        let mut buffer = vec![0u8; CHUNK.min(total as usize)];
        let mut done = 0;
        while done < total {
            if budget.is_cancelled() {
                return Err(budget.cancelled(dst_path));
            }
            let step_end = total.min(done.saturating_add(step));
            while done < step_end {
                let chunk = &mut buffer[..(step_end - done).min(CHUNK as u64) as usize];
                src.read_at(c"main", done, chunk)
                    .map_err(|f| sqlite(label, f))?;
                if done == 0 {
                    first_page(chunk, source, label, budget)?;
                }
                pages::blank_lock_byte_page(chunk, done, source.page_size);
                self.file
                    .write(chunk, done)
                    .map_err(|f| sqlite(dst_path, f))?;
                done += chunk.len() as u64;
            }
            let remaining = ((total - done) / source.page_size) as u32;
            opts.report(Progress {
                remaining,
                page_count: source.pages as u32,
            });
            if done < total && !opts.pause.is_zero() {
                thread::sleep(opts.pause);
            }
        }
        self.done = true;
        Ok(())
    }
}

/// Checks page 1 as read now (what is checked is what is copied) and makes the header
/// changes `sqlite3_backup` and the commit make in an empty destination: the page count,
/// schema cookie 1 (the destination's 0 plus one, which makes every connection reread the
/// schema), and change counter 1 with its version-valid-for copy and the library version.
fn first_page(
    page: &mut [u8],
    source: &Source,
    label: &Path,
    budget: &Budget,
) -> Result<(), BackupError> {
    let invalid = |reason: String| BackupError::invalid_db(budget.op(), label, reason);
    let header: &mut [u8; 100] = page
        .first_chunk_mut()
        .ok_or_else(|| invalid("shorter than a database header".into()))?;
    let parsed = Header::parse(header, source.len).map_err(invalid)?;
    if u64::from(parsed.page_size) != source.page_size || !header::is_rollback_mode(header) {
        return Err(invalid("its header changed while it was read".into()));
    }
    // SAFETY: sqlite3_libversion_number only returns a constant.
    let version = unsafe { ffi::sqlite3_libversion_number() };
    header::stamp(header, 1, 1, version as u32);
    header::set_field(header, header::PAGE_COUNT, source.pages as u32);
    Ok(())
}

#[cfg(test)]
#[path = "fresh_load_tests.rs"]
mod tests;
