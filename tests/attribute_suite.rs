//! 50 tests of `#[diesel_sqlite_backup::test]` over two (migrations, fixtures) sets, for
//! tests/attribute_nextest.rs to count how often each set is migrated (once per set, under
//! `cargo test` and under `cargo nextest run`, which starts a process per test).

use diesel::prelude::*;
use diesel::sql_types::BigInt;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn users(conn: &mut SqliteConnection) -> i64 {
    diesel::sql_query("SELECT count(*) AS n FROM users")
        .get_result::<Count>(conn)
        .unwrap()
        .n
}

/// Each test adds a user and sees only the template's users and its own.
fn add_one(conn: &mut SqliteConnection, template_users: i64) {
    diesel::sql_query("INSERT INTO users (id, name, email) VALUES (5000, 'new', 'new@x')")
        .execute(conn)
        .unwrap();
    assert_eq!(users(conn), template_users + 1);
}

macro_rules! migrated_only {
    ($($name:ident)*) => {$(
        #[diesel_sqlite_backup::test(migrations = "tests/attribute/migrations")]
        fn $name(conn: &mut SqliteConnection) {
            add_one(conn, 0);
        }
    )*};
}

macro_rules! with_users {
    ($($name:ident)*) => {$(
        #[diesel_sqlite_backup::test(
            migrations = "tests/attribute/migrations",
            fixtures(path = "tests/attribute/fixtures", "users")
        )]
        fn $name(conn: &mut SqliteConnection) {
            add_one(conn, 1000);
        }
    )*};
}

migrated_only!(
    m01 m02 m03 m04 m05 m06 m07 m08 m09 m10 m11 m12 m13 m14 m15 m16 m17 m18 m19 m20 m21 m22
    m23 m24 m25
);
with_users!(
    u01 u02 u03 u04 u05 u06 u07 u08 u09 u10 u11 u12 u13 u14 u15 u16 u17 u18 u19 u20 u21 u22
    u23 u24 u25
);
