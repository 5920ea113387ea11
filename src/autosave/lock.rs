//! One autosave per file: an exclusive `flock` on `<file>-autosave.lock` beside it (a
//! shortened name when that one would be too long), held for as long as the autosave saves
//! there.
//!
//! `flock` locks belong to an open file description, so two autosaves in one process exclude
//! each other as two processes do, and the kernel drops the lock of a killed process. The
//! lock is on a file of its own, never on the database: this process must not open and close
//! the database with `std::fs` (closing drops the POSIX locks SQLite holds on it), and
//! SQLite's own locks last only for a transaction. The lock file is removed when released;
//! a taker checks, once it holds the lock, that the name still leads to the file it locked.
//! Symbolic links are followed and the folder is made canonical first, so every spelling of
//! one file meets at one lock.
//!
//! Hard links are names of their own, with lock files of their own. Within this process a
//! registry of the files autosaves serve catches them (same device and inode); across
//! processes nothing does.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::error::{BackupError, Operation};

const OP: Operation = Operation::Autosave;

const SUFFIX: &str = "-autosave.lock";
/// The longest file name (bytes) on Linux and most file systems.
const NAME_MAX: usize = 255;

/// The files autosaves of this process serve, as the names they locked. Compared by device
/// and inode at each check rather than keyed by them: a save by rename gives the name a new
/// inode, and the old one may be another file by then.
static SERVED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn served() -> MutexGuard<'static, Vec<PathBuf>> {
    SERVED.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// The lock on one autosave target; released (and its file removed) when dropped.
#[derive(Debug)]
pub(crate) struct TargetLock {
    /// The lock file, and our open description holding the lock (`None`: a file system
    /// without `flock`, where no lock can be had).
    held: Option<(PathBuf, File)>,
    /// Our entry in [`SERVED`].
    target: PathBuf,
}

impl TargetLock {
    /// Takes the lock of `target` (an absolute path), or fails with
    /// [`BackupError::AlreadyAutosaving`] when another autosave holds it, or serves the same
    /// file under another name in this process.
    pub(crate) fn acquire(target: &Path) -> Result<TargetLock, BackupError> {
        let resolved = resolve(target);
        // Held until our entry is in, so two starts on two links cannot both pass.
        let mut served = served();
        if served.iter().any(|s| crate::fs::same_file(s, &resolved)) {
            return Err(BackupError::AlreadyAutosaving {
                op: OP,
                path: target.to_path_buf(),
            });
        }
        let held = hold(&key_of(&resolved), target)?;
        served.push(resolved.clone());
        Ok(TargetLock {
            held,
            target: resolved,
        })
    }

    /// True when `a` and `b` are one file to lock: two spellings of it, or two hard links.
    pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
        let (a, b) = (resolve(a), resolve(b));
        key_of(&a) == key_of(&b) || crate::fs::same_file(&a, &b)
    }
}

/// The file `target`'s links lead to, in its canonical folder.
fn resolve(target: &Path) -> PathBuf {
    let resolved = crate::fs::follow_links(target).unwrap_or_else(|_| target.into());
    crate::fs::canonical(&resolved).unwrap_or(resolved)
}

/// The lock file of a resolved target: `<name>-autosave.lock` beside it, or, when that name
/// would be too long, the shortened name temporary files use (the same in every process).
fn key_of(resolved: &Path) -> PathBuf {
    let Some(name) = resolved.file_name() else {
        let mut key = resolved.as_os_str().to_os_string();
        key.push(SUFFIX);
        return key.into();
    };
    let mut lock = match name.len() + SUFFIX.len() > NAME_MAX {
        true => crate::fs::short_name(&name.to_string_lossy())
            .into_owned()
            .into(),
        false => name.to_os_string(),
    };
    lock.push(SUFFIX);
    resolved.with_file_name(lock)
}

#[cfg(unix)]
fn hold(key: &Path, target: &Path) -> Result<Option<(PathBuf, File)>, BackupError> {
    use std::io::ErrorKind;
    use std::os::unix::fs::OpenOptionsExt;

    use crate::fs::lock::{flock, same_inode};

    let io = |action, e| BackupError::io(OP, key, action, e);
    // A name removed between our open and our lock by the holder releasing it is opened
    // again; more than a few rounds would take a loop of autosaves starting and stopping.
    for _ in 0..100 {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            // Never through a planted link, and never blocking on a FIFO.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(key)
            .map_err(|e| io("create the autosave lock file", e))?;
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(BackupError::InvalidInput {
                op: OP,
                path: key.to_path_buf(),
                reason: "the autosave lock file is not a regular file".into(),
            });
        }
        match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) if same_inode(&file, key) => return Ok(Some((key.to_path_buf(), file))),
            Ok(()) => continue, // released and removed meanwhile: take the new one
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                return Err(BackupError::AlreadyAutosaving {
                    op: OP,
                    path: target.to_path_buf(),
                })
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // A file system without flock: nothing can be excluded there.
            Err(e) if e.raw_os_error() == Some(libc::ENOLCK) => return Ok(None),
            Err(e) => return Err(io("lock the autosave lock file", e)),
        }
    }
    Err(io(
        "lock the autosave lock file",
        std::io::Error::other("it was replaced on every try"),
    ))
}

#[cfg(not(unix))]
fn hold(_: &Path, _: &Path) -> Result<Option<(PathBuf, File)>, BackupError> {
    Ok(None)
}

impl Drop for TargetLock {
    fn drop(&mut self) {
        let mut served = served();
        if let Some(i) = served.iter().position(|s| *s == self.target) {
            served.swap_remove(i);
        }
        #[cfg(unix)]
        if let Some((path, file)) = self.held.take() {
            // Removed while still held, so no one can take a lock on a name about to vanish
            // and believe it current.
            if crate::fs::lock::same_inode(&file, &path) {
                let _ = std::fs::remove_file(&path);
            }
            drop(file);
        }
    }
}
