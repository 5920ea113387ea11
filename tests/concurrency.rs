//! Saves under concurrent writers are consistent snapshots, and complete.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::scalar;
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_sqlite_backup::{BackupExt, BackupOptions, SingletonManager};

const ACCOUNTS: i64 = 50;
const TOTAL: i64 = ACCOUNTS * 1_000;

/// Writer threads move money between accounts in transactions, so the sum of all balances
/// never changes, while other threads save again and again with small steps and pauses.
/// Every saved file passes integrity_check and shows the same total (a consistent
/// snapshot), and every save completes (the engine's one-step fallback under restarts).
#[test]
fn saves_are_consistent_snapshots_under_transfers() {
    let pool = r2d2::Pool::builder()
        .max_size(6)
        .build(SingletonManager::new())
        .unwrap();
    pool.get()
        .unwrap()
        .batch_execute(&format!(
            "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, pad BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ACCOUNTS})
             INSERT INTO accounts SELECT i, 1000, randomblob(3000) FROM n;"
        ))
        .unwrap();
    let long = std::env::var_os("DSB_LONG").is_some();
    let saves_per_thread = if long { 200 } else { 8 };
    let stop = AtomicBool::new(false);
    let transfers = AtomicUsize::new(0);
    let dir = tempfile::tempdir().unwrap();
    let deadline = Duration::from_secs(20);

    std::thread::scope(|s| {
        for w in 0..3i64 {
            let pool = pool.clone();
            let (stop, transfers) = (&stop, &transfers);
            s.spawn(move || {
                let mut c = pool.get().unwrap();
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    i += 7;
                    let (from, to, amount) = (i % ACCOUNTS + 1, (i * 13) % ACCOUNTS + 1, i % 50);
                    let moved = c.transaction::<_, diesel::result::Error, _>(|c| {
                        c.batch_execute(&format!(
                            "UPDATE accounts SET balance = balance - {amount} WHERE id = {from};
                             UPDATE accounts SET balance = balance + {amount} WHERE id = {to};"
                        ))
                    });
                    if moved.is_ok() {
                        transfers.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        let savers: Vec<_> = (0..2)
            .map(|t| {
                let pool = pool.clone();
                let dir = dir.path().to_path_buf();
                s.spawn(move || {
                    let mut c = pool.get().unwrap();
                    for n in 0..saves_per_thread {
                        let file = dir.join(format!("snap-{t}-{n}.db"));
                        c.save_as_with(
                            &file,
                            BackupOptions::default()
                                .pages_per_step(4)
                                .pause(Duration::from_micros(100))
                                .timeout(deadline),
                        )
                        .unwrap();
                        assert_eq!(common::integrity(&file), "ok");
                        let mut saved =
                            SqliteConnection::establish(file.to_str().unwrap()).unwrap();
                        let total = scalar(&mut saved, "SELECT sum(balance) AS n FROM accounts");
                        assert_eq!(
                            total,
                            TOTAL,
                            "{} is not a consistent snapshot",
                            file.display()
                        );
                    }
                })
            })
            .collect();
        for saver in savers {
            saver.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(
        transfers.load(Ordering::Relaxed) > 0,
        "the writers never ran"
    );
    let mut c = pool.get().unwrap();
    assert_eq!(
        scalar(&mut c, "SELECT sum(balance) AS n FROM accounts"),
        TOTAL
    );
}
