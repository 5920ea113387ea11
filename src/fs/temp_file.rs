//! The temporary files saves write beside their destination, and the removal of those that
//! killed savers left behind.
//!
//! A saver holds an exclusive `flock` on its temporary file from creation to rename, and the
//! kernel drops it when the saver's process dies. So a temporary file nobody holds a lock on
//! is provably abandoned, and the next save to the same destination deletes it. `flock`
//! locks belong to an open file description, not to the process like the POSIX locks SQLite
//! uses, so they neither disturb SQLite's locks nor are dropped when SQLite closes a
//! descriptor. Within this process, files being written are also listed in [`LIVE`]; the
//! cleaner never even opens those (closing a descriptor would drop the POSIX locks the
//! SQLite connection writing that file holds).
//!
//! A name longer than 200 bytes is shortened in the temporary name (its start and a hash),
//! so the temporary name stays within the usual 255-byte limit.
//!
//! Limits: on file systems that emulate `flock` with POSIX locks (NFS), the lock is not
//! reliable: a cleaner in another process could delete a file that is still being written,
//! and that save then fails at its rename, leaving the destination as it was. On non-Unix
//! systems nothing is cleaned up.

use std::collections::HashSet;
use std::fs::{File, Permissions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use tempfile::NamedTempFile;

/// The suffix of every temporary file a save creates next to its destination, so that files
/// left by a killed process can be recognised: `.<name>.<random>.dsb-tmp`.
pub const TEMP_SUFFIX: &str = ".dsb-tmp";

/// Temporary files this process is writing now.
static LIVE: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

fn live() -> MutexGuard<'static, Option<HashSet<PathBuf>>> {
    LIVE.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// A fresh temporary file beside a destination, locked for as long as it exists.
pub(crate) struct LockedTemp {
    // Declared first so it drops (deleting the file) before the path leaves `LIVE`.
    file: NamedTempFile,
    _live: LiveEntry,
}

struct LiveEntry(PathBuf);

impl Drop for LiveEntry {
    fn drop(&mut self) {
        if let Some(set) = live().as_mut() {
            set.remove(&self.0);
        }
    }
}

impl LockedTemp {
    /// Creates `.<stem>.<random>.dsb-tmp` in `dir` with `mode`, and locks it.
    pub(crate) fn create(dir: &Path, file_name: &str, mode: Option<u32>) -> io::Result<Self> {
        let prefix = format!(".{}.", stem(file_name));
        // A cleaner that opened the file between its creation and our lock may have deleted
        // it; then we start again with a new name. Two rounds practically always suffice.
        for _ in 0..16 {
            let mut builder = tempfile::Builder::new();
            builder.prefix(&prefix).suffix(TEMP_SUFFIX);
            #[cfg(unix)]
            if let Some(mode) = mode {
                use std::os::unix::fs::PermissionsExt;
                builder.permissions(Permissions::from_mode(mode));
            }
            #[cfg(not(unix))]
            let _ = mode;
            let file = builder.tempfile_in(dir)?;
            let entry = LiveEntry(file.path().to_path_buf());
            live()
                .get_or_insert_with(HashSet::new)
                .insert(entry.0.clone());
            if lock::hold(file.as_file(), file.path())? {
                return Ok(LockedTemp { file, _live: entry });
            }
            // Not ours any more: forget the name without deleting what may now stand there.
            let (_, path) = file.into_parts();
            let _ = path.keep();
        }
        Err(io::Error::other(
            "temporary files kept disappearing before they could be locked",
        ))
    }

    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }

    pub(crate) fn as_file(&self) -> &File {
        self.file.as_file()
    }

    /// Renames the file to `dest`; on failure it is deleted.
    pub(crate) fn persist(self, dest: &Path) -> io::Result<()> {
        self.file.persist(dest).map(drop).map_err(|e| e.error)
    }
}

/// Deletes the temporary files of saves to `file_name` in `dir` that no live saver holds.
/// Best effort: a file that cannot be inspected or removed is left alone.
pub(crate) fn remove_abandoned(dir: &Path, file_name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !is_temp_of(&name.to_string_lossy(), file_name) {
            continue;
        }
        let path = entry.path();
        // Held across the check so no save of this process can register this name meanwhile.
        let live = live();
        if live.as_ref().is_some_and(|set| set.contains(&path)) {
            continue;
        }
        lock::remove_if_unlocked(&path);
        drop(live);
    }
}

/// Destination names longer than this are shortened in temporary names, which add 16 bytes
/// and must stay within the usual 255-byte limit on a file name.
const LONGEST_STEM: usize = 200;

/// The destination's name as its temporary files (and an autosave's lock file) carry it: the
/// name itself, or for a long one its first bytes and a hash of the whole (FNV-1a, stable
/// across builds).
pub(crate) fn stem(file_name: &str) -> std::borrow::Cow<'_, str> {
    if file_name.len() <= LONGEST_STEM {
        return file_name.into();
    }
    let mut cut = LONGEST_STEM - 17;
    while !file_name.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash = file_name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{}~{hash:016x}", &file_name[..cut]).into()
}

/// True for `.<stem>.<random>.dsb-tmp`, with a random part of letters and digits only, so
/// that another destination's temporary files (`.<stem>.x.<random>.dsb-tmp`) are not taken
/// for ours.
fn is_temp_of(name: &str, file_name: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|n| n.strip_prefix(&*stem(file_name)))
        .and_then(|n| n.strip_prefix('.'))
        .and_then(|n| n.strip_suffix(TEMP_SUFFIX))
        .is_some_and(|random| {
            !random.is_empty() && random.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

#[cfg(unix)]
pub(crate) mod lock {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    use std::path::Path;

    pub(crate) fn flock(file: &File, operation: libc::c_int) -> io::Result<()> {
        // SAFETY: a valid open descriptor; flock touches no memory of ours.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// True when `path` (not followed if a link) is the file open as `file`.
    pub(crate) fn same_inode(file: &File, path: &Path) -> bool {
        match (file.metadata(), std::fs::symlink_metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }

    /// Locks our new file; false when a cleaner removed it from `path` before we could.
    pub(super) fn hold(file: &File, path: &Path) -> io::Result<bool> {
        loop {
            match flock(file, libc::LOCK_EX) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A file system without flock: nothing can be cleaned there either.
                Err(e) if e.raw_os_error() == Some(libc::ENOLCK) => return Ok(true),
                other => other?,
            }
            return Ok(same_inode(file, path));
        }
    }

    /// An empty unlocked file may belong to a saver between creating and locking it (the
    /// only moment its file is unlocked, and it writes nothing before locking), so it is
    /// left alone unless it is at least this old.
    const EMPTY_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

    /// Deletes `path` if no process holds its lock, while holding the lock ourselves.
    pub(super) fn remove_if_unlocked(path: &Path) {
        // Ours always have exactly one link. Another name of some other file (a hard link)
        // is never opened: closing our descriptor would drop this process's POSIX locks on
        // that file, which a SQLite connection may hold.
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_file() && meta.nlink() == 1 => {}
            _ => return,
        }
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        else {
            return;
        };
        let Ok(meta) = file.metadata() else {
            return;
        };
        let young = || {
            meta.modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_none_or(|age| age < EMPTY_GRACE)
        };
        if !meta.is_file() || meta.nlink() != 1 || (meta.len() == 0 && young()) {
            return;
        }
        if flock(&file, libc::LOCK_EX | libc::LOCK_NB).is_ok() && same_inode(&file, path) {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(not(unix))]
mod lock {
    use std::fs::File;
    use std::io;
    use std::path::Path;

    pub(super) fn hold(_: &File, _: &Path) -> io::Result<bool> {
        Ok(true)
    }

    pub(super) fn remove_if_unlocked(_: &Path) {}
}

#[cfg(test)]
mod tests {
    use super::is_temp_of;

    #[test]
    fn recognises_only_its_own_destinations_temporary_files() {
        assert!(is_temp_of(".notes.db.Ab12xZ.dsb-tmp", "notes.db"));
        assert!(!is_temp_of(".notes.db.x.Ab12xZ.dsb-tmp", "notes.db"));
        assert!(!is_temp_of(".notes.db..dsb-tmp", "notes.db"));
        assert!(!is_temp_of(".notes.db.Ab12xZ.dsb-tmp", "notes"));
        assert!(!is_temp_of("notes.db.Ab12xZ.dsb-tmp", "notes.db"));
        assert!(!is_temp_of(".notes.db.Ab12xZ", "notes.db"));
    }

    #[test]
    fn long_names_are_shortened_the_same_way_every_time() {
        let long = "é".repeat(150); // 300 bytes
        let stem = super::stem(&long);
        assert!(stem.len() <= super::LONGEST_STEM, "{}", stem.len());
        assert_eq!(stem, super::stem(&long));
        assert_ne!(stem, super::stem(&format!("{long}x")));
        assert!(is_temp_of(&format!(".{stem}.Ab12xZ.dsb-tmp"), &long));
        assert_eq!(super::stem("short.db"), "short.db");
    }
}
