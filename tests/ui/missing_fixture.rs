#![allow(unused_imports)]

use diesel::SqliteConnection;

#[diesel_sqlite_backup::test(migrations = false, fixtures("users"))]
fn default_folder(conn: &mut SqliteConnection) {}

#[diesel_sqlite_backup::test(migrations = false, fixtures(path = "no/such/folder", "users"))]
fn missing_folder(conn: &mut SqliteConnection) {}

fn main() {}
