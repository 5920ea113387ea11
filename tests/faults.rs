//! Writes that fail and files another process holds: errors, never panics, never damage.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{app, filled_pool, temp_files};
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_sqlite_backup::{BackupError, BackupExt, BackupOptions};

/// The child for `disk_full_fails_cleanly`: saves under a file-size limit.
#[test]
fn fsize_child() {
    let Ok(dest) = std::env::var("DSB_FSIZE_CHILD") else {
        return;
    };
    let pool = filled_pool(20_000, 200); // several MB, far over the limit below
    #[cfg(unix)]
    // SAFETY: plain libc calls with valid arguments; SIGXFSZ ignored turns a write past the
    // limit into EFBIG instead of killing the process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: 256 * 1024,
            rlim_max: 256 * 1024,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let err = pool.get().unwrap().save_as(&dest).unwrap_err();
    println!("SAVE-ERROR: {err}");
    assert!(
        matches!(err, BackupError::Sqlite { .. } | BackupError::Io { .. }),
        "{err:?}"
    );
    let dir = Path::new(&dest).parent().unwrap();
    assert!(
        temp_files(dir).is_empty(),
        "a temporary file was left behind"
    );
    // The pool still works.
    assert_eq!(app::note_count(&mut pool.get().unwrap()), 20_000);
}

/// The disk fills up (RLIMIT_FSIZE with SIGXFSZ ignored, in a child process): save_as
/// returns a BackupError without panicking, the old destination is untouched, and no
/// temporary file remains.
#[cfg(unix)]
#[test]
fn disk_full_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("full.db");
    filled_pool(10, 10).get().unwrap().save_as(&dest).unwrap();
    let before = fs::read(&dest).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "fsize_child", "--nocapture", "--test-threads=1"])
        .env("DSB_FSIZE_CHILD", &dest)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SAVE-ERROR"), "{stdout}");
    assert_eq!(
        fs::read(&dest).unwrap(),
        before,
        "the old destination changed"
    );
    assert!(temp_files(dir.path()).is_empty());
}

/// A destination whose parent is a regular file is an I/O error naming the path.
#[test]
fn parent_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain.txt");
    fs::write(&file, "x").unwrap();
    let err = filled_pool(1, 1)
        .get()
        .unwrap()
        .save_as(file.join("x.db"))
        .unwrap_err();
    assert!(matches!(err, BackupError::Io { .. }), "{err}");
    assert!(err.to_string().contains("plain.txt"), "{err}");
    assert_eq!(fs::read(&file).unwrap(), b"x");
}

/// A read-only directory refuses the temporary file: an I/O error and no damage. (Skipped
/// as root, for whom permissions do not apply.)
#[cfg(unix)]
#[test]
fn read_only_directory() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("running as root: read-only directories are writable; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("ro.db");
    filled_pool(3, 3).get().unwrap().save_as(&dest).unwrap();
    let before = fs::read(&dest).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o555)).unwrap();
    let err = filled_pool(9, 9).get().unwrap().save_as(&dest).unwrap_err();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    assert!(matches!(err, BackupError::Io { .. }), "{err}");
    assert_eq!(fs::read(&dest).unwrap(), before);
}

/// A read-only destination file (its folder writable) is replaced by rename, as the docs
/// promise, by plain, incremental and autosave saves alike, and keeps its mode. Permission
/// bits do not bind root, so as root the test drops to `nobody` in its own process (and is
/// skipped where that is not allowed).
#[cfg(unix)]
#[test]
fn a_read_only_file_is_replaced_and_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    if !common::in_own_process("a_read_only_file_is_replaced_and_keeps_its_mode") {
        return;
    }
    // SAFETY: plain libc calls on this process, which runs this test alone.
    if unsafe { libc::geteuid() } == 0
        && unsafe { libc::setgid(65534) != 0 || libc::setuid(65534) != 0 }
    {
        eprintln!("root that cannot become nobody: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("ro.db");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let pool = filled_pool(3, 3);
    pool.get().unwrap().save_as(&dest).unwrap();
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o444)).unwrap();

    let pool = filled_pool(9, 9);
    pool.get().unwrap().save_as(&dest).unwrap();
    assert_eq!(common::notes_in_file(&dest), 9);
    assert_eq!(mode(&dest), 0o444, "save_as keeps the mode");

    pool.get()
        .unwrap()
        .batch_execute("DELETE FROM notes WHERE id > 5")
        .unwrap();
    let incremental = BackupOptions::default().incremental(true);
    pool.get()
        .unwrap()
        .save_as_with(&dest, incremental)
        .unwrap();
    assert_eq!(common::notes_in_file(&dest), 5);
    assert_eq!(mode(&dest), 0o444, "an incremental save keeps the mode");

    pool.get()
        .unwrap()
        .batch_execute("DELETE FROM notes WHERE id > 2")
        .unwrap();
    let options = diesel_sqlite_backup::AutosaveOptions::default();
    diesel_sqlite_backup::Autosave::start(&pool, &dest, options)
        .unwrap()
        .stop()
        .unwrap();
    assert_eq!(common::notes_in_file(&dest), 2);
    assert_eq!(mode(&dest), 0o444, "autosave keeps the mode");
    assert!(
        temp_files(dir.path()).is_empty(),
        "{:?}",
        temp_files(dir.path())
    );
}

/// The child for `restore_from_a_file_another_process_locks`: holds an exclusive lock.
#[test]
fn lock_child() {
    let Ok(path) = std::env::var("DSB_LOCK_CHILD") else {
        return;
    };
    let mut c = SqliteConnection::establish(&path).unwrap();
    c.batch_execute("BEGIN EXCLUSIVE; INSERT INTO notebooks(title) VALUES ('locked');")
        .unwrap();
    println!("locked");
    std::thread::sleep(Duration::from_secs(600)); // killed by the parent long before
}

/// Another process holds the file locked: restore_from waits until its deadline, fails with
/// Busy, and the in-memory data is untouched.
#[cfg(unix)]
#[test]
fn restore_from_a_file_another_process_locks() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("locked.db");
    filled_pool(50, 10).get().unwrap().save_as(&file).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "lock_child", "--nocapture", "--test-threads=1"])
        .env("DSB_LOCK_CHILD", &file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.unwrap().ends_with("locked")));

    let pool = filled_pool(7, 10);
    let started = Instant::now();
    let err = pool
        .get()
        .unwrap()
        .restore_from_with(
            &file,
            BackupOptions::default().timeout(Duration::from_millis(300)),
        )
        .unwrap_err();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(err.is_busy(), "{err}");
    // The child keeps its lock for 10 minutes: ignoring the deadline would wait that long.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "ignored the deadline"
    );
    assert_eq!(app::note_count(&mut pool.get().unwrap()), 7);
}

/// A FIFO at the journal's name would block SQLite's hot-journal check forever (opening a
/// FIFO waits for a writer), past any budget. Saves, incremental saves and restores refuse
/// it at once with `InvalidInput`, and the file is left as it was.
#[cfg(unix)]
#[test]
fn a_fifo_at_the_journal_name_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fifo.db");
    let pool = filled_pool(20, 10);
    pool.get().unwrap().save_as(&file).unwrap();
    let before = fs::read(&file).unwrap();
    let journal = dir.path().join("fifo.db-journal");
    let fifo = std::ffi::CString::new(journal.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path; no memory of ours is kept.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

    let (tx, rx) = std::sync::mpsc::channel();
    let file_in_thread = file.clone();
    std::thread::spawn(move || {
        let mut c = pool.get().unwrap();
        let plain = c.save_as(&file_in_thread);
        let incremental =
            c.save_as_with(&file_in_thread, BackupOptions::default().incremental(true));
        let restore = c.restore_from(&file_in_thread);
        tx.send([plain, incremental, restore]).unwrap();
    });
    // Only a bound for a hang: the calls return at once.
    let results = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a call blocked on the FIFO");
    for result in results {
        let err = result.unwrap_err();
        assert!(matches!(err, BackupError::InvalidInput { .. }), "{err}");
        assert_eq!(err.path(), Some(journal.as_path()), "{err}");
    }
    assert_eq!(fs::read(&file).unwrap(), before);
}
