//! An autosave never writes over a file silently: one autosave per file (in this process or
//! another), and after an Open into its database it waits for the app to say where to save.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use diesel_sqlite_backup::{Autosave, AutosaveOptions, BackupError, BackupExt};

use super::{add_item, items_in, ledger, ledger_pool, MS, PATIENCE};

fn fast() -> AutosaveOptions {
    AutosaveOptions::default()
        .every(20 * MS)
        .quiet(Duration::ZERO)
}

/// A second autosave to a file one already serves fails at `start` and writes nothing; once
/// the first is gone, a new one starts and no lock file is left behind.
#[test]
fn a_second_autosave_to_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("one.db");
    let pool = ledger_pool();
    let first = Autosave::start(&pool, &file, fast()).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let other = ledger_pool();
    add_item(&mut other.get().unwrap());
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let spellings = [
        file.clone(),
        dir.path().join(".").join("one.db"),
        link.clone(),
    ];
    for path in &spellings {
        for p in [&pool, &other] {
            let err = Autosave::start(p, path, fast()).unwrap_err();
            assert!(
                matches!(err, BackupError::AlreadyAutosaving { .. }),
                "{err}"
            );
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(err.to_string().contains(name), "names the path: {err}");
        }
    }
    assert!(
        std::fs::read(&file).unwrap() == bytes,
        "a refused start wrote"
    );
    drop(first);
    let again = Autosave::start(&other, &file, fast()).unwrap();
    assert_eq!(items_in(&file), 1);
    again.stop().unwrap();
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["link.db", "one.db"], "litter left");
}

const HOLDER: &str = "DSB_AUTOSAVE_HOLDER";

/// The child of the cross-process test: autosaves to the file until its stdin closes.
#[test]
fn autosave_holder_child() {
    let Ok(path) = std::env::var(HOLDER) else {
        return;
    };
    let pool = ledger_pool();
    let autosave = Autosave::start(&pool, &path, fast()).unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().lines().count(); // until the parent closes it
    autosave.stop().unwrap();
}

/// Another process autosaving to the file makes `start` fail here; after it ends, it works.
#[test]
fn an_autosave_in_another_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shared.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "exclusive::autosave_holder_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLDER, &file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.ends_with("ready"))),
        "the child did not start"
    );
    let pool = ledger_pool();
    add_item(&mut pool.get().unwrap());
    let refused = Autosave::start(&pool, &file, fast());
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let err = refused.unwrap_err();
    assert!(
        matches!(err, BackupError::AlreadyAutosaving { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("shared.db"), "{err}");
    assert_eq!(items_in(&file), 0, "the refused start wrote");
    let autosave = Autosave::start(&pool, &file, fast()).unwrap();
    assert_eq!(items_in(&file), 1);
    autosave.stop().unwrap();
}

/// Builds the document the app opens: a file holding `items` items.
fn document(path: &Path, items: usize) {
    let pool = ledger_pool();
    for _ in 0..items {
        add_item(&mut pool.get().unwrap());
    }
    pool.get().unwrap().save_as(path).unwrap();
}

/// An autosave whose errors arrive on the returned channel: (message, whether it is
/// `DocumentOpened`, its path).
type Reported = (String, bool, Option<std::path::PathBuf>);

fn reporting(pool: &super::common::Pool, path: &Path) -> (Autosave, mpsc::Receiver<Reported>) {
    let (tx, errors) = mpsc::channel();
    let options = fast().on_error(move |e: &BackupError| {
        let opened = matches!(e, BackupError::DocumentOpened { .. });
        let _ = tx.send((e.to_string(), opened, e.path().map(Path::to_path_buf)));
    });
    (Autosave::start(pool, path, options).unwrap(), errors)
}

/// Asserts that `on_error` heard, once, that the Open is not saved over `old`.
fn assert_refusal_reported(errors: &mpsc::Receiver<Reported>, old: &Path) {
    let (message, opened, path) = errors.recv_timeout(PATIENCE).expect("on_error heard");
    assert!(opened, "{message}");
    assert_eq!(path.as_deref(), Some(old), "{message}");
    assert!(
        errors.recv_timeout(200 * MS).is_err(),
        "reported more than once"
    );
}

/// After `restore_from` (Open), the old file is left as it was, through commits, `save_now`
/// and the final save; `on_error` hears why, once.
#[test]
fn an_open_is_not_saved_over_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let (old, opened) = (dir.path().join("old.db"), dir.path().join("opened.db"));
    document(&opened, 5);
    let pool = ledger_pool();
    add_item(&mut pool.get().unwrap());
    let (autosave, errors) = reporting(&pool, &old);
    let before = std::fs::read(&old).unwrap();
    pool.get().unwrap().restore_from(&opened).unwrap();
    add_item(&mut pool.get().unwrap());
    let refused = autosave.save_now();
    add_item(&mut pool.get().unwrap());
    std::thread::sleep(100 * MS); // scheduled saves would come every 20 ms
    assert!(
        std::fs::read(&old).unwrap() == before,
        "the old file was written"
    );
    let err = refused.unwrap_err();
    assert!(matches!(err, BackupError::DocumentOpened { .. }), "{err}");
    assert_refusal_reported(&errors, &old);
    let err = autosave.stop().unwrap_err();
    assert!(matches!(err, BackupError::DocumentOpened { .. }), "{err}");
    assert!(std::fs::read(&old).unwrap() == before, "written at stop");
    assert_eq!(
        items_in(&opened),
        5,
        "the opened file is not the autosave's"
    );
    assert_eq!(items_in(&old), 1);
}

/// `retarget` saves the opened document to its new file and keeps saving there; the old
/// file stays as it was and is free for another autosave.
#[test]
fn retarget_follows_the_opened_document() {
    let dir = tempfile::tempdir().unwrap();
    let (old, opened) = (dir.path().join("old.db"), dir.path().join("opened.db"));
    let new = dir.path().join("new.db");
    document(&opened, 5);
    let pool = ledger_pool();
    add_item(&mut pool.get().unwrap());
    let (autosave, errors) = reporting(&pool, &old);
    let before = std::fs::read(&old).unwrap();
    pool.get().unwrap().restore_from(&opened).unwrap();
    add_item(&mut pool.get().unwrap());
    assert!(autosave.save_now().is_err());
    // Another autosave holds the new file: refused, nothing changes.
    let holder = Autosave::start(&ledger_pool(), &new, fast()).unwrap();
    let err = autosave.retarget(&new).unwrap_err();
    assert!(
        matches!(err, BackupError::AlreadyAutosaving { .. }),
        "{err}"
    );
    holder.stop().unwrap();
    autosave.retarget(&new).unwrap();
    assert_eq!(autosave.path(), new);
    assert_eq!(items_in(&new), 6);
    add_item(&mut pool.get().unwrap());
    autosave.save_now().unwrap();
    assert_eq!(items_in(&new), 7);
    assert!(
        std::fs::read(&old).unwrap() == before,
        "the old file was written"
    );
    assert_eq!(items_in(&opened), 5);
    assert_refusal_reported(&errors, &old);
    // The old file's lock went with it.
    Autosave::start(&ledger_pool(), &old, fast())
        .unwrap()
        .stop()
        .unwrap();
    autosave.stop().unwrap();
    assert_eq!(items_in(&new), 7);
}

/// `resume` keeps saving to the old file, now with the opened document (here loaded from
/// bytes); a later Open stops it again.
#[test]
fn resume_saves_the_opened_document_over_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.db");
    let opened = ledger_pool();
    for _ in 0..5 {
        add_item(&mut opened.get().unwrap());
    }
    let bytes = opened.get().unwrap().snapshot().unwrap();
    let pool = ledger_pool();
    add_item(&mut pool.get().unwrap());
    let (autosave, errors) = reporting(&pool, &old);
    pool.get().unwrap().restore_from_bytes(&bytes).unwrap();
    add_item(&mut pool.get().unwrap());
    assert!(autosave.save_now().is_err());
    assert_eq!(items_in(&old), 1);
    assert_refusal_reported(&errors, &old);
    autosave.resume();
    autosave.save_now().unwrap();
    assert_eq!(items_in(&old), 6);
    add_item(&mut pool.get().unwrap());
    autosave.save_now().unwrap();
    assert_eq!(items_in(&old), 7);
    // Another Open: stopped again, reported again.
    pool.get().unwrap().restore_from_bytes(&bytes).unwrap();
    assert!(autosave.save_now().is_err());
    assert_eq!(items_in(&old), 7);
    assert_refusal_reported(&errors, &old);
    autosave.resume();
    autosave.stop().unwrap();
    assert_eq!(items_in(&old), 5);
}

/// `backup_to` into the pool's database and the stepped `Backup` handle are Opens too; a
/// stepped copy dropped before it is done is not.
#[test]
fn backup_to_and_the_stepped_handle_are_opens() {
    use diesel_sqlite_backup::{Backup, BackupOptions, StepResult};
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.db");
    let other = ledger_pool();
    add_item(&mut other.get().unwrap());
    let pool = ledger_pool();
    let autosave = Autosave::start(&pool, &old, fast().on_error(|_| {})).unwrap();
    let mut dest = pool.get().unwrap();
    other
        .get()
        .unwrap()
        .backup_to(&mut dest, BackupOptions::default())
        .unwrap();
    assert!(autosave.save_now().is_err());
    autosave.resume();
    autosave.save_now().unwrap();
    assert_eq!(items_in(&old), 1);
    let mut src = other.get().unwrap();
    add_item(&mut src);
    add_item(&mut src);
    drop(Backup::new(&mut src, &mut dest).unwrap()); // cancelled: nothing opened
    add_item(&mut dest);
    autosave.save_now().unwrap();
    assert_eq!(items_in(&old), 2);
    let mut backup = Backup::new(&mut src, &mut dest).unwrap();
    while backup.step(1).unwrap() != StepResult::Done {}
    backup.finish().unwrap();
    assert!(autosave.save_now().is_err());
    assert_eq!(items_in(&old), 2);
    autosave.resume();
    autosave.stop().unwrap();
    assert_eq!(items_in(&old), 3);
}

/// Items in the pool's database.
fn items_in_pool(pool: &super::common::Pool) -> i64 {
    let sql = "SELECT count(*) AS n FROM item";
    super::common::scalar(&mut pool.get().unwrap(), sql)
}

/// An Open right after a commit first has the autosave save that commit to the old file
/// (the Open used to wait only for a save under way, so a commit still in its quiet period
/// was in neither the old file nor memory afterwards).
#[test]
fn an_open_first_saves_the_commits_before_it_to_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let (old, opened) = (dir.path().join("old.db"), dir.path().join("opened.db"));
    document(&opened, 5);
    let bytes = ledger_pool().get().unwrap().snapshot().unwrap();
    let pool = ledger_pool();
    let quiet = AutosaveOptions::default().on_error(|_| {}); // the default quiet period
    let autosave = Autosave::start(&pool, &old, quiet).unwrap();
    add_item(&mut pool.get().unwrap());
    pool.get().unwrap().restore_from(&opened).unwrap();
    assert_eq!(items_in(&old), 1, "the commit before the Open was lost");
    assert_eq!(items_in_pool(&pool), 5);
    // The same for bytes, once the app has said the old file is to follow.
    autosave.resume();
    add_item(&mut pool.get().unwrap());
    pool.get().unwrap().restore_from_bytes(&bytes).unwrap();
    assert_eq!(
        items_in(&old),
        6,
        "the commit before the second Open was lost"
    );
    assert_eq!(items_in_pool(&pool), 0);
    let err = autosave.stop().unwrap_err();
    assert!(matches!(err, BackupError::DocumentOpened { .. }), "{err}");
    assert_eq!(items_in(&old), 6);
}

/// When the commits before an Open cannot reach the old file (another process holds it
/// locked), the Open fails with `Busy` naming that file within its own budget, and the pool
/// keeps the old document with the commit, which the autosave saves once the file is free.
#[test]
fn an_open_whose_commits_cannot_be_saved_fails_and_keeps_them() {
    use diesel_sqlite_backup::BackupOptions;
    let dir = tempfile::tempdir().unwrap();
    let (old, opened) = (dir.path().join("old.db"), dir.path().join("opened.db"));
    document(&opened, 5);
    let pool = ledger_pool();
    let autosave =
        Autosave::start(&pool, &old, AutosaveOptions::default().on_error(|_| {})).unwrap();
    let holder = super::common::LockHolder::lock(&old);
    add_item(&mut pool.get().unwrap());
    let short = BackupOptions::default().timeout(300 * MS);
    let err = pool
        .get()
        .unwrap()
        .restore_from_with(&opened, short)
        .unwrap_err();
    assert!(err.is_busy(), "{err}");
    assert_eq!(err.path(), Some(old.as_path()), "{err}");
    assert_eq!(items_in_pool(&pool), 1, "the old document was not kept");
    drop(holder);
    autosave.save_now().unwrap();
    assert_eq!(items_in(&old), 1);
    pool.get().unwrap().restore_from(&opened).unwrap();
    assert_eq!(items_in_pool(&pool), 5);
    autosave.resume();
    autosave.stop().unwrap();
    assert_eq!(items_in(&old), 5);
}

/// A hard link is another name for the same file, so another lock file: `start` on it is
/// refused while an autosave in this process serves the file.
#[test]
fn a_hard_link_to_a_served_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (real, hard) = (dir.path().join("real.db"), dir.path().join("hard.db"));
    let first = Autosave::start(&ledger_pool(), &real, fast()).unwrap();
    std::fs::hard_link(&real, &hard).unwrap();
    let other = ledger_pool();
    add_item(&mut other.get().unwrap());
    let err = Autosave::start(&other, &hard, fast()).unwrap_err();
    assert!(
        matches!(err, BackupError::AlreadyAutosaving { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("hard.db"), "names the path: {err}");
    assert_eq!(items_in(&real), 0, "the refused start wrote");
    // Retargeting onto a hard link of its own file goes on saving there.
    first.retarget(&hard).unwrap();
    first.stop().unwrap();
    let again = Autosave::start(&other, &hard, fast()).unwrap();
    assert_eq!(items_in(&real), 1);
    again.stop().unwrap();
}

/// A name too long for `<name>-autosave.lock` (past NAME_MAX, 255 bytes) still gets a lock:
/// a shorter name for the lock file, the same for every autosave of that file.
#[test]
fn a_long_file_name_gets_a_shorter_lock_name() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{}.db", "n".repeat(242)); // 245 bytes: SQLite's -journal still fits
    let file = dir.path().join(&name);
    let pool = ledger_pool();
    let autosave = Autosave::start(&pool, &file, fast()).unwrap();
    let err = Autosave::start(&ledger_pool(), &file, fast()).unwrap_err();
    assert!(
        matches!(err, BackupError::AlreadyAutosaving { .. }),
        "{err}"
    );
    add_item(&mut pool.get().unwrap());
    autosave.save_now().unwrap();
    assert_eq!(items_in(&file), 1);
    autosave.stop().unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, [name], "litter left");
}

/// An Open through another connection that ATTACHes the pool's database by its URI is an
/// Open too: the commits before it reach the old file first, and the opened document is not
/// saved over it (found by the adversarial review: the autosave used to write it there).
#[test]
fn an_open_into_the_database_attached_elsewhere_is_an_open() {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, SqliteConnection};
    use diesel_sqlite_backup::{Backup, BackupOptions, SingletonManager, StepResult};
    for route in ["restore_from", "restore_from_bytes", "stepped"] {
        let dir = tempfile::tempdir().unwrap();
        let (old, opened) = (dir.path().join("old.db"), dir.path().join("opened.db"));
        document(&opened, 5);
        let manager = SingletonManager::new();
        let uri = manager.uri().to_owned();
        let pool = ledger(r2d2::Pool::builder().max_size(2).build(manager).unwrap());
        let quiet = AutosaveOptions::default().on_error(|_| {}); // the default quiet period
        let autosave = Autosave::start(&pool, &old, quiet).unwrap();
        add_item(&mut pool.get().unwrap());
        let mut side = SqliteConnection::establish(":memory:").unwrap();
        side.batch_execute(&format!("ATTACH '{uri}' AS p")).unwrap();
        let into_p = || BackupOptions::default().schema("p");
        let mut src = SqliteConnection::establish(opened.to_str().unwrap()).unwrap();
        match route {
            "restore_from" => side.restore_from_with(&opened, into_p()).unwrap(),
            "restore_from_bytes" => {
                let bytes = src.snapshot().unwrap();
                side.restore_from_bytes_with(&bytes, into_p()).unwrap()
            }
            _ => {
                let mut backup = Backup::with_schemas(&mut src, "main", &mut side, "p").unwrap();
                while backup.step(-1).unwrap() != StepResult::Done {
                    std::thread::sleep(MS);
                }
                backup.finish().unwrap();
            }
        }
        assert_eq!(
            items_in(&old),
            1,
            "{route}: the commit before the Open was lost"
        );
        assert_eq!(items_in_pool(&pool), 5, "{route}");
        let err = autosave.save_now().unwrap_err();
        assert!(
            matches!(err, BackupError::DocumentOpened { .. }),
            "{route}: {err}"
        );
        assert_eq!(
            items_in(&old),
            1,
            "{route}: the Open was saved over the old file"
        );
    }
}
