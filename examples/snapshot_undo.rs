//! Undo with snapshots: take an undo point in memory, make a destructive edit, then put the
//! database back exactly as it was, for every connection of the pool.
//!
//! Run: `cargo run --example snapshot_undo`. It writes no file.

mod common;

use diesel::RunQueryDsl;
use diesel_migrations::MigrationHarness;
use diesel_sqlite_backup::{memory_pool, BackupExt};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let pool = memory_pool()?;
    let mut conn = pool.get()?;
    conn.run_pending_migrations(common::MIGRATIONS)?;
    common::fill(&mut conn, "Inbox", 3, 40);
    println!("before the edit: {} notes", common::note_count(&mut conn));

    let undo_point = conn.snapshot()?;
    println!("undo point: {} bytes", undo_point.len());

    diesel::sql_query("DELETE FROM notes").execute(&mut conn)?;
    println!("after the edit: {} notes", common::note_count(&mut conn));

    conn.restore_from_bytes(&undo_point)?;
    let restored = common::note_count(&mut conn);
    println!("after undo: {restored} notes");
    assert_eq!(restored, 3);
    Ok(())
}
