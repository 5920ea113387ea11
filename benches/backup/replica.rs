//! What a `Replica` costs and how fast its history loads back, on a database of `--mib` MiB
//! (200 by default; `DSB_REPLICA_MIB` overrides it, for quick runs), 1 KiB rows, 4 KiB pages,
//! a `LocalFileSystem` store in the bench folder:
//! - bytes uploaded per sync for 1% of the pages changed, against those pages' bytes;
//! - restore `Latest` after 100 such syncs and `At(the time of sync 50)` against
//!   `restore_from` of the same database from a file (interleaved, medians);
//! - a writer loop of one-row updates with and without a `Replica` on its defaults, as in
//!   autosave.rs (rounds of three samples: without, with, without; the order rotates), on
//!   this database and on an 8 MiB one (the size autosave.rs measures).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use diesel::connection::SimpleConnection;
use diesel_sqlite_backup::{
    memory_pool, BackupExt, Replica, ReplicaOptions, RestoreTarget, SingletonManager,
};
use object_store::{local::LocalFileSystem, path::Path as StorePath, ObjectStore};

use crate::report::Goal;

type Pool = r2d2::Pool<SingletonManager>;

const SYNCS: u64 = 100;
const SAMPLE: Duration = Duration::from_secs(2);
const BATCH: u64 = 100;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Pages of `b` that differ from `a` (or are past its end), in bytes.
fn changed_bytes(a: &[u8], b: &[u8], page: usize) -> u64 {
    b.chunks(page)
        .enumerate()
        .filter(|(i, p)| a.get(i * page..(i + 1) * page) != Some(*p))
        .count() as u64
        * page as u64
}

/// A pool database of `rows` rows of 1000 random bytes: four fill a 4 KiB page.
fn item_pool(rows: u64) -> Pool {
    let pool = memory_pool().unwrap();
    pool.get()
        .unwrap()
        .batch_execute(&format!(
            "CREATE TABLE item(id INTEGER PRIMARY KEY, body BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
             INSERT INTO item SELECT i, randomblob(1000) FROM n;"
        ))
        .unwrap();
    pool
}

/// One-row updates at random for [`SAMPLE`]: transactions per second.
fn writer_rate(pool: &Pool, rows: u64) -> f64 {
    let mut conn = pool.get().unwrap();
    let update =
        format!("UPDATE item SET body = randomblob(1000) WHERE id = abs(random()) % {rows} + 1");
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < SAMPLE {
        for _ in 0..BATCH {
            conn.batch_execute(&update).unwrap();
        }
        n += BATCH;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

pub fn run(mib: u64, rounds: usize, dir: &Path) -> Vec<Goal> {
    let mib = std::env::var("DSB_REPLICA_MIB")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(mib);
    // Four rows of 1000 bytes fill a 4 KiB page: 1024 rows a MiB.
    let rows = mib * 1024;
    let pool = item_pool(rows);
    let folder = dir.join("replica-store");
    std::fs::create_dir_all(&folder).unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(&folder).unwrap());
    let prefix = StorePath::from("bench");
    let syncs = folder.join("bench").join("syncs");

    // 1. Uploads: sync_now after each change of 1% of the pages (the rows of every 100th
    // page).
    let options = ReplicaOptions::default().every(Duration::from_secs(3600));
    let replica = Replica::start(&pool, store.clone(), prefix.clone(), options).unwrap();
    let mut before = pool.get().unwrap().snapshot().unwrap().into_vec();
    let (mut uploaded, mut changed) = (0u64, 0u64);
    let mut mid = SystemTime::now();
    for k in 0..SYNCS {
        pool.get()
            .unwrap()
            .batch_execute(&format!(
                "UPDATE item SET body = randomblob(1000) WHERE ((id - 1) / 4) % 100 = {}",
                k % 100
            ))
            .unwrap();
        replica.sync_now().unwrap();
        let n = replica.syncs();
        uploaded += std::fs::metadata(syncs.join(format!("{n:020}.dsbr")))
            .unwrap()
            .len();
        let after = pool.get().unwrap().snapshot().unwrap().into_vec();
        changed += changed_bytes(&before, &after, 4096);
        before = after;
        if k == SYNCS / 2 - 1 {
            mid = SystemTime::now();
        }
    }
    replica.stop().unwrap();
    drop(before);
    let per_sync = uploaded as f64 / SYNCS as f64;
    let changed_per_sync = changed as f64 / SYNCS as f64;
    let upload_ratio = per_sync / changed_per_sync;
    let upload_limit = 1.05 + 4096.0 / changed_per_sync;

    // 2. Restores, interleaved.
    let file = dir.join("replica-bench.db");
    pool.get().unwrap().save_as(&file).unwrap();
    let target = memory_pool().unwrap();
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    let (mut plain, mut latest, mut at_mid) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds.max(3) {
        let mut conn = target.get().unwrap();
        plain.push(time(&mut || conn.restore_from(&file).unwrap()));
        latest.push(time(&mut || {
            conn.restore_from_replica(store.clone(), &prefix, RestoreTarget::Latest)
                .unwrap();
        }));
        at_mid.push(time(&mut || {
            conn.restore_from_replica(store.clone(), &prefix, RestoreTarget::At(mid))
                .unwrap();
        }));
    }
    let ratio = |v: &[f64]| median((0..v.len()).map(|i| v[i] / plain[i]).collect());
    let (latest_ratio, mid_ratio) = (ratio(&latest), ratio(&at_mid));
    drop(target);
    std::fs::remove_file(&file).ok();

    // 3. Writers, on fresh prefixes: on this database, and on an 8 MiB one as the autosave
    // benchmark measures.
    let large = writer_loss(&pool, rows, rounds, &store, "writers");
    drop(pool);
    let small_rows = 8 * 1024;
    let small = writer_loss(
        &item_pool(small_rows),
        small_rows,
        rounds,
        &store,
        "writers-8",
    );
    std::fs::remove_dir_all(&folder).ok();

    let ms = |v: &[f64]| median(v.to_vec()) * 1000.0;
    println!("\n### Replica ({mib} MiB database, LocalFileSystem)\n");
    println!(
        "uploads: {per_sync:.0} bytes a sync for {changed_per_sync:.0} bytes of changed pages \
         ({SYNCS} syncs): {upload_ratio:.3} x"
    );
    println!("| restore | median | median ratio to restore_from |");
    println!("| --- | ---: | ---: |");
    println!("| restore_from (file) | {:.1} ms | 1 |", ms(&plain));
    println!(
        "| Latest after {SYNCS} syncs | {:.1} ms | {latest_ratio:.2} |",
        ms(&latest)
    );
    println!(
        "| At(sync {}) | {:.1} ms | {mid_ratio:.2} |",
        SYNCS / 2,
        ms(&at_mid)
    );
    for (label, w) in [
        (format!("{mib} MiB"), &large),
        ("8 MiB".to_string(), &small),
    ] {
        println!(
            "writers, {label}: {:.0} transactions/s without, {:.0} with a Replica on its \
             defaults ({} background syncs); lost {:.2}% (median of the rounds' own losses), \
             noise {:.2}%",
            w.off, w.on, w.background, w.loss, w.noise
        );
    }
    let goal = |what: &str, value: f64, limit: f64, unit: &'static str| Goal {
        what: what.into(),
        value,
        limit,
        unit,
    };
    vec![
        goal(
            "replica upload per sync / changed pages' bytes",
            upload_ratio,
            upload_limit,
            "x",
        ),
        goal(
            "replica restore Latest / restore_from",
            latest_ratio,
            1.3,
            "x",
        ),
        goal(
            "replica restore At(mid) / restore_from",
            mid_ratio,
            1.5,
            "x",
        ),
        goal(
            "throughput lost to a replica (this database)",
            large.loss,
            2.0,
            "%",
        ),
        goal(
            "throughput lost to a replica (8 MiB, as for autosave)",
            small.loss,
            2.0,
            "%",
        ),
    ]
}

/// What a `Replica` on its defaults costs a writer loop.
struct WriterLoss {
    /// Medians, transactions per second.
    off: f64,
    on: f64,
    /// Syncs the replicas made on their own.
    background: u64,
    /// Median of the rounds' own losses, and of the differences between their two samples
    /// without a replica, in percent.
    loss: f64,
    noise: f64,
}

/// Rounds of three samples (without, with, without; the order rotates), as autosave.rs.
fn writer_loss(
    pool: &Pool,
    rows: u64,
    rounds: usize,
    store: &Arc<dyn ObjectStore>,
    prefix: &str,
) -> WriterLoss {
    let writers = StorePath::from(prefix);
    let (mut on, mut off, mut off_again) = (Vec::new(), Vec::new(), Vec::new());
    let mut background = 0;
    let mut with = |pool: &Pool| {
        let replica = Replica::start(
            pool,
            store.clone(),
            writers.clone(),
            ReplicaOptions::default(),
        )
        .unwrap();
        let rate = writer_rate(pool, rows);
        background += replica.syncs() - 1;
        replica.stop().unwrap();
        rate
    };
    for round in 0..rounds.max(3) {
        let (a, b, c) = match round % 3 {
            0 => (writer_rate(pool, rows), with(pool), writer_rate(pool, rows)),
            1 => {
                let b = with(pool);
                (writer_rate(pool, rows), b, writer_rate(pool, rows))
            }
            _ => {
                let (a, c) = (writer_rate(pool, rows), writer_rate(pool, rows));
                (a, with(pool), c)
            }
        };
        off.push(a);
        on.push(b);
        off_again.push(c);
    }
    let pct = |f: &dyn Fn(usize) -> f64| median((0..on.len()).map(f).collect());
    WriterLoss {
        off: median(off.clone()),
        on: median(on.clone()),
        background,
        loss: pct(&|i| (1.0 - 2.0 * on[i] / (off[i] + off_again[i])) * 100.0),
        noise: pct(&|i| (1.0 - off_again[i] / off[i]).abs() * 100.0),
    }
}
