//! File-system rules with no SQLite in them: which file a path names, durable directory
//! entries, and the locked temporary files saves write into.

pub(crate) mod temp_file;

use std::fs::{self, File};
use std::path::{Path, PathBuf};

#[cfg(unix)]
pub(crate) use temp_file::lock;
pub(crate) use temp_file::stem as short_name;
pub use temp_file::TEMP_SUFFIX;

/// True when both paths name the same existing file.
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}

/// What `stat` says about a file: which file it is, how long, and when it last changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) size: u64,
    pub(crate) mtime_ns: i128,
}

impl FileId {
    /// The file at `path` now (symbolic links followed); only metadata is read.
    pub(crate) fn of(path: &std::path::Path) -> Option<FileId> {
        let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Some(FileId {
                dev: meta.dev(),
                ino: meta.ino(),
                size: meta.len(),
                mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            })
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            None // no inode to prove it is the same file: every save is full
        }
    }
}

/// `path` with its folder made absolute and free of links, so that the same file reached by
/// different spellings compares equal. The last component is kept (callers resolve it).
pub(crate) fn canonical(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?;
    Some(fs::canonicalize(parent_dir(path)).ok()?.join(name))
}

/// The folder `path` is in (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The rollback journal SQLite pairs with the database file `db`: its name plus `-journal`.
pub(crate) fn journal_of(db: &Path) -> PathBuf {
    suffixed(db, "-journal")
}

/// The write-ahead log SQLite pairs with the database file `db`: its name plus `-wal`.
pub(crate) fn wal_of(db: &Path) -> PathBuf {
    suffixed(db, "-wal")
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Where a chain of symbolic links at `path` ends, whether or not that file exists yet: a
/// dangling link gets its target created, the link itself stays.
pub(crate) fn follow_links(path: &Path) -> std::io::Result<PathBuf> {
    let mut current = path.to_path_buf();
    // The kernel's own limit on links followed in one lookup (Linux: 40).
    for _ in 0..40 {
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&current)?;
                current = match current.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            _ => return Ok(current),
        }
    }
    Err(std::io::Error::other("too many levels of symbolic links"))
}

/// Asks the kernel to start writing what the save has written so far, so the disk works
/// while the copy goes on and the final fsync has less left to wait for. Only a hint: it
/// neither waits nor fails.
pub(crate) fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; offset 0 and length 0 mean "the whole file";
        // SYNC_FILE_RANGE_WRITE only starts writeback and touches no memory of ours.
        unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Makes the creation, rename or deletion of an entry of `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
