#![allow(unused_imports)]

use diesel::r2d2::{ConnectionManager, Pool};
use diesel::SqliteConnection;

#[diesel_sqlite_backup::test(migrations = false)]
fn a_number(conn: i32) {}

#[diesel_sqlite_backup::test(migrations = false)]
fn shared_reference(conn: &SqliteConnection) {}

#[diesel_sqlite_backup::test(migrations = false)]
fn another_manager(pool: Pool<ConnectionManager<SqliteConnection>>) {}

#[diesel_sqlite_backup::test(migrations = false)]
fn two_arguments(a: &mut SqliteConnection, b: &mut SqliteConnection) {}

#[diesel_sqlite_backup::test(migrations = false)]
fn no_argument() {}

fn main() {}
