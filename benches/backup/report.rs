//! Medians, ratios and the printed table.

use std::time::Duration;

/// All timings of one method, in the order they ran.
pub struct Row {
    pub name: String,
    pub samples: Vec<Duration>,
    /// Bytes moved per run, for MiB/s; 0 when throughput means nothing (pool checkout).
    pub bytes: u64,
    /// Operations per sample, for rows that time a batch (pool checkout).
    pub ops: u32,
}

impl Row {
    pub fn new(name: &str, bytes: u64) -> Row {
        Row {
            name: name.to_owned(),
            samples: Vec::new(),
            bytes,
            ops: 1,
        }
    }

    pub fn median(&self) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        match s.len() {
            0 => Duration::ZERO,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2,
        }
    }

    pub fn per_op(&self) -> Duration {
        self.median() / self.ops.max(1)
    }
}

pub fn ratio(a: &Row, b: &Row) -> f64 {
    a.per_op().as_secs_f64() / b.per_op().as_secs_f64()
}

/// Prints rows as a Markdown table with each row's ratio to `base`.
pub fn print_table(title: &str, rows: &[&Row], base: &Row) {
    println!("\n### {title}\n");
    println!("| method | median | MiB/s | ratio to {} |", base.name);
    println!("| --- | ---: | ---: | ---: |");
    for row in rows {
        let t = row.per_op();
        let rate = if row.bytes > 0 {
            format!(
                "{:.0}",
                row.bytes as f64 / (1024.0 * 1024.0) / t.as_secs_f64()
            )
        } else {
            "-".to_owned()
        };
        println!(
            "| {} | {} | {rate} | {:.2}x |",
            row.name,
            fmt(t),
            ratio(row, base)
        );
    }
}

pub fn fmt(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.2} µs", s * 1e6)
    }
}

/// One goal from the issue: a ratio and its limit.
pub struct Goal {
    pub what: String,
    pub value: f64,
    pub limit: f64,
    pub unit: &'static str,
}

pub fn print_goals(goals: &[Goal]) {
    println!("\n### Goals\n");
    println!("| goal | measured | limit | met |");
    println!("| --- | ---: | ---: | :---: |");
    for g in goals {
        let met = if g.value <= g.limit { "yes" } else { "NO" };
        println!(
            "| {} | {:.2}{} | {:.2}{} | {met} |",
            g.what, g.value, g.unit, g.limit, g.unit
        );
    }
}
