//! The main job in a dozen lines: an in-memory database shared by a pool, migrated,
//! written through Diesel, saved to a file, and read back from that file.
//!
//! Run: `cargo run --example quickstart [-- path/to/notes.db]`. Without a path it saves into a
//! new private temporary folder; either way it prints where the file is.

mod common;

use common::{notebooks, notes, NewNote};
use diesel::prelude::*;
use diesel_migrations::MigrationHarness;
use diesel_sqlite_backup::{memory_pool, BackupExt};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let path = common::output_path(1, "notes.db")?;

    let pool = memory_pool()?;
    let mut conn = pool.get()?;
    conn.run_pending_migrations(common::MIGRATIONS)?;
    let inbox = common::add_notebook(&mut conn, "Inbox");
    diesel::insert_into(notes::table)
        .values(&NewNote {
            notebook_id: inbox,
            title: "Hello",
            body: "Saved from memory.",
        })
        .execute(&mut conn)?;
    conn.save_as(&path)?;
    println!("saved the in-memory database to {}", path.display());

    let mut file = SqliteConnection::establish(path.to_str().ok_or("path is not UTF-8")?)?;
    let rows: Vec<(String, String)> = notes::table
        .inner_join(notebooks::table)
        .select((notebooks::title, notes::title))
        .load(&mut file)?;
    for (notebook, note) in &rows {
        println!("reopened the file: notebook {notebook:?} holds note {note:?}");
    }
    assert_eq!(rows.len(), 1);
    Ok(())
}
