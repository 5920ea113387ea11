//! Run the migrations in memory, where they are fast, then persist the migrated database
//! to a file in one atomic step.
//!
//! Run: `cargo run --example migrate_then_persist [-- path/to/app.db]`. Without a path it
//! saves into a new private temporary folder; either way it prints where the file is.

mod common;

use diesel::prelude::*;
use diesel_migrations::MigrationHarness;
use diesel_sqlite_backup::{memory_pool, BackupExt};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let path = common::output_path(1, "migrated.db")?;
    let pool = memory_pool()?;
    let mut conn = pool.get()?;
    let applied = conn.run_pending_migrations(common::MIGRATIONS)?.len();
    println!("applied {applied} migrations in memory");

    conn.save_as(&path)?;
    println!("persisted to {}", path.display());

    // The file carries Diesel's migration table, so nothing is pending when it is opened.
    let mut file = SqliteConnection::establish(path.to_str().ok_or("path is not UTF-8")?)?;
    let pending = file.pending_migrations(common::MIGRATIONS)?;
    println!("pending migrations in the file: {}", pending.len());
    assert!(pending.is_empty());
    let notebooks: i64 = common::notebooks::table.count().get_result(&mut file)?;
    println!("the file is ready to use ({notebooks} notebooks)");
    Ok(())
}
