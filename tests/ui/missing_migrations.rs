#![allow(unused_imports)]

use diesel::SqliteConnection;

#[diesel_sqlite_backup::test(migrations = "no/such/folder")]
fn named_folder(conn: &mut SqliteConnection) {}

// trybuild's crate has no `migrations/` beside its Cargo.toml.
#[diesel_sqlite_backup::test]
fn default_folder(conn: &mut SqliteConnection) {}

fn main() {}
