//! Save a database big enough to watch, with an indicatif progress bar fed by
//! `BackupOptions::on_progress`.
//!
//! Run: `cargo run --release --example save_with_progress [-- MiB [path/to/big.db]]`. Without
//! a path it saves into a new private temporary folder; either way it prints where the file is.

mod common;

use diesel::connection::SimpleConnection;
use diesel_migrations::MigrationHarness;
use diesel_sqlite_backup::{memory_pool, BackupExt, BackupOptions};
use indicatif::{ProgressBar, ProgressStyle};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mib: u64 = std::env::args().nth(1).map_or(Ok(64), |a| a.parse())?;
    let path = common::output_path(2, "big.db")?;

    let pool = memory_pool()?;
    let mut conn = pool.get()?;
    conn.run_pending_migrations(common::MIGRATIONS)?;
    // About 4 KiB per note: MiB * 256 notes.
    conn.batch_execute(&format!(
        "INSERT INTO notebooks(title) VALUES ('bulk');
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})
         INSERT INTO notes(notebook_id, title, body)
         SELECT 1, 'note ' || i, hex(randomblob(2000)) FROM n;",
        mib * 256
    ))?;

    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} pages {percent}% {elapsed_precise}",
    )?);
    conn.save_as_with(
        &path,
        BackupOptions::default()
            .pages_per_step(256)
            .on_progress(|p| {
                bar.set_length(u64::from(p.page_count));
                bar.set_position(u64::from(p.copied()));
            }),
    )?;
    bar.finish();
    let size = std::fs::metadata(&path)?.len();
    println!("saved {} MiB to {}", size / (1024 * 1024), path.display());
    Ok(())
}
