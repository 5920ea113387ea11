#![allow(unused_imports)]

use diesel::SqliteConnection;

#[diesel_sqlite_backup::test(migrations = false)]
fn returns_a_number(conn: &mut SqliteConnection) -> i32 {
    1
}

#[diesel_sqlite_backup::test(migrations = false)]
#[test]
fn tested_twice(conn: &mut SqliteConnection) {}

#[diesel_sqlite_backup::test(migration = false)]
fn misspelt(conn: &mut SqliteConnection) {}

#[diesel_sqlite_backup::test(migrations = false, flavor = "multi_thread")]
fn flavor_without_async(conn: &mut SqliteConnection) {}

fn main() {}
