//! Temporary files left by killed saves are removed by the next save to the same destination;
//! files that live savers (in this process or another) are writing are never touched.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use diesel_sqlite_backup::{BackupExt, BackupOptions};

const CHILD: &str = "DSB_LITTER_CHILD";

/// Waits (up to a minute) until `ready` holds.
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A save to `dest` that stops after its first step until `go` exists, having created
/// `started` (the temporary file exists by then).
fn paused_save(dest: &Path, started: &Path, go: &Path) {
    let pool = common::filled_pool(2_000, 200);
    let mut first = true;
    let options = BackupOptions::default().pages_per_step(1).on_progress(|_| {
        if std::mem::take(&mut first) {
            std::fs::write(started, b"").unwrap();
            wait_until("go", || go.exists());
        }
    });
    pool.get().unwrap().save_as_with(dest, options).unwrap();
}

#[test]
fn litter_child_saver() {
    let Ok(args) = std::env::var(CHILD) else {
        return; // runs only as the child of a test below
    };
    let paths: Vec<&str> = args.split('\n').collect();
    paused_save(
        Path::new(paths[0]),
        Path::new(paths[1]),
        Path::new(paths[2]),
    );
}

/// A leftover nobody holds is removed; names of other destinations and other files stay.
#[test]
fn a_save_removes_abandoned_temporary_files_of_its_destination_only() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("notes.db");
    let abandoned = dir.path().join(".notes.db.Ab12xZ.dsb-tmp");
    let other_dest = dir.path().join(".notes.db.x.Ab12xZ.dsb-tmp");
    let unrelated = dir.path().join(".notes.db.Ab12xZ.tmp");
    for f in [&abandoned, &other_dest, &unrelated] {
        std::fs::write(f, vec![7u8; 4096]).unwrap();
    }
    common::filled_pool(10, 10)
        .get()
        .unwrap()
        .save_as(&dest)
        .unwrap();
    assert!(!abandoned.exists(), "abandoned temporary file kept");
    assert!(other_dest.exists(), "another destination's file removed");
    assert!(unrelated.exists(), "an unrelated file removed");
    assert_eq!(common::notes_in_file(&dest), 10);
}

/// Another process is in the middle of a save to the same destination: our save does not
/// remove its temporary file, and its save completes.
#[cfg(unix)]
#[test]
fn a_save_never_removes_the_file_another_process_is_writing() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("shared.db");
    let (started, go) = (dir.path().join("started"), dir.path().join("go"));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "litter_child_saver",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD,
            format!(
                "{}\n{}\n{}",
                dest.display(),
                started.display(),
                go.display()
            ),
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("child started", || started.exists());
    let theirs = common::temp_files(dir.path());
    assert_eq!(theirs.len(), 1, "the child's temporary file: {theirs:?}");

    common::filled_pool(10, 10)
        .get()
        .unwrap()
        .save_as(&dest)
        .unwrap();
    assert!(
        theirs[0].exists(),
        "a live saver's temporary file was removed"
    );
    assert_eq!(common::notes_in_file(&dest), 10);

    std::fs::write(&go, b"").unwrap();
    assert!(child.wait().unwrap().success(), "the child's save failed");
    assert_eq!(common::notes_in_file(&dest), 2_000);
    assert_eq!(common::temp_files(dir.path()), Vec::<PathBuf>::new());
}

/// The same within one process: a save on another thread is mid-copy.
#[test]
fn a_save_never_removes_the_file_another_thread_is_writing() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("shared.db");
    let (started, go) = (dir.path().join("started"), dir.path().join("go"));
    let (tx, rx) = mpsc::channel();
    let saver = std::thread::spawn({
        let (dest, started, go) = (dest.clone(), started.clone(), go.clone());
        move || {
            paused_save(&dest, &started, &go);
            tx.send(()).unwrap();
        }
    });
    wait_until("thread started", || started.exists());
    let theirs = common::temp_files(dir.path());
    assert_eq!(theirs.len(), 1);

    common::filled_pool(10, 10)
        .get()
        .unwrap()
        .save_as(&dest)
        .unwrap();
    assert!(
        theirs[0].exists(),
        "a live saver's temporary file was removed"
    );

    std::fs::write(&go, b"").unwrap();
    rx.recv_timeout(Duration::from_secs(60)).unwrap();
    saver.join().unwrap();
    assert_eq!(common::notes_in_file(&dest), 2_000);
    assert_eq!(common::temp_files(dir.path()), Vec::<PathBuf>::new());
}

/// Empty leftovers may be a saver between creating and locking its file: kept while young,
/// removed once old. Another name of some other file (a hard link) is never touched.
#[cfg(unix)]
#[test]
fn young_empty_files_and_hard_links_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("notes.db");
    let young = dir.path().join(".notes.db.Young1.dsb-tmp");
    let old = dir.path().join(".notes.db.Old001.dsb-tmp");
    let precious = dir.path().join("precious.db");
    let link = dir.path().join(".notes.db.Link01.dsb-tmp");
    std::fs::write(&young, b"").unwrap();
    std::fs::File::create(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    std::fs::write(&precious, b"keep").unwrap();
    std::fs::hard_link(&precious, &link).unwrap();
    common::filled_pool(1, 1)
        .get()
        .unwrap()
        .save_as(&dest)
        .unwrap();
    assert!(young.exists(), "a young empty file was removed");
    assert!(!old.exists(), "an old empty leftover was kept");
    assert!(link.exists(), "a hard link was removed");
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep");
}

/// A destination name near the 255-byte limit still gets a temporary file.
#[test]
fn a_long_file_name_can_be_saved() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join(format!("{}.db", "é".repeat(125))); // 253 bytes
    common::filled_pool(3, 3)
        .get()
        .unwrap()
        .save_as(&dest)
        .unwrap();
    assert_eq!(common::notes_in_file(&dest), 3);
    assert_eq!(common::temp_files(dir.path()), Vec::<PathBuf>::new());
}

/// A `-journal` whose database file is gone would be replayed over the new file: the save
/// refuses with an error that says what to remove, and writes nothing.
#[test]
fn an_orphaned_journal_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("orphan.db");
    let journal = dir.path().join("orphan.db-journal");
    std::fs::write(&journal, vec![0xd9u8; 512]).unwrap();
    let err = common::filled_pool(1, 1)
        .get()
        .unwrap()
        .save_as(&dest)
        .unwrap_err();
    assert!(
        matches!(err, diesel_sqlite_backup::BackupError::InvalidInput { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("remove it"), "{err}");
    assert!(!dest.exists());
    assert_eq!(common::temp_files(dir.path()), Vec::<PathBuf>::new());
}
