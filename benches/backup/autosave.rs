//! What autosave costs the app: a loop of small write transactions on the pool for a fixed
//! time, with and without an autosave of the database running. Each round takes three samples
//! back to back (without, with, without again; the order rotates), so that the machine's drift
//! hits both alike and the two samples without autosave show how far this machine's noise
//! alone moves a figure.

use std::path::Path;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel_sqlite_backup::{memory_pool, Autosave, AutosaveOptions, SingletonManager};

use crate::report::Goal;

type Pool = r2d2::Pool<SingletonManager>;

/// Rows of about 100 bytes: an 8 MiB document.
const ROWS: u32 = 60_000;
const SAMPLE: Duration = Duration::from_secs(2);
const BATCH: u64 = 100;
/// Batches ending this close to a finished save count as "near" it: the save itself (about
/// 20 ms here) and whatever it leaves behind in the caches.
const BEFORE_SAVE: f64 = 0.1;
const AFTER_SAVE: f64 = 0.2;

/// One timed loop.
struct Sample {
    rate: f64,
    /// The writer's share of the time not on a CPU: waiting for one, or asleep in the busy
    /// handler. Linux's schedstat, or 0 elsewhere.
    off_cpu: f64,
    /// With autosave: the loss over the whole sample against the batches away from saves.
    near_saves_loss: Option<f64>,
}

/// One-row updates at random on the pool's only connection for [`SAMPLE`].
fn sample(pool: &Pool, autosave: Option<&Autosave>) -> Sample {
    let mut conn = pool.get().unwrap();
    // (end of batch in seconds, its duration, saves completed when it ended)
    let mut batches = Vec::with_capacity(1 << 16);
    let sched = schedstat();
    let start = Instant::now();
    while start.elapsed() < SAMPLE {
        let began = start.elapsed().as_secs_f64();
        for _ in 0..BATCH {
            conn.batch_execute(
                "UPDATE item SET body = randomblob(100) WHERE id = abs(random()) % 60000 + 1",
            )
            .unwrap();
        }
        let ended = start.elapsed().as_secs_f64();
        batches.push((ended, ended - began, autosave.map_or(0, Autosave::saves)));
    }
    let wall = start.elapsed().as_secs_f64();
    let off_cpu = match (sched, schedstat()) {
        (Some((cpu0, _)), Some((cpu1, _))) => 1.0 - (cpu1 - cpu0) as f64 / 1e9 / wall,
        _ => 0.0,
    };
    Sample {
        rate: (batches.len() as u64 * BATCH) as f64 / wall,
        off_cpu,
        near_saves_loss: autosave.map(|_| near_saves_loss(&batches)),
    }
}

/// 1 - (throughput over all batches) / (throughput over the batches away from every save):
/// what the saves cost, measured within one sample, so the machine's drift cancels out.
fn near_saves_loss(batches: &[(f64, f64, u64)]) -> f64 {
    let done: Vec<f64> = batches
        .windows(2)
        .filter(|w| w[1].2 > w[0].2)
        .map(|w| w[1].0)
        .collect();
    let near = |end: f64| {
        done.iter()
            .any(|&d| end > d - BEFORE_SAVE && end < d + AFTER_SAVE)
    };
    let rate = |pick: &dyn Fn(f64) -> bool| {
        let (n, t) = batches
            .iter()
            .filter(|b| pick(b.0))
            .fold((0.0, 0.0), |(n, t), b| (n + 1.0, t + b.1));
        n / t
    };
    (1.0 - rate(&|_| true) / rate(&|end| !near(end))) * 100.0
}

/// The calling thread's time on a CPU and waiting for one, in ns.
fn schedstat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse().ok());
    Some((fields.next()??, fields.next()??))
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
    let mut saves = 0;
    let mut with = |pool: &Pool| {
        let autosave = Autosave::start(pool, &file, AutosaveOptions::default()).unwrap();
        let s = sample(pool, Some(&autosave));
        saves += autosave.saves() - 1;
        autosave.stop().unwrap();
        s
    };
    let (mut on, mut off, mut off_again) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds.max(3) {
        // Rotate the order, so that the one with autosave is first, second and third alike.
        let (a, b, c) = match round % 3 {
            0 => (sample(&pool, None), with(&pool), sample(&pool, None)),
            1 => {
                let b = with(&pool);
                (sample(&pool, None), b, sample(&pool, None))
            }
            _ => {
                let (a, c) = (sample(&pool, None), sample(&pool, None));
                (a, with(&pool), c)
            }
        };
        off.push(a);
        on.push(b);
        off_again.push(c);
    }
    let pct = |f: &dyn Fn(usize) -> f64| median((0..on.len()).map(f).collect());
    let loss = pct(&|i| (1.0 - 2.0 * on[i].rate / (off[i].rate + off_again[i].rate)) * 100.0);
    let noise = pct(&|i| (1.0 - off_again[i].rate / off[i].rate).abs() * 100.0);
    let near = pct(&|i| on[i].near_saves_loss.unwrap());
    let off_cpu_on = pct(&|i| on[i].off_cpu * 100.0);
    let off_cpu_off = pct(&|i| off[i].off_cpu * 100.0);
    let rate = |v: &[Sample]| median(v.iter().map(|s| s.rate).collect());
    let n = on.len();
    println!("\n### Autosave: small write transactions on the pool (8 MiB database)\n");
    println!("| | transactions/s (median of {n} x {SAMPLE:?}) | writer's time off its CPU |");
    println!("| --- | ---: | ---: |");
    println!(
        "| without autosave | {:.0} | {off_cpu_off:.3}% |",
        rate(&off)
    );
    println!(
        "| with autosave (defaults: every 1 s, quiet 200 ms) | {:.0} | {off_cpu_on:.3}% |",
        rate(&on)
    );
    println!(
        "\nthroughput lost, median of the rounds' own losses: {loss:.2}% ({saves} background \
         saves in the samples with autosave)"
    );
    println!("noise: the two samples without autosave of a round differ by {noise:.2}% (median)");
    println!(
        "within the samples with autosave, all batches against those away from saves \
         ({BEFORE_SAVE} s before to {AFTER_SAVE} s after each): {near:.2}% lost (median)"
    );
    vec![
        Goal {
            what: "throughput lost to autosave".into(),
            value: loss,
            limit: 2.0,
            unit: "%",
        },
        Goal {
            what: "throughput lost around saves, within the samples with autosave".into(),
            value: near,
            limit: 2.0,
            unit: "%",
        },
    ]
}
