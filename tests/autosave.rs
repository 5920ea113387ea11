//! Autosave: commits reach the file, bursts become one save, idle databases are left alone,
//! `save_now`/`stop`/drop keep their promises, errors are reported and recovered from, and
//! every file it leaves is a complete commit (readers in a loop, SIGKILLs).
//!
//! Waits here are bounded generously (tens of seconds) and only ever end early: no test
//! depends on how fast this machine is.

mod common;
#[path = "autosave/durability.rs"]
mod durability;
#[path = "autosave/exclusive.rs"]
mod exclusive;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_sqlite_backup::{memory_pool, Autosave, AutosaveOptions, BackupError};

const MS: Duration = Duration::from_millis(1);
const PATIENCE: Duration = Duration::from_secs(60);

/// A `memory_pool()` holding the ledger.
fn ledger_pool() -> common::Pool {
    ledger(memory_pool().unwrap())
}

/// Gives `pool`'s database the ledger, whose invariant every committed state keeps:
/// `total.n` is the number of rows of `item`.
fn ledger(pool: common::Pool) -> common::Pool {
    pool.get()
        .unwrap()
        .batch_execute(
            "CREATE TABLE item(id INTEGER PRIMARY KEY, body TEXT);
             CREATE TABLE total(n INTEGER); INSERT INTO total VALUES (0);",
        )
        .unwrap();
    pool
}

/// One commit that keeps the invariant.
fn add_item(conn: &mut SqliteConnection) {
    conn.batch_execute(
        "BEGIN IMMEDIATE;
         INSERT INTO item(body) VALUES (hex(randomblob(50)));
         UPDATE total SET n = n + 1;
         COMMIT;",
    )
    .unwrap();
}

/// (items, total) in a saved file, after checking it is a sound database.
fn ledger_in(path: &Path) -> (i64, i64) {
    let mut c = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    // An incremental save holds the file's exclusive lock while it writes in place.
    c.batch_execute("PRAGMA busy_timeout = 60000").unwrap();
    assert_eq!(common::integrity_of(&mut c), "ok");
    // One statement, one read transaction: an in-place save may land between two.
    let items = common::scalar(
        &mut c,
        "SELECT (SELECT count(*) FROM item) * 4294967296 + (SELECT n FROM total) AS n",
    );
    (items >> 32, items & 0xffff_ffff)
}

fn items_in(path: &Path) -> i64 {
    let (items, total) = ledger_in(path);
    assert_eq!(items, total, "the file is not one complete commit");
    items
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(5 * MS);
    }
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn autosave_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Autosave>();
}

/// With `quiet` far longer than `every`, only the `every` cap can get the commit saved
/// before the patience runs out: it is saved without `save_now`.
#[test]
fn a_commit_reaches_the_file_within_every() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.db");
    let pool = ledger_pool();
    let options = AutosaveOptions::default()
        .every(200 * MS)
        .quiet(Duration::from_secs(3600));
    let autosave = Autosave::start(&pool, &file, options).unwrap();
    assert_eq!(items_in(&file), 0);
    add_item(&mut pool.get().unwrap());
    wait_for("the commit in the file", || items_in(&file) == 1);
    // The count goes up once the save has returned, just after the file is in place.
    wait_for("the save counted", || autosave.saves() == 2);
    autosave.stop().unwrap();
}

#[test]
fn a_burst_of_commits_is_saved_once_or_twice() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("burst.db");
    let pool = ledger_pool();
    let options = AutosaveOptions::default()
        .every(Duration::from_secs(3600))
        .quiet(400 * MS);
    let autosave = Autosave::start(&pool, &file, options).unwrap();
    {
        let mut conn = pool.get().unwrap();
        for _ in 0..100 {
            add_item(&mut conn);
        }
    }
    wait_for("the burst in the file", || items_in(&file) == 100);
    std::thread::sleep(800 * MS); // twice `quiet`: a late extra save would show
    let saves = autosave.saves() - 1;
    assert!((1..=2).contains(&saves), "100 commits took {saves} saves");
    autosave.stop().unwrap();
}

/// Reads are not changes: no save, no new inode, the file's bytes untouched.
#[test]
fn an_idle_database_is_never_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("idle.db");
    let pool = ledger_pool();
    add_item(&mut pool.get().unwrap());
    let options = AutosaveOptions::default()
        .every(20 * MS)
        .quiet(Duration::ZERO);
    let autosave = Autosave::start(&pool, &file, options).unwrap();
    let (ino, bytes) = (inode(&file), std::fs::read(&file).unwrap());
    let until = Instant::now() + Duration::from_secs(2);
    let mut conn = pool.get().unwrap();
    while Instant::now() < until {
        assert_eq!(
            common::scalar(&mut conn, "SELECT count(*) AS n FROM item"),
            1
        );
        std::thread::sleep(MS);
    }
    assert_eq!(autosave.saves(), 1);
    assert_eq!(inode(&file), ino);
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    autosave.save_now().unwrap(); // nothing new: no write either
    assert_eq!((autosave.saves(), inode(&file)), (1, ino));
    autosave.stop().unwrap();
    assert_eq!(inode(&file), ino);
}

#[test]
fn save_now_holds_every_earlier_commit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("now.db");
    let pool = ledger_pool();
    // The schedule alone would not save for an hour.
    let options = AutosaveOptions::default().every(Duration::from_secs(3600));
    let autosave = Autosave::start(&pool, &file, options).unwrap();
    let mut conn = pool.get().unwrap();
    for round in 1..=20 {
        for _ in 0..round % 3 + 1 {
            add_item(&mut conn);
        }
        let expected = common::scalar(&mut conn, "SELECT count(*) AS n FROM item");
        autosave.save_now().unwrap();
        assert_eq!(items_in(&file), expected, "round {round}");
    }
    autosave.stop().unwrap();
}

/// From another thread too: `Autosave` is shared by reference.
#[test]
fn save_now_from_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("threads.db");
    let pool = ledger_pool();
    let options = AutosaveOptions::default().every(Duration::from_secs(3600));
    let autosave = Autosave::start(&pool, &file, options).unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..10 {
                    let mut conn = pool.get().unwrap();
                    add_item(&mut conn);
                    let mine = common::scalar(&mut conn, "SELECT count(*) AS n FROM item");
                    drop(conn);
                    autosave.save_now().unwrap();
                    assert!(items_in(&file) >= mine);
                }
            });
        }
    });
    autosave.stop().unwrap();
    assert_eq!(items_in(&file), 40);
}

#[test]
fn stop_and_drop_save_what_is_pending_and_nothing_after() {
    let dir = tempfile::tempdir().unwrap();
    for by_drop in [false, true] {
        let file = dir.path().join(format!("stop-{by_drop}.db"));
        let pool = ledger_pool();
        let options = AutosaveOptions::default().every(Duration::from_secs(3600));
        let autosave = Autosave::start(&pool, &file, options).unwrap();
        add_item(&mut pool.get().unwrap());
        if by_drop {
            drop(autosave);
        } else {
            autosave.stop().unwrap();
        }
        assert_eq!(items_in(&file), 1, "by drop: {by_drop}");
        let ino = inode(&file);
        add_item(&mut pool.get().unwrap());
        std::thread::sleep(300 * MS);
        assert_eq!((items_in(&file), inode(&file)), (1, ino));
    }
}

/// The app keeps the pool's only connection all along; autosave never needs it.
#[test]
fn commits_are_saved_while_the_app_holds_the_only_connection() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("held.db");
    let pool = ledger_pool();
    let autosave = Autosave::start(
        &pool,
        &file,
        AutosaveOptions::default()
            .every(50 * MS)
            .quiet(Duration::ZERO),
    )
    .unwrap();
    let mut only = pool.get().unwrap();
    for n in 1..=5 {
        add_item(&mut only);
        wait_for("the commit in the file", || items_in(&file) == n);
    }
    add_item(&mut only);
    autosave.save_now().unwrap();
    assert_eq!(items_in(&file), 6);
    autosave.stop().unwrap();
    drop(only);
}

#[test]
fn a_vanished_folder_is_reported_and_autosave_recovers_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("docs");
    std::fs::create_dir(&folder).unwrap();
    let file = folder.join("doc.db");
    let pool = ledger_pool();
    let (tx, errors) = mpsc::channel();
    let options = AutosaveOptions::default()
        .every(50 * MS)
        .quiet(Duration::ZERO)
        .on_error(move |e: &BackupError| {
            let _ = tx.send(e.to_string());
        });
    let autosave = Autosave::start(&pool, &file, options).unwrap();
    std::fs::remove_dir_all(&folder).unwrap();
    add_item(&mut pool.get().unwrap());
    let first = errors.recv_timeout(PATIENCE).expect("an error reported");
    assert!(first.contains("docs"), "the error names the path: {first}");
    assert!(autosave.save_now().is_err());
    assert_eq!(autosave.saves(), 1);

    std::fs::create_dir(&folder).unwrap();
    wait_for("the retried save", || file.exists());
    assert_eq!(items_in(&file), 1);
    wait_for("the save counted", || autosave.saves() == 2);
    autosave.stop().unwrap();
}

/// Callbacks run on the autosave's thread: `save_now` there is refused instead of waiting for
/// itself, and dropping the autosave there still saves what is pending.
#[test]
fn callbacks_cannot_deadlock_the_autosave() {
    use std::sync::Mutex;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("gone");
    std::fs::create_dir(&folder).unwrap();
    let file = folder.join("cb.db");
    let pool = ledger_pool();
    let slot: Arc<Mutex<Option<Autosave>>> = Arc::new(Mutex::new(None));
    let (tx, said) = mpsc::channel();
    let options = AutosaveOptions::default()
        .every(20 * MS)
        .quiet(Duration::ZERO)
        .on_error({
            let slot = Arc::clone(&slot);
            move |_| {
                let mut slot = slot.lock().unwrap();
                let again = slot.as_ref().map(|a| a.save_now());
                let _ = tx.send(again.map(|r| r.map_err(|e| e.to_string())));
                drop(slot.take()); // dropped on its own thread
            }
        });
    *slot.lock().unwrap() = Some(Autosave::start(&pool, &file, options).unwrap());
    std::fs::remove_dir_all(&folder).unwrap();
    add_item(&mut pool.get().unwrap());
    let again = said.recv_timeout(PATIENCE).expect("on_error ran");
    let err = again.expect("the autosave was there").unwrap_err();
    assert!(err.contains("own thread"), "{err}");
    assert!(slot.lock().unwrap().is_none());
}

/// `Duration::MAX` means "never" without overflowing the clock.
#[test]
fn durations_meaning_never_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("never.db");
    let pool = ledger_pool();
    let options = AutosaveOptions::default()
        .every(Duration::MAX)
        .quiet(Duration::MAX);
    let autosave = Autosave::start(&pool, &file, options).unwrap();
    add_item(&mut pool.get().unwrap());
    std::thread::sleep(100 * MS); // the thread has looked and seen the change
    autosave.save_now().unwrap();
    assert_eq!(items_in(&file), 1);
    add_item(&mut pool.get().unwrap());
    std::thread::sleep(100 * MS);
    autosave.stop().unwrap();
    assert_eq!(items_in(&file), 2);
}
