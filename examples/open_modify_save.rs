//! The document workflow: Open a file into memory, edit it there, Save it back atomically.
//!
//! Run: `cargo run --example open_modify_save [-- path/to/doc.db]`. Without a path it starts a
//! new document in a new private temporary folder; pass the path it prints to open that
//! document again and add another note.

mod common;

use common::{notes, NewNote};
use diesel::prelude::*;
use diesel_migrations::MigrationHarness;
use diesel_sqlite_backup::{memory_pool, BackupExt};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let path = common::output_path(1, "document.db")?;
    if !path.exists() {
        // A first document to open, as another session of the app would have saved it.
        let pool = memory_pool()?;
        let mut first = pool.get()?;
        first.run_pending_migrations(common::MIGRATIONS)?;
        common::add_notebook(&mut first, "Journal");
        first.save_as(&path)?;
        println!("created {}", path.display());
    }

    let pool = memory_pool()?;
    let mut doc = pool.get()?;
    doc.restore_from(&path)?;
    let before = common::note_count(&mut doc);
    println!("opened {} with {before} notes", path.display());

    doc.run_pending_migrations(common::MIGRATIONS)?;
    let journal = common::add_notebook_if_missing(&mut doc, "Journal");
    let title = format!("entry {}", before + 1);
    diesel::insert_into(notes::table)
        .values(&NewNote {
            notebook_id: journal,
            title: &title,
            body: "edited in memory",
        })
        .execute(&mut doc)?;

    doc.save_as(&path)?;
    println!("saved {} with {} notes", path.display(), before + 1);
    Ok(())
}
