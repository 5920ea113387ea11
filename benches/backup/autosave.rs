//! What autosave costs the app: a loop of small write transactions on the pool for a fixed
//! time, with and without an autosave of the database running, interleaved round by round.

use std::path::Path;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel_sqlite_backup::{memory_pool, Autosave, AutosaveOptions};

use crate::report::Goal;

/// Rows of about 100 bytes: an 8 MiB document.
const ROWS: u32 = 60_000;
const SAMPLE: Duration = Duration::from_secs(3);

/// Transactions per second of one-row updates on the pool's only connection.
fn updates_per_second(pool: &r2d2::Pool<diesel_sqlite_backup::SingletonManager>) -> f64 {
    let mut conn = pool.get().unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < SAMPLE {
        for _ in 0..100 {
            conn.batch_execute(
                "UPDATE item SET body = randomblob(100) WHERE id = abs(random()) % 60000 + 1",
            )
            .unwrap();
        }
        n += 100;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(dir: &Path, rounds: usize) -> Vec<Goal> {
    let pool = memory_pool().unwrap();
    pool.get()
        .unwrap()
        .batch_execute(&format!(
            "CREATE TABLE item(id INTEGER PRIMARY KEY, body BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
             INSERT INTO item SELECT i, randomblob(100) FROM n;"
        ))
        .unwrap();
    let file = dir.join("autosaved.db");
    let (mut off, mut on, mut saves) = (Vec::new(), Vec::new(), 0);
    for round in 0..rounds.max(3) {
        let mut measure_on = || {
            let options = AutosaveOptions::default();
            let autosave = Autosave::start(&pool, &file, options).unwrap();
            let rate = updates_per_second(&pool);
            saves += autosave.saves() - 1;
            autosave.stop().unwrap();
            rate
        };
        // Alternate which goes first, so drift in the machine hits both alike.
        if round % 2 == 0 {
            off.push(updates_per_second(&pool));
            on.push(measure_on());
        } else {
            on.push(measure_on());
            off.push(updates_per_second(&pool));
        }
    }
    let samples = on.len();
    // Each round's pair ran back to back, so its ratio cancels the machine's slow drift.
    let paired_loss = median(
        on.iter()
            .zip(&off)
            .map(|(a, b)| (1.0 - a / b) * 100.0)
            .collect(),
    );
    let (off, on) = (median(off), median(on));
    let loss = (1.0 - on / off) * 100.0;
    println!("\n### Autosave: small write transactions on the pool (8 MiB database)\n");
    println!("| | transactions/s (median of {samples} x {SAMPLE:?}) |");
    println!("| --- | ---: |");
    println!("| without autosave | {off:.0} |");
    println!("| with autosave (defaults: every 1 s, quiet 200 ms) | {on:.0} |");
    println!("\nthroughput lost: {loss:.2}% ({saves} background saves during the timed loops)");
    println!("median of the rounds' own losses (each pair back to back): {paired_loss:.2}%");
    vec![Goal {
        what: "throughput lost to autosave".into(),
        value: loss,
        limit: 2.0,
        unit: "%",
    }]
}
