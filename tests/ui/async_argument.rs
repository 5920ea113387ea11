// An async connection or pool needs an `async fn` test (the types need not resolve: the
// attribute refuses the function before they are looked up).

#[diesel_sqlite_backup::test(migrations = false)]
fn borrowed(conn: &mut AsyncSqliteConnection) {}

#[diesel_sqlite_backup::test(migrations = false)]
fn owned(mut conn: SyncConnectionWrapper<SqliteConnection>) {}

#[diesel_sqlite_backup::test(migrations = false)]
fn a_pool(pool: Pool<SyncConnectionWrapper<SqliteConnection>>) {}

fn main() {}
