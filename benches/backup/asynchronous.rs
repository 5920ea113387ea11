//! `AsyncBackupExt::save_as` against the sync `save_as` on the same database, interleaved
//! round by round, and the latency of a runtime with 2 worker threads serving requests while
//! a save runs (feature `async`: `cargo bench --bench backup --features async -- --only async`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::pooled_connection::deadpool::Pool;
use diesel_sqlite_backup::{
    AsyncBackupExt, AsyncSqliteConnection, BackupExt, BackupOptions, MemoryDatabase,
    SingletonManager,
};
use tokio::sync::{mpsc, oneshot};

use crate::report::{fmt, ratio, Goal, Row};

const SYNC: &str = "4a save_as (sync, on the calling thread)";
const ASYNC: &str = "4b AsyncBackupExt::save_as (blocking pool)";

/// A client thread outside the runtime sends a request every millisecond to a task on the
/// runtime and waits for its answer: the round trip is how long a request waits for a
/// worker. Runs until `stop`; returns every request's send time and round trip.
fn serve_and_measure(
    runtime: &tokio::runtime::Runtime,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Instant, Duration)>> {
    let (requests, mut inbox) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
    runtime.spawn(async move {
        while let Some(reply) = inbox.recv().await {
            // Each request is a task of its own, as a server's would be.
            tokio::spawn(async move {
                let _ = reply.send(());
            });
        }
    });
    std::thread::spawn(move || {
        let mut latencies = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let (reply, answer) = oneshot::channel();
            let sent = Instant::now();
            requests.send(reply).expect("the server task runs");
            answer.blocking_recv().expect("an answer");
            latencies.push((sent, sent.elapsed()));
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies
    })
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let at = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len());
    samples[at - 1]
}

/// Runs `save` while the runtime serves requests; returns what `save` returned and the round
/// trips of the requests sent while it ran.
fn with_requests(
    runtime: &tokio::runtime::Runtime,
    save: impl FnOnce() -> Duration,
) -> (Duration, Vec<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let client = serve_and_measure(runtime, stop.clone());
    std::thread::sleep(Duration::from_millis(20)); // the client is under way
    let start = Instant::now();
    let took = save();
    let end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let during = client.join().expect("client thread");
    let during = during
        .into_iter()
        .filter(|(sent, _)| (start..end).contains(sent))
        .map(|(_, latency)| latency)
        .collect();
    (took, during)
}

pub fn run(mib: u64, rounds: usize, dir: &Path) -> Vec<Goal> {
    // The bench's content, copied into a MemoryDatabase that both pools share.
    let db = MemoryDatabase::new().expect("database");
    let pool = SingletonManager::pool_builder(2)
        .build(SingletonManager::from_database(db.clone()))
        .expect("pool");
    crate::methods::filled_pool(mib)
        .get()
        .expect("conn")
        .backup_to(&mut pool.get().expect("conn"), BackupOptions::default())
        .expect("copy");
    let bytes = mib * 1024 * 1024;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let async_pool: Pool<AsyncSqliteConnection> = runtime.block_on(async {
        Pool::builder(db.async_manager())
            .max_size(2)
            .build()
            .expect("deadpool pool")
    });
    let (sync_file, async_file) = (dir.join("sync.db"), dir.join("async.db"));

    let mut sync_row = Row::new(SYNC, bytes);
    let mut async_row = Row::new(ASYNC, bytes);
    let mut idle = Vec::new();
    let mut during_async = Vec::new();
    let mut during_blocking_worker = Vec::new();
    let sync_save = || {
        let mut conn = pool.get().expect("conn");
        let start = Instant::now();
        conn.save_as(&sync_file).expect("sync save");
        start.elapsed()
    };
    let async_save = || {
        runtime.block_on(async {
            let mut conn = async_pool.get().await.expect("async conn");
            let start = Instant::now();
            conn.save_as(&async_file).await.expect("async save");
            start.elapsed()
        })
    };
    // Warm-up: both files exist, so every timed save replaces one.
    sync_save();
    async_save();
    for round in 0..rounds {
        // The two saves alone, in alternating order, so neither always meets a warmer cache.
        if round % 2 == 0 {
            sync_row.samples.push(sync_save());
            async_row.samples.push(async_save());
        } else {
            async_row.samples.push(async_save());
            sync_row.samples.push(sync_save());
        }
        // Then an async save while the runtime serves requests (the client thread takes
        // CPU of its own, so this save is not timed).
        let (_, latencies) = with_requests(&runtime, async_save);
        during_async.extend(latencies);
        // For scale: the same requests with no save, and with the sync save run on a
        // runtime worker (what AsyncBackupExt avoids).
        let (_, latencies) = with_requests(&runtime, || {
            std::thread::sleep(Duration::from_millis(200));
            Duration::ZERO
        });
        idle.extend(latencies);
        let (_, latencies) = with_requests(&runtime, || {
            let (pool, file) = (pool.clone(), dir.join("on-worker.db"));
            runtime.block_on(async move {
                tokio::spawn(async move {
                    pool.get().expect("conn").save_as(&file).expect("save");
                })
                .await
                .expect("task");
            });
            Duration::ZERO
        });
        during_blocking_worker.extend(latencies);
    }

    println!("\n### Async Save As ({mib} MiB, {rounds} rounds, interleaved)\n");
    println!("| method | median | fastest | slowest | ratio to sync (medians) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for row in [&sync_row, &async_row] {
        let fastest = row.samples.iter().min().copied().unwrap_or_default();
        let slowest = row.samples.iter().max().copied().unwrap_or_default();
        println!(
            "| {} | {} | {} | {} | {:.3}x |",
            row.name,
            fmt(row.median()),
            fmt(fastest),
            fmt(slowest),
            ratio(row, &sync_row)
        );
    }
    println!("\nRequest round trips on a 2-worker runtime (a client thread, one per ms):\n");
    println!("| while | requests | p50 | p99 | max |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mut p99_async = Duration::ZERO;
    for (what, samples) in [
        ("nothing runs", &mut idle),
        ("AsyncBackupExt::save_as runs", &mut during_async),
        (
            "a sync save_as runs on a worker (for scale)",
            &mut during_blocking_worker,
        ),
    ] {
        let n = samples.len();
        let p50 = percentile(samples, 0.50);
        let p99 = percentile(samples, 0.99);
        let max = *samples.last().unwrap_or(&Duration::ZERO);
        if what.starts_with("Async") {
            p99_async = p99;
        }
        println!(
            "| {what} | {n} | {} | {} | {} |",
            fmt(p50),
            fmt(p99),
            fmt(max)
        );
    }
    vec![
        Goal {
            what: format!("AsyncBackupExt::save_as / sync save_as ({mib} MiB)"),
            value: ratio(&async_row, &sync_row),
            limit: 1.05,
            unit: "x",
        },
        Goal {
            what: "request p99 on 2 workers while an async save runs".to_owned(),
            value: p99_async.as_secs_f64() * 1e3,
            limit: 5.0,
            unit: " ms",
        },
    ]
}
