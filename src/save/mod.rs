//! Save As: a stepped backup into a private temporary file, made durable, then renamed over
//! the destination. The destination is always either the complete old file or the complete
//! new one.

use std::fs::{self, File, Permissions};
use std::io::Read;
use std::path::{Path, PathBuf};

use diesel::SqliteConnection;
use libsqlite3_sys as ffi;

mod full;
pub(crate) mod incremental;
mod replaced;
mod settle;

use crate::copy::{checks, engine, BackupOptions};
use crate::error::{BackupError, Operation};
use crate::format::header::Header;
use crate::fs::temp_file::{self, LockedTemp};
use crate::fs::{follow_links, parent_dir, same_file, start_writeback, sync_dir, FileId};
use crate::sqlite::memdb;
use crate::sqlite::memdb::record::{rebase, Baseline};
use crate::sqlite::{batch_vfs, path_cstring, DbRef, OwnedDb};
use crate::sqlite::{Budget, BudgetedBusyHandler};

/// The temporary file is private and thrown away on any failure, so it needs no journal and
/// no syncs while it is written; durability comes from one fsync before the rename.
const TEMP_PRAGMAS: &str =
    "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA locking_mode=EXCLUSIVE; PRAGMA cache_size=-1024;";

pub(crate) fn save_as(
    conn: &mut SqliteConnection,
    path: &Path,
    opts: &mut BackupOptions<'_>,
) -> Result<(), BackupError> {
    let budget = opts.budget(Operation::Save);
    let src = crate::sqlite::raw_handle(conn);
    save_from(&src, path, opts, &budget)
}

/// [`save_as`] from a raw connection, under the caller's budget, in a `save` span.
pub(crate) fn save_from(
    src: &DbRef<'_>,
    path: &Path,
    opts: &mut BackupOptions<'_>,
    budget: &Budget,
) -> Result<(), BackupError> {
    use tracing::field::Empty;
    let span = tracing::info_span!("save", path = %path.display(), incremental = opts.incremental,
        route = Empty, fallback = Empty, rename_reason = Empty, pages = Empty, bytes = Empty,
        elapsed_ms = Empty, error = Empty);
    let listened = !span.is_disabled();
    crate::observe::in_span(span, || {
        save_routes(src, path, opts, budget)?;
        // One stat, only for a subscriber.
        if let Some(meta) = listened.then(|| fs::metadata(path).ok()).flatten() {
            crate::observe::record("bytes", meta.len());
        }
        Ok(())
    })
}

fn save_routes(
    src: &DbRef<'_>,
    path: &Path,
    opts: &mut BackupOptions<'_>,
    budget: &Budget,
) -> Result<(), BackupError> {
    let op = Operation::Save;
    let schema = checks::schema(src, &opts.schema, op)?;
    checks::source_not_writing(src, &schema, op)?;
    let source_file = src
        .filename(&schema)
        .filter(|f| !src.is_in_memory(&schema) && !f.is_empty());
    let tracker = memdb::tracker_of(src, &schema);
    let is_source = |dest: &Path| {
        source_file
            .as_ref()
            .is_some_and(|f| same_file(Path::new(f), dest))
    };
    if let Ok(dest) = follow_links(path) {
        checks::logs_are_plain_files(&dest, op)?;
        if opts.incremental
            && !is_source(&dest)
            && save_in_place(src, &schema, tracker.as_deref(), &dest, opts, budget)?
        {
            if let Some(name) = dest.file_name() {
                temp_file::remove_abandoned(&parent_dir(&dest), &name.to_string_lossy());
            }
            return Ok(());
        }
    }
    crate::observe::record("route", "rename");
    // A full save makes a new baseline.
    rebase(tracker.as_deref(), || {
        let mut baseline = None;
        let saved = replace_atomically(path, op, budget, |temp, dest_path| {
            if is_source(dest_path) {
                return Err(BackupError::SameFile {
                    op,
                    path: path.to_path_buf(),
                });
            }
            copy_into_file(src, &schema, temp, dest_path, opts, budget)?;
            if tracker.is_some() {
                baseline = new_baseline(temp, dest_path);
            }
            Ok(())
        });
        (saved, baseline)
    })
}

/// Incremental mode never renames over a database someone may hold open (see
/// `full`): the pages changed since the baseline go in place when the tracker can
/// prove which they are, and otherwise the whole database goes in place through SQLite. `false`:
/// the file is missing, in WAL mode, or not a writable database, so it is replaced by rename.
fn save_in_place(
    src: &DbRef<'_>,
    schema: &std::ffi::CStr,
    tracker: Option<&memdb::record::Tracker>,
    dest: &Path,
    opts: &mut BackupOptions<'_>,
    budget: &Budget,
) -> Result<bool, BackupError> {
    if let Some(t) = tracker {
        use incremental::Stop;
        match incremental::save_in_place(src, t, dest, opts, budget) {
            Ok(()) => {
                crate::observe::record("route", "incremental");
                return Ok(true);
            }
            Err(Stop::Failed(e)) => return Err(e),
            // Any other reason not to write only the changes means the whole database goes.
            Err(Stop::Fallback(why)) => {
                crate::observe::record("fallback", why);
                tracing::debug!(fallback = why, "incremental save falls back to a full one");
            }
        }
    } else {
        crate::observe::record("fallback", "the database has no write record");
    }
    let in_place = full::save_over_existing(src, schema, tracker, dest, opts, budget)?;
    if in_place {
        crate::observe::record("route", "in_place");
    }
    Ok(in_place)
}

/// The baseline a full save leaves: the finished temporary file's identity (a rename keeps
/// device, inode, size and modification time) and header, read through its own descriptor.
fn new_baseline(temp: &LockedTemp, dest: &Path) -> Option<Baseline> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = temp.as_file();
    let mut header = [0u8; 100];
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_exact(&mut header).ok()?;
    let id = FileId::of(temp.path())?;
    Baseline::of(dest, id, &header, id.size)
}

/// Replaces the file at `path` (symbolic links followed) with what `write` puts into a fresh
/// temporary file beside it, atomically and durably: the temporary file's length is checked
/// against its header, it is fsynced, renamed over the destination, and the directory is
/// fsynced. On any error the temporary file is removed and the destination left as it was.
/// `write` gets the temporary file and the resolved destination path. Temporary files of
/// earlier saves to the same destination that killed processes left behind are removed first.
/// The file replaced keeps its RESERVED lock for the rest of the process
/// (`replaced`), so connections left on it never take a later in-place save's
/// journal for their own.
pub(crate) fn replace_atomically(
    path: &Path,
    op: Operation,
    budget: &Budget,
    write: impl FnOnce(&LockedTemp, &Path) -> Result<(), BackupError>,
) -> Result<(), BackupError> {
    let dest = Destination::resolve(path, op)?;
    temp_file::remove_abandoned(&dest.dir, &dest.file_name);
    let temp = dest.create_temp(op)?;
    write(&temp, &dest.path)?;
    check_complete(temp.path(), &dest.path, op)?;
    dest.keep_permissions(&temp, op)?;
    let io = |action, source| BackupError::io(op, &dest.path, action, source);
    temp.as_file().sync_all().map_err(|e| io("fsync", e))?;
    settle::settle_logs(&dest.path, budget)?;
    let held = replaced::hold(&dest.path, budget)?;
    temp.persist(&dest.path).map_err(|e| io("rename", e))?;
    if let Some(held) = held {
        replaced::keep(held);
    }
    sync_dir(&dest.dir).map_err(|e| BackupError::io(op, &dest.dir, "fsync directory", e))
}

/// Copies `schema` of `src` into the empty temporary file.
fn copy_into_file(
    src: &DbRef<'_>,
    schema: &std::ffi::CStr,
    temp: &LockedTemp,
    dest_path: &Path,
    opts: &mut BackupOptions<'_>,
    budget: &Budget,
) -> Result<(), BackupError> {
    let op = Operation::Save;
    let sqlite = BackupError::sqlite_at(op, dest_path);
    let name = path_cstring(temp.path()).ok_or_else(|| BackupError::nul_in_path(op, dest_path))?;
    let file_db = OwnedDb::open_with_vfs(&name, ffi::SQLITE_OPEN_READWRITE, batch_vfs::name())
        .map_err(sqlite)?;
    {
        let dst = file_db.db();
        dst.exec(TEMP_PRAGMAS).map_err(sqlite)?;
        let _waits = BudgetedBusyHandler::install(src, budget, &src.display_path(schema));
        let (to, from) = ((&dst, c"main"), (src, schema));
        engine::copy_pages(to, from, opts, budget, dest_path, sqlite, || {
            start_writeback(temp.as_file())
        })?;
    }
    file_db.close().map_err(sqlite)
}

/// Refuses to rename a file whose length disagrees with its own header: the last line of
/// defence should a write have been lost without an error (SQLite ignores `xClose` errors).
fn check_complete(temp: &Path, _dest: &Path, op: Operation) -> Result<(), BackupError> {
    let header = read_header(temp, op)?;
    if header.matches_length() {
        return Ok(());
    }
    let lost = std::io::Error::other(format!(
        "the written file is {} bytes, which its header ({:?} pages of {} bytes) disagrees \
         with: a write was lost",
        header.file_len, header.valid_pages, header.page_size
    ));
    Err(BackupError::io(op, temp, "check the written length", lost))
}

/// Reads and checks the header of the file at `path`. Only for files no SQLite connection
/// of this process has open: closing the descriptor would drop their POSIX locks.
fn read_header(path: &Path, op: Operation) -> Result<Header, BackupError> {
    let file_len = checks::regular_file(path, op)?.len();
    let mut bytes = [0u8; 100];
    let mut file = File::open(path).map_err(|e| BackupError::io(op, path, "open", e))?;
    if file_len < 100 || file.read_exact(&mut bytes).is_err() {
        return Err(BackupError::invalid_db(
            op,
            path,
            format!("only {file_len} bytes, shorter than a database header"),
        ));
    }
    Header::parse(&bytes, file_len).map_err(|reason| BackupError::invalid_db(op, path, reason))
}

/// Where a save lands, with symbolic links followed so the link itself is not replaced.
struct Destination {
    path: PathBuf,
    dir: PathBuf,
    file_name: String,
    existing: Option<Permissions>,
}

impl Destination {
    fn resolve(path: &Path, op: Operation) -> Result<Destination, BackupError> {
        let invalid = |reason: &str| BackupError::InvalidInput {
            op,
            path: path.to_path_buf(),
            reason: reason.to_owned(),
        };
        let path = follow_links(path).map_err(|e| BackupError::io(op, path, "read link", e))?;
        let file_name = path
            .file_name()
            .ok_or_else(|| invalid("destination has no file name"))?
            .to_string_lossy()
            .into_owned();
        let existing = match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => return Err(invalid("destination is a directory")),
            // A rename would put a regular file where a device, FIFO or socket was.
            Ok(meta) if !meta.is_file() => {
                return Err(invalid("destination exists and is not a regular file"))
            }
            Ok(meta) => Some(meta.permissions()),
            Err(_) => None,
        };
        let dir = parent_dir(&path);
        Ok(Destination {
            path,
            dir,
            file_name,
            existing,
        })
    }

    /// An empty, locked file beside the destination; deleted when dropped unless persisted.
    /// It gets a new file's usual permissions, or the old destination's plus the owner's
    /// read and write: SQLite opens it by name to write it, and would open a read-only copy
    /// of a read-only destination read-only. [`Self::keep_permissions`] puts them back.
    fn create_temp(&self, op: Operation) -> Result<LockedTemp, BackupError> {
        let io = |action, e| BackupError::io(op, &self.dir, action, e);
        #[cfg(unix)]
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            Some(
                self.existing
                    .as_ref()
                    .map_or(0o666, |p| (p.mode() & 0o7777) | 0o600),
            )
        };
        #[cfg(not(unix))]
        let mode = None;
        let temp = LockedTemp::create(&self.dir, &self.file_name, mode)
            .map_err(|e| io("create temporary file", e))?;
        if let (Some(mode), Some(_)) = (mode, &self.existing) {
            // The umask may have narrowed the mode.
            #[cfg(unix)]
            temp.as_file()
                .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(|e| io("set permissions", e))?;
        }
        Ok(temp)
    }

    /// Gives the written temporary file the old destination's permissions exactly, through
    /// the descriptor this process already holds (SQLite has closed its own by now).
    fn keep_permissions(&self, temp: &LockedTemp, op: Operation) -> Result<(), BackupError> {
        match &self.existing {
            Some(permissions) => temp
                .as_file()
                .set_permissions(permissions.clone())
                .map_err(|e| BackupError::io(op, &self.dir, "set permissions", e)),
            None => Ok(()),
        }
    }
}
