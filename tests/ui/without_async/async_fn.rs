use diesel::SqliteConnection;

#[diesel_sqlite_backup::test(migrations = false)]
async fn needs_the_feature(conn: &mut SqliteConnection) {}

fn main() {}
