//! The busy handler a connection had before a budgeted call comes back after it.

use std::path::Path;
use std::time::Duration;

use super::{Budget, BudgetedBusyHandler};
use crate::error::Operation;
use crate::sqlite::memdb;

/// A connection whose `busy_timeout` was 0 gives up at once again after a budgeted call: the
/// budget's handler is gone (a lock conflict afterwards draws nothing from the budget, which
/// is still alive), and a connection with a timeout gets that timeout back.
#[test]
fn the_previous_busy_timeout_comes_back_after_a_budgeted_call() {
    let uri = memdb::unique_uri("busy-restore");
    let writer = memdb::open_keeper(&uri, None).unwrap();
    let reader = memdb::open_keeper(&uri, None).unwrap();
    writer.db().exec("CREATE TABLE t(x)").unwrap();
    let conn = reader.db();
    // Long enough that a handler left installed would be seen waiting; never reached.
    let budget = Budget::new(Operation::Restore, Duration::from_secs(2), None);

    conn.exec("PRAGMA busy_timeout=250").unwrap();
    drop(BudgetedBusyHandler::install(&conn, &budget, Path::new("x")));
    assert_eq!(conn.query_i64("PRAGMA busy_timeout"), Ok(250));

    conn.exec("PRAGMA busy_timeout=0").unwrap();
    drop(BudgetedBusyHandler::install(&conn, &budget, Path::new("x")));
    assert_eq!(conn.query_i64("PRAGMA busy_timeout"), Ok(0));
    // memdb refuses new readers while a writer holds its write lock.
    writer
        .db()
        .exec("BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
        .unwrap();
    assert!(conn.query_i64("SELECT count(*) FROM t").is_err());
    assert_eq!(
        budget.waited.get(),
        Duration::ZERO,
        "the budget's handler is still there"
    );
    writer.db().exec("COMMIT").unwrap();
    assert_eq!(conn.query_i64("SELECT count(*) FROM t"), Ok(1));
}
