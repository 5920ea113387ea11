//! Pool churn: connections recycled, discarded after panics, failing validation, or returned
//! inside a transaction. No committed row is lost and no checkout is inside someone else's
//! transaction.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::scalar;
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_sqlite_backup::SingletonManager;
use r2d2::ManageConnection;

/// A SingletonManager whose validation fails every third time, forcing r2d2 to throw
/// connections away and open new ones.
struct Flaky {
    inner: SingletonManager,
    checks: AtomicUsize,
}

impl ManageConnection for Flaky {
    type Connection = SqliteConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<SqliteConnection, Self::Error> {
        self.inner.connect()
    }

    fn is_valid(&self, conn: &mut SqliteConnection) -> Result<(), Self::Error> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % 3 == 2 {
            return Err(diesel::r2d2::Error::QueryError(
                diesel::result::Error::NotFound,
            ));
        }
        self.inner.is_valid(conn)
    }

    fn has_broken(&self, conn: &mut SqliteConnection) -> bool {
        self.inner.has_broken(conn)
    }
}

/// Four threads, many cycles each: committed inserts, panics inside transactions, raw
/// transactions left open on return, forced validation failures, short lifetimes. Every
/// committed row survives; nothing uncommitted does; every checkout starts outside any
/// transaction.
#[test]
fn churn_loses_no_committed_row() {
    let pool = r2d2::Pool::builder()
        .max_size(4)
        .min_idle(Some(0))
        .max_lifetime(Some(Duration::from_millis(20)))
        .idle_timeout(Some(Duration::from_millis(10)))
        .connection_timeout(Duration::from_secs(30))
        .build(Flaky {
            inner: SingletonManager::new(),
            checks: AtomicUsize::new(0),
        })
        .unwrap();
    pool.get()
        .unwrap()
        .batch_execute("CREATE TABLE rows(thread INTEGER, i INTEGER, committed INTEGER)")
        .unwrap();
    let cycles = if std::env::var_os("DSB_LONG").is_some() {
        5_000
    } else {
        150
    };
    let committed = AtomicUsize::new(0);
    let discarded_by_panic = AtomicUsize::new(0);

    std::thread::scope(|s| {
        for t in 0..4 {
            let (pool, committed, panics) = (&pool, &committed, &discarded_by_panic);
            s.spawn(move || {
                for i in 0..cycles {
                    let mut c = pool.get().unwrap();
                    // Not inside anyone else's transaction: BEGIN would fail if it were.
                    c.batch_execute("BEGIN; COMMIT;")
                        .expect("checkout inside a transaction");
                    match i % 6 {
                        0 => {
                            // A panic inside a transaction: the row must not survive.
                            let r = catch_unwind(AssertUnwindSafe(|| {
                                c.transaction::<(), diesel::result::Error, _>(|c| {
                                    c.batch_execute(&format!(
                                        "INSERT INTO rows VALUES ({t}, {i}, 0)"
                                    ))?;
                                    panic!("boom");
                                })
                            }));
                            assert!(r.is_err());
                            panics.fetch_add(1, Ordering::Relaxed);
                            drop(c);
                        }
                        1 => {
                            // A raw transaction left open when the connection goes back.
                            c.batch_execute(&format!(
                                "BEGIN; INSERT INTO rows VALUES ({t}, {i}, 0);"
                            ))
                            .unwrap();
                        }
                        _ => {
                            c.transaction::<_, diesel::result::Error, _>(|c| {
                                c.batch_execute(&format!("INSERT INTO rows VALUES ({t}, {i}, 1)"))
                            })
                            .unwrap();
                            committed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if i % 10 == 0 {
                        std::thread::sleep(Duration::from_millis(15)); // let lifetimes expire
                    }
                }
            });
        }
    });
    let mut c = pool.get().unwrap();
    let rows = scalar(&mut c, "SELECT count(*) AS n FROM rows WHERE committed = 1");
    assert_eq!(
        rows as usize,
        committed.load(Ordering::Relaxed),
        "committed rows were lost"
    );
    assert_eq!(
        scalar(&mut c, "SELECT count(*) AS n FROM rows WHERE committed = 0"),
        0
    );
    assert!(discarded_by_panic.load(Ordering::Relaxed) > 0);
}
