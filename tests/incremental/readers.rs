//! Readers in another thread and in another process check the ledger invariant in every
//! read transaction while 40 incremental saves run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_sqlite_backup::BackupExt;

use crate::support::*;

/// Python: read both sums in one transaction until told to stop; "ready" after the first
/// read, "done N torn K" at the end.
const PY_READER: &str = r#"
con = sqlite3.connect(sys.argv[1], timeout=120, isolation_level=None)
total, n, torn = int(sys.argv[2]), 0, 0
while True:
    con.execute('BEGIN')
    a = con.execute('SELECT sum(bal) FROM a').fetchone()[0]
    b = con.execute('SELECT sum(bal) FROM b').fetchone()[0]
    con.execute('COMMIT')
    if a + b != total:
        torn += 1
    n += 1
    if n == 1:
        say('ready')
    if stopped():
        break
say('done %d torn %d' % (n, torn))
"#;

#[derive(QueryableByName)]
struct Sum {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    s: i64,
}

fn sum(c: &mut SqliteConnection, table: &str) -> i64 {
    diesel::sql_query(format!("SELECT sum(bal) AS s FROM {table}"))
        .get_result::<Sum>(c)
        .unwrap()
        .s
}

#[test]
fn readers_in_a_thread_and_a_process_never_see_a_torn_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    let rows = 5_000;
    let pool = ledger(rows);
    pool.get().unwrap().save_as(&path).unwrap();
    let ino = inode(&path);

    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = {
        let (stop, path) = (stop.clone(), path.clone());
        std::thread::spawn(move || {
            let mut c = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
            c.batch_execute("PRAGMA busy_timeout=120000").unwrap();
            let (mut reads, mut torn) = (0u64, Vec::new());
            loop {
                c.batch_execute("BEGIN").unwrap();
                let (a, b) = (sum(&mut c, "a"), sum(&mut c, "b"));
                c.batch_execute("COMMIT").unwrap();
                if a + b != TOTAL {
                    torn.push((a, b));
                }
                reads += 1;
                if reads == 1 {
                    ready_tx.send(()).unwrap();
                }
                if stop.load(Ordering::SeqCst) {
                    return (reads, torn);
                }
            }
        })
    };
    let stop_file = dir.path().join("stop");
    let mut python = crate::py::Live::spawn(
        PY_READER,
        &[path.to_str().unwrap(), &TOTAL.to_string()],
        &stop_file,
    );
    python.wait_for("ready");
    ready_rx.recv().unwrap();

    for round in 0..40 {
        transfer(&mut pool.get().unwrap(), rows, 1.0, round);
        pool.get()
            .unwrap()
            .save_as_with(&path, incremental())
            .unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let (reads, torn) = thread.join().unwrap();
    let done = python.stop();
    eprintln!("thread: {reads} read transactions; python: {done}");
    assert!(torn.is_empty(), "the thread saw torn states: {torn:?}");
    assert!(
        done.starts_with("done") && done.ends_with(" torn 0"),
        "python saw a torn state: {done}"
    );
    assert_eq!(inode(&path), ino, "every save was in place");
    assert_file_equals_memory(&pool, &path, "after 40 saves under readers");
}
