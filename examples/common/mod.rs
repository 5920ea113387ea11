//! The small notebook app the examples and tests share: its schema, models and migrations.
#![allow(dead_code)]

use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// The crate's `migrations/` folder, compiled in.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

diesel::table! {
    notebooks (id) {
        id -> Integer,
        title -> Text,
        created_at -> Text,
    }
}

diesel::table! {
    notes (id) {
        id -> Integer,
        notebook_id -> Integer,
        title -> Text,
        body -> Text,
    }
}

diesel::joinable!(notes -> notebooks (notebook_id));
diesel::allow_tables_to_appear_in_same_query!(notebooks, notes);

#[derive(Insertable)]
#[diesel(table_name = notebooks)]
pub struct NewNotebook<'a> {
    pub title: &'a str,
}

#[derive(Insertable)]
#[diesel(table_name = notes)]
pub struct NewNote<'a> {
    pub notebook_id: i32,
    pub title: &'a str,
    pub body: &'a str,
}

/// Runs every pending migration.
pub fn migrate(conn: &mut SqliteConnection) {
    conn.run_pending_migrations(MIGRATIONS)
        .expect("migrations run");
}

/// Creates a notebook and returns its id.
pub fn add_notebook(conn: &mut SqliteConnection, title: &str) -> i32 {
    diesel::insert_into(notebooks::table)
        .values(NewNotebook { title })
        .execute(conn)
        .expect("insert notebook");
    notebooks::table
        .filter(notebooks::title.eq(title))
        .select(notebooks::id)
        .first(conn)
        .expect("read notebook id")
}

/// The id of the notebook titled `title`, created if it does not exist.
pub fn add_notebook_if_missing(conn: &mut SqliteConnection, title: &str) -> i32 {
    notebooks::table
        .filter(notebooks::title.eq(title))
        .select(notebooks::id)
        .first(conn)
        .optional()
        .expect("look up notebook")
        .unwrap_or_else(|| add_notebook(conn, title))
}

/// Adds `count` notes with bodies of `body_len` bytes to a new notebook, in one transaction.
pub fn fill(conn: &mut SqliteConnection, notebook: &str, count: usize, body_len: usize) -> i32 {
    conn.transaction(|conn| {
        let id = add_notebook(conn, notebook);
        let body = "x".repeat(body_len);
        let titles: Vec<String> = (0..count).map(|i| format!("note {i}")).collect();
        for chunk in titles.chunks(500) {
            let rows: Vec<NewNote> = chunk
                .iter()
                .map(|title| NewNote {
                    notebook_id: id,
                    title,
                    body: &body,
                })
                .collect();
            diesel::insert_into(notes::table)
                .values(&rows)
                .execute(conn)?;
        }
        Ok::<_, diesel::result::Error>(id)
    })
    .expect("fill notes")
}

/// How many notes there are.
pub fn note_count(conn: &mut SqliteConnection) -> i64 {
    notes::table.count().get_result(conn).expect("count notes")
}

/// Where an example writes: command-line argument `arg` (1 for the first) as a path, or
/// `default_name` inside a new temporary folder that only the current user can open.
///
/// The folder is kept after the example exits, so the file it prints can be opened
/// (`sqlite3 <path>`); every run gets its own, so nothing is shared with other runs or
/// other users of the machine.
pub fn output_path(arg: usize, default_name: &str) -> std::io::Result<std::path::PathBuf> {
    if let Some(path) = std::env::args_os().nth(arg) {
        return Ok(path.into());
    }
    let mut builder = tempfile::Builder::new();
    builder.prefix("diesel-sqlite-backup-example-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o700));
    }
    Ok(builder.tempdir()?.keep().join(default_name))
}
