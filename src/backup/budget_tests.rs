//! The busy handler a connection had before a budgeted call comes back after it.

use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

use super::{Budget, BudgetedBusyHandler};
use crate::error::Operation;
use crate::raw::{self, memdb, DbRef};

/// A connection whose `busy_timeout` was 0 has the crate's open-time handler, which waits
/// only inside a budgeted call (`with_lock_waits`). After a budgeted handler was installed
/// and dropped, that handler must be back: it is asked inside such a call, and outside one
/// the connection gives up at once.
#[test]
fn the_open_time_handler_comes_back_after_a_budgeted_call() {
    raw::init();
    let uri = memdb::unique_uri("busy-restore");
    let writer = memdb::open_keeper(&uri, None).unwrap();
    let reader = memdb::open_keeper(&uri, None).unwrap();
    writer.db().exec("CREATE TABLE t(x)").unwrap();
    let conn = reader.db();
    conn.exec("PRAGMA busy_timeout=0").unwrap();
    let budget = Budget::new(Operation::Restore, Duration::from_secs(5), None);
    drop(BudgetedBusyHandler::install(&conn, &budget, Path::new("x")));

    // memdb refuses new readers while a writer holds its write lock.
    writer
        .db()
        .exec("BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
        .unwrap();
    let asked = Cell::new(0);
    let waits = |_attempt: u32, _busy: &DbRef<'_>| {
        asked.set(asked.get() + 1);
        false
    };
    let inside = raw::with_lock_waits(&waits, || conn.query_i64("SELECT count(*) FROM t"));
    assert!(inside.is_err(), "the writer holds the lock");
    assert_eq!(asked.get(), 1, "the open-time handler was not asked");
    let outside = conn.query_i64("SELECT count(*) FROM t");
    assert!(outside.is_err());
    assert_eq!(asked.get(), 1, "asked outside a budgeted call");
    writer.db().exec("COMMIT").unwrap();
    assert_eq!(conn.query_i64("SELECT count(*) FROM t"), Ok(1));
}
