//! `save_as`: what lands in the file, atomic replacement, and the refusals.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::{app, filled_pool, integrity, notes_in_file, scalar, temp_files};
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_sqlite_backup::{BackupError, BackupExt, BackupOptions, SingletonManager};

/// A save holds every committed row and passes integrity_check.
#[test]
fn save_as_writes_a_complete_database() {
    let pool = filled_pool(2_000, 200);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.db");
    pool.get().unwrap().save_as(&file).unwrap();
    assert_eq!(notes_in_file(&file), 2_000);
    assert_eq!(integrity(&file), "ok");
    assert!(temp_files(dir.path()).is_empty());
}

/// Saving over an existing file replaces it whole, keeps its permissions, and leaves no
/// temporary file behind.
#[test]
fn save_as_replaces_an_existing_file_and_keeps_its_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doc.db");
    filled_pool(10, 10).get().unwrap().save_as(&file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    }
    filled_pool(500, 10).get().unwrap().save_as(&file).unwrap();
    assert_eq!(notes_in_file(&file), 500);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }
    assert!(temp_files(dir.path()).is_empty());
}

/// When a save fails part-way (here: the source stays locked past the deadline), the old
/// destination is untouched byte for byte and no temporary file remains.
#[test]
fn failed_save_leaves_the_old_file_and_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doc.db");
    let pool = r2d2::Pool::builder()
        .max_size(2)
        .build(SingletonManager::new())
        .unwrap();
    {
        let mut c = pool.get().unwrap();
        app::migrate(&mut c);
        app::fill(&mut c, "first", 100, 50);
        c.save_as(&file).unwrap();
    }
    let before = fs::read(&file).unwrap();

    let (mut writer, mut saver) = (pool.get().unwrap(), pool.get().unwrap());
    writer
        .batch_execute("BEGIN IMMEDIATE; INSERT INTO notebooks(title) VALUES ('uncommitted');")
        .unwrap();
    let err = saver
        .save_as_with(
            &file,
            BackupOptions::default().timeout(Duration::from_millis(200)),
        )
        .unwrap_err();
    assert!(err.is_busy(), "{err}");
    writer.batch_execute("ROLLBACK").unwrap();

    assert_eq!(fs::read(&file).unwrap(), before);
    assert!(temp_files(dir.path()).is_empty());
}

/// A save interrupted after it has written pages (here: the progress callback panics part-way)
/// leaves the old destination byte for byte, removes its temporary file, and finishes the
/// backup object so the pooled connection stays usable.
#[test]
fn save_interrupted_mid_copy_leaves_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doc.db");
    filled_pool(300, 50).get().unwrap().save_as(&file).unwrap();
    let before = fs::read(&file).unwrap();

    let pool = filled_pool(3_000, 200);
    let mut conn = pool.get().unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut steps = 0;
        conn.save_as_with(
            &file,
            BackupOptions::default().pages_per_step(4).on_progress(|_| {
                steps += 1;
                assert!(steps < 20, "simulated crash after {steps} steps");
            }),
        )
    }));
    assert!(outcome.is_err(), "the save should have been interrupted");
    assert_eq!(
        fs::read(&file).unwrap(),
        before,
        "the old file was modified"
    );
    assert!(temp_files(dir.path()).is_empty());
    assert_eq!(app::note_count(&mut conn), 3_000);
}

/// Saving a file database onto its own path is refused, even through another spelling.
#[test]
fn save_onto_the_source_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("self.db");
    let mut conn = SqliteConnection::establish(file.to_str().unwrap()).unwrap();
    app::migrate(&mut conn);
    let before = fs::read(&file).unwrap();
    let other_spelling = dir.path().join(".").join("self.db");
    let err = conn.save_as(&other_spelling).unwrap_err();
    assert!(matches!(err, BackupError::SameFile { .. }), "{err}");
    assert_eq!(fs::read(&file).unwrap(), before);
}

/// A directory, or a path without a file name, is not a destination.
#[test]
fn save_to_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = filled_pool(1, 1)
        .get()
        .unwrap()
        .save_as(dir.path())
        .unwrap_err();
    assert!(matches!(err, BackupError::InvalidInput { .. }), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}

/// A missing parent directory gives an I/O error naming the path.
#[test]
fn save_into_a_missing_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("no/such/dir/x.db");
    let err = filled_pool(1, 1).get().unwrap().save_as(&file).unwrap_err();
    assert!(matches!(err, BackupError::Io { .. }), "{err}");
    assert!(err.to_string().contains("no/such/dir"), "{err}");
}

/// A symbolic link is followed: the file it points to is replaced, the link stays a link.
#[cfg(unix)]
#[test]
fn save_through_a_symlink_replaces_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("real.db");
    let link = dir.path().join("link.db");
    filled_pool(1, 1).get().unwrap().save_as(&target).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    filled_pool(42, 1).get().unwrap().save_as(&link).unwrap();
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(notes_in_file(&target), 42);
}

/// The connection's own uncommitted writes never reach a file: save_as refuses at once.
/// Two saves to one path at once: one waits for the old file's RESERVED lock while the other
/// renames its file over the path (and keeps the old file's lock for good). The waiting save
/// goes on with the file now at the path. It used to wait its whole budget for the replaced
/// file and fail with Busy (the template cache's concurrent builders met this).
#[test]
fn a_save_waiting_for_a_file_another_save_replaced_goes_on_with_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    let pool = filled_pool(3, 10);
    pool.get().unwrap().save_as(&path).unwrap();
    // Holds the old file's RESERVED lock, as the other save does once it renamed.
    let mut other_saver = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    other_saver.batch_execute("BEGIN IMMEDIATE").unwrap();
    std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            // Budget and hang guard: the wrong behaviour waits all of it.
            let options = BackupOptions::default().timeout(Duration::from_secs(30));
            pool.get().unwrap().save_as_with(&path, options)
        });
        // Gives the save time to reach the lock; only decides whether the old bug is caught.
        std::thread::sleep(Duration::from_millis(300));
        let other = dir.path().join("other.db");
        let mut c = SqliteConnection::establish(other.to_str().unwrap()).unwrap();
        c.batch_execute("CREATE TABLE other(x)").unwrap();
        drop(c);
        fs::rename(&other, &path).unwrap();
        waiting.join().unwrap().unwrap();
    });
    assert_eq!(notes_in_file(&path), 3);
}

#[test]
fn save_inside_own_write_transaction_is_refused_and_writes_nothing() {
    let pool = filled_pool(10, 10);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tx.db");
    let mut conn = pool.get().unwrap();
    let started = Instant::now();
    let result = conn.transaction(|c| {
        app::fill(c, "pending", 5, 10);
        let err = c.save_as(&file).unwrap_err();
        assert!(
            matches!(err, BackupError::SourceInWriteTransaction { .. }),
            "{err}"
        );
        Err::<(), _>(diesel::result::Error::RollbackTransaction)
    });
    assert!(result.is_err());
    // A wait would last the whole default budget (DEFAULT_TIMEOUT, 30 s).
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "refused at once, not after a wait"
    );
    assert!(!file.exists());
    // After the transaction ends, the save works and holds only committed rows.
    conn.save_as(&file).unwrap();
    assert_eq!(notes_in_file(&file), 10);
}

/// A read transaction is fine: the save sees the committed state.
#[test]
fn save_inside_a_read_transaction_works() {
    let pool = filled_pool(10, 10);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("read.db");
    let mut conn = pool.get().unwrap();
    conn.batch_execute("BEGIN").unwrap();
    assert_eq!(app::note_count(&mut conn), 10);
    conn.save_as(&file).unwrap();
    conn.batch_execute("COMMIT").unwrap();
    assert_eq!(notes_in_file(&file), 10);
}

/// `schema` picks an attached database or `temp`; an unknown name is an error.
#[test]
fn save_picks_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let attached = dir.path().join("attached.db");
    let mut conn = SqliteConnection::establish(":memory:").unwrap();
    conn.batch_execute(&format!(
        "ATTACH '{}' AS side; CREATE TABLE side.s(x); INSERT INTO side.s VALUES (7);
         CREATE TEMP TABLE t(y); INSERT INTO t VALUES (1), (2);",
        attached.display()
    ))
    .unwrap();

    let side_copy = dir.path().join("side.db");
    conn.save_as_with(&side_copy, BackupOptions::default().schema("side"))
        .unwrap();
    let mut c = SqliteConnection::establish(side_copy.to_str().unwrap()).unwrap();
    assert_eq!(scalar(&mut c, "SELECT x AS n FROM s"), 7);

    let temp_copy = dir.path().join("temp.db");
    conn.save_as_with(&temp_copy, BackupOptions::default().schema("temp"))
        .unwrap();
    let mut c = SqliteConnection::establish(temp_copy.to_str().unwrap()).unwrap();
    assert_eq!(scalar(&mut c, "SELECT count(*) AS n FROM t"), 2);

    let err = conn
        .save_as_with(
            dir.path().join("x.db"),
            BackupOptions::default().schema("nope"),
        )
        .unwrap_err();
    assert!(
        matches!(err, BackupError::UnknownSchema { ref schema, .. } if schema == "nope"),
        "{err}"
    );
}

/// A FIFO (or a device node) at the destination is refused, never replaced by a regular file.
#[cfg(unix)]
#[test]
fn save_over_a_special_file_is_refused_and_leaves_it() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let err = filled_pool(3, 10)
        .get()
        .unwrap()
        .save_as(&fifo)
        .unwrap_err();
    assert!(matches!(err, BackupError::InvalidInput { .. }), "{err:?}");
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(temp_files(dir.path()).is_empty());
}

/// Runs a python3 script with the database path as `sys.argv[1]`; returns its standard output.
fn python(script: &str, path: &std::path::Path) -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", script, path.to_str().unwrap()])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The tables a plain SQLite reader (python3) sees in the file, recovering any log it finds.
fn tables_seen(path: &std::path::Path) -> String {
    python(
        "import sqlite3, sys\n\
         c = sqlite3.connect(sys.argv[1])\n\
         print(','.join(r[0] for r in c.execute(\"SELECT name FROM sqlite_schema WHERE type='table' ORDER BY 1\")))",
        path,
    )
}

/// A writer killed with its WAL un-checkpointed, or mid-transaction with a hot journal,
/// leaves a log beside the file. A save over it must not let SQLite replay that old log over
/// the new file: readers see the saved database.
#[test]
fn save_over_a_file_with_a_stale_log_shows_the_saved_database() {
    for (kind, script) in [
        (
            "wal",
            "import sqlite3, sys, os\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA wal_autocheckpoint=0')\n\
             c.execute('CREATE TABLE oldt(x)')\n\
             [c.execute('INSERT INTO oldt VALUES (?)', (i,)) for i in range(2000)]\n\
             os.kill(os.getpid(), 9)\n",
        ),
        (
            "journal",
            "import sqlite3, sys, os\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('CREATE TABLE oldt(x)')\n\
             c.execute('BEGIN'); [c.execute('INSERT INTO oldt VALUES (?)', (i,)) for i in range(2000)]\n\
             c.execute('COMMIT')\n\
             c.execute('PRAGMA cache_size=2'); c.execute('BEGIN')\n\
             c.execute(\"UPDATE oldt SET x = x || 'changed changed changed'\")\n\
             os.kill(os.getpid(), 9)\n",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("doc.db");
        python(script, &file);
        let log = dir.path().join(format!("doc.db-{kind}"));
        assert!(log.exists(), "{kind}: the killed writer left no log");
        let pool = filled_pool(3, 10);
        pool.get().unwrap().save_as(&file).unwrap();
        let seen = tables_seen(&file);
        assert!(seen.contains("notes") && !seen.contains("oldt"), "{kind}: {seen}");
        assert!(!log.exists(), "{kind}: the old log is still there");
        assert_eq!(notes_in_file(&file), 3, "{kind}");
    }
}

/// A `-journal` that is not hot and that no writer holds, as `journal_mode=TRUNCATE` (empty)
/// and `PERSIST` (zeroed header) leave one after every commit, even after they close: the
/// save settles it the way SQLite itself removes one when a connection leaves those modes
/// (under the file's RESERVED lock) and goes through. It used to fail with Busy, saying the
/// journal was in use by another connection.
#[test]
fn save_over_a_file_with_a_leftover_journal_that_is_not_hot() {
    for mode in ["TRUNCATE", "PERSIST"] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("doc.db");
        let script = format!(
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('PRAGMA journal_mode={mode}')\n\
             c.execute('CREATE TABLE oldt(x)'); c.execute('INSERT INTO oldt VALUES (1)')\n\
             c.close()\n"
        );
        python(&script, &file);
        let journal = dir.path().join("doc.db-journal");
        assert!(journal.exists(), "{mode}: set-up left no journal");
        let options = BackupOptions::default().timeout(Duration::from_secs(60));
        filled_pool(3, 10)
            .get()
            .unwrap()
            .save_as_with(&file, options)
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(!journal.exists(), "{mode}: the old journal is still there");
        assert_eq!(notes_in_file(&file), 3, "{mode}");
        assert!(temp_files(dir.path()).is_empty(), "{mode}");
    }
}

/// A file another process has open in WAL mode cannot have its log settled: the save waits
/// for it within its budget, then is refused with Busy (`waited` the time really waited) and
/// the old file stays as it was.
#[test]
fn save_over_a_file_another_process_uses_in_wal_mode_is_refused() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("live.db");
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA wal_autocheckpoint=0')\n\
             c.execute('CREATE TABLE oldt(x)'); c.execute('INSERT INTO oldt VALUES (1)')\n\
             print('ready', flush=True)\n\
             time.sleep(60)\n",
            file.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let err = filled_pool(3, 10)
        .get()
        .unwrap()
        .save_as_with(
            &file,
            BackupOptions::default().timeout(Duration::from_millis(300)),
        )
        .unwrap_err();
    let _ = child.kill();
    let _ = child.wait();
    assert!(err.is_busy(), "{err:?}");
    let BackupError::Busy { waited, .. } = err else {
        unreachable!()
    };
    assert!(!waited.is_zero(), "did not wait");
    assert_eq!(tables_seen(&file), "oldt");
    assert!(temp_files(dir.path()).is_empty());
}

/// A power loss before an in-place save sealed its journal leaves a `-journal` whose first
/// byte is zero: not hot, so every SQLite ignores it, and so must the next save (it used to
/// take it for a journal in use and give up with Busy on every try). Likewise an empty one.
#[test]
fn a_journal_a_power_loss_left_unsealed_does_not_block_saves() {
    for leftover in [vec![0u8; 4096], Vec::new()] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.db");
        filled_pool(10, 10).get().unwrap().save_as(&path).unwrap();
        let journal = dir.path().join("doc.db-journal");
        fs::write(&journal, &leftover).unwrap();
        let pool = filled_pool(20, 10);
        let mut conn = pool.get().unwrap();
        conn.save_as_with(
            &path,
            BackupOptions::default().timeout(Duration::from_secs(60)),
        )
        .unwrap();
        assert_eq!(notes_in_file(&path), 20);
        assert!(
            !journal.exists(),
            "the ignored journal is left beside the new file"
        );
    }
}

/// A file replaced by rename keeps its RESERVED lock only while it is a stale copy: a file
/// with another hard link lives on under that name, and its writers must not be locked out
/// (found by the adversarial review).
#[cfg(unix)]
#[test]
fn a_replaced_file_with_another_name_stays_writable_there() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    filled_pool(3, 10).get().unwrap().save_as(&a).unwrap();
    fs::hard_link(&a, &b).unwrap();
    filled_pool(5, 10).get().unwrap().save_as(&a).unwrap();
    let mut other = SqliteConnection::establish(b.to_str().unwrap()).unwrap();
    other
        .batch_execute("PRAGMA busy_timeout=0; DELETE FROM notes;")
        .expect("the other name of the replaced file is writable");
    assert_eq!(notes_in_file(&a), 5);
    assert_eq!(notes_in_file(&b), 0);
}
