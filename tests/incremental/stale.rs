//! Connections opened on the file before a full save keep working: in incremental mode a
//! full save over an existing database goes in place, so no connection is left holding a
//! replaced inode that would take a later save's journal for its own hot journal (replaying
//! it into the old file and deleting it, which a kill then turns into a torn file).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_sqlite_backup::BackupExt;

use crate::support::*;

const CHILD: &str = "DSB_INCREMENTAL_STALE";
const ROWS: usize = 5_000;
/// The full save's step, small so that kills land inside it too.
const FULL_STEP: i32 = 40;

/// Python: one connection for the whole test, a read transaction checking the ledger in a
/// tight loop. At the end: "done N bad K FIRST", K counting broken invariants and errors.
const PY_VIEWER: &str = r#"
con = sqlite3.connect(sys.argv[1], timeout=120, isolation_level=None)
total, n, bad = int(sys.argv[2]), 0, []
while not stopped():
    try:
        con.execute('BEGIN')
        a = con.execute('SELECT sum(bal) FROM a').fetchone()[0]
        b = con.execute('SELECT sum(bal) FROM b').fetchone()[0]
        con.execute('COMMIT')
        if a + b != total:
            bad.append('torn %d %d' % (a, b))
    except sqlite3.DatabaseError as e:
        bad.append('error %s' % e)
        try:
            con.execute('ROLLBACK')
        except sqlite3.DatabaseError:
            pass
    n += 1
    if n == 1:
        say('ready')
say('done %d bad %d %s' % (n, len(bad), bad[:1]))
"#;

/// The child: a new ledger saved over the file (a full save, in small steps), then 1% changes
/// saved incrementally, until it SIGKILLs itself at its `kill_at`-th progress report.
#[test]
fn stale_child() {
    let Ok(args) = std::env::var(CHILD) else {
        return; // runs only as the child of connections_opened_before_a_full_save_stay_valid
    };
    let (path, kill_at) = args.split_once('\n').unwrap();
    let kill_at: u64 = kill_at.parse().unwrap();
    let pool = ledger(ROWS);
    let reports = std::cell::Cell::new(0u64);
    let count = |_| {
        reports.set(reports.get() + 1);
        if reports.get() == kill_at {
            // SAFETY: kill(2) on our own pid; no memory is involved.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    };
    let mut c = pool.get().unwrap();
    c.save_as_with(
        path,
        incremental().pages_per_step(FULL_STEP).on_progress(count),
    )
    .unwrap();
    for round in 0.. {
        transfer(&mut c, ROWS, 1.0, round + kill_at);
        c.save_as_with(path, incremental().on_progress(count))
            .unwrap();
    }
}

/// A Python connection and a thread's connection are opened on the file and kept for the
/// whole test, reading in a loop. Processes that each start with a full save over the file
/// and then save incrementally are SIGKILLed at spread-out moments (12 times; 300 with
/// `DSB_LONG=1`). After every kill a fresh reader finds the file intact, and the long-lived
/// connections never see a broken invariant or an error.
#[test]
fn connections_opened_before_a_full_save_stay_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    ledger(ROWS).get().unwrap().save_as(&path).unwrap();
    let ino = inode(&path);

    let stop_file = dir.path().join("stop");
    let mut viewer = crate::py::Live::spawn(
        PY_VIEWER,
        &[path.to_str().unwrap(), &TOTAL.to_string()],
        &stop_file,
    );
    viewer.wait_for("ready");
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let mut c = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
            c.batch_execute("PRAGMA busy_timeout=120000").unwrap();
            let (mut reads, mut bad) = (0u64, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                match c.batch_execute("BEGIN").map(|()| {
                    let total = scalar(
                        &mut c,
                        "SELECT (SELECT sum(bal) FROM a) + (SELECT sum(bal) FROM b) AS n",
                    );
                    c.batch_execute("COMMIT").unwrap();
                    total
                }) {
                    Ok(total) if total == TOTAL => {}
                    other => bad.push(format!("{other:?}")),
                }
                reads += 1;
            }
            (reads, bad)
        })
    };

    let long = std::env::var_os("DSB_LONG").is_some();
    let kills = if long { 300 } else { 12 };
    // Report numbers to kill at: inside the full save (about 20 reports) and the first
    // incremental saves after it (about 20 each). 7 is coprime to 80.
    for i in 0..kills {
        let kill_at = 1 + (i * 7) % 80;
        run_child_until_killed(
            "stale::stale_child",
            (CHILD, format!("{}\n{kill_at}", path.display())),
            &format!("kill {i}"),
        );
        assert_recovered(&path, &format!("kill {i} (report {kill_at})"));
        assert_eq!(
            inode(&path),
            ino,
            "kill {i}: the file was replaced by rename"
        );
    }
    stop.store(true, Ordering::SeqCst);
    let (reads, bad) = thread.join().unwrap();
    let done = viewer.stop();
    eprintln!("thread: {reads} read transactions; python: {done}");
    assert!(bad.is_empty(), "the thread's connection saw: {bad:?}");
    assert!(
        done.starts_with("done") && done.contains(" bad 0 "),
        "the python connection saw: {done}"
    );
}

/// A destination that is not a database is replaced by rename, and a connection of this
/// process opened on it before keeps the old inode. While the saving process lives, that
/// connection must leave later in-place saves' journals alone: it reads during a save,
/// after the journal is durable, and the journal is still there (without the RESERVED lock
/// kept on the replaced file, it would take the journal for its own, replay it into the old
/// file and delete it).
#[test]
fn a_connection_on_a_replaced_file_leaves_the_journal_alone() {
    use diesel::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, garbage).unwrap();
    let mut stale = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    let pool = ledger(1_000);
    pool.get()
        .unwrap()
        .save_as_with(&path, incremental())
        .unwrap();
    let journal = {
        let mut name = path.as_os_str().to_owned();
        name.push("-journal");
        std::path::PathBuf::from(name)
    };
    for round in 0..3 {
        transfer(&mut pool.get().unwrap(), 1_000, 1.0, round);
        let reports = std::cell::Cell::new(0);
        let seen = std::cell::Cell::new(None);
        let options = incremental().on_progress(|_| {
            reports.set(reports.get() + 1);
            if reports.get() == 2 {
                // The journal is durable now and the pages not yet written.
                let _ = stale.batch_execute("SELECT count(*) FROM sqlite_schema");
                seen.set(Some(journal.exists()));
            }
        });
        pool.get().unwrap().save_as_with(&path, options).unwrap();
        assert_eq!(
            seen.get(),
            Some(true),
            "round {round}: the journal was taken"
        );
        assert_eq!(python_total(&path), TOTAL);
        assert_file_equals_memory(&pool, &path, "after a save beside a stale connection");
    }
}

/// Every route that renames over a database holds the replaced file's RESERVED lock. Here:
/// a connection opened on the file, then a plain `save_as` and a `Snapshot::save_as` rename
/// over it, then an in-place save. While that save's journal exists, the connection left on
/// a replaced file reads: it must not take the journal for a hot journal of its own (roll it
/// into the old file and delete it), which a crash of the save would turn into a torn file.
#[test]
fn connections_left_on_files_plain_renames_replaced_leave_journals_alone() {
    for route in ["snapshot", "save_as"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doc.db");
        let pool = ledger(200);
        let mut c = pool.get().unwrap();
        c.save_as(&path).unwrap();
        let mut stale = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        stale.batch_execute("SELECT count(*) FROM a").unwrap();
        transfer(&mut c, 200, 10.0, 1);
        match route {
            "save_as" => c.save_as(&path).unwrap(),
            _ => c.snapshot().unwrap().save_as(&path).unwrap(),
        }
        // A snapshot's rename leaves no record of the file: this save (whole, in place) does.
        c.save_as_with(&path, incremental()).unwrap();
        transfer(&mut c, 200, 10.0, 2);
        let journal = dir.path().join("doc.db-journal");
        let seen = std::cell::Cell::new(false);
        let read_during_save = |_| {
            if journal.exists() && !seen.get() {
                seen.set(true);
                stale.batch_execute("SELECT count(*) FROM a").unwrap();
                assert!(
                    journal.exists(),
                    "{route}: a connection on the replaced file took the journal"
                );
            }
        };
        c.save_as_with(
            &path,
            incremental()
                .pages_per_step(2)
                .on_progress(read_during_save),
        )
        .unwrap();
        assert!(seen.get(), "{route}: the save wrote no journal");
        drop(c);
        assert_file_equals_memory(&pool, &path, route);
    }
}
