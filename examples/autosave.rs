//! Autosave: a notes app that keeps its document in memory and survives being killed.
//!
//! Run: `cargo run --example autosave [-- path/to/notes.db [NOTES]]`. It opens the document
//! if it exists, then writes NOTES notes (default 20), one every 50 ms, as a user would.
//! Kill it at any moment (Ctrl-C, `kill -9`): the file holds every note committed up to
//! about half a second before, and the next run carries on from there.

mod common;

use std::time::Duration;

use common::{notes, NewNote};
use diesel::prelude::*;
use diesel_migrations::MigrationHarness;
use diesel_sqlite_backup::{memory_pool, Autosave, AutosaveOptions, BackupExt};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let path = common::output_path(1, "notes.db")?;
    let count: usize = std::env::args().nth(2).map_or(Ok(20), |n| n.parse())?;

    let pool = memory_pool()?;
    {
        let mut doc = pool.get()?;
        if path.exists() {
            doc.restore_from(&path)?;
            println!(
                "opened {} with {} notes",
                path.display(),
                common::note_count(&mut doc)
            );
        }
        doc.run_pending_migrations(common::MIGRATIONS)?;
        common::add_notebook_if_missing(&mut doc, "Inbox");
    }

    let options = AutosaveOptions::default()
        .every(Duration::from_millis(500))
        .quiet(Duration::from_millis(100))
        .on_error(|e| eprintln!("autosave failed (will retry): {e}"));
    let autosave = Autosave::start(&pool, &path, options)?;
    println!("autosaving to {}", path.display());

    for _ in 0..count {
        let mut doc = pool.get()?;
        let inbox = common::add_notebook_if_missing(&mut doc, "Inbox");
        let title = format!("note {}", common::note_count(&mut doc) + 1);
        diesel::insert_into(notes::table)
            .values(&NewNote {
                notebook_id: inbox,
                title: &title,
                body: "typed by the user",
            })
            .execute(&mut doc)?;
        println!("wrote {title}");
        drop(doc);
        std::thread::sleep(Duration::from_millis(50));
    }

    autosave.stop()?; // saves the last notes
    let total = common::note_count(&mut *pool.get()?);
    println!("saved {} with {total} notes", path.display());
    Ok(())
}
