//! Replica: an in-memory database shipped page by page to object storage (here a local
//! folder), then loaded back elsewhere as it was at a point in time.
//!
//! Run: `cargo run --example replica --features replica [-- FOLDER]`. The objects go to
//! FOLDER, or else to a new temporary folder that the example removes at the end.

use std::sync::Arc;
use std::time::SystemTime;

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_sqlite_backup::{
    list_syncs, memory_pool, BackupExt, Replica, ReplicaOptions, RestoreTarget,
};
use object_store::{local::LocalFileSystem, path::Path, ObjectStore};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn notes(conn: &mut SqliteConnection) -> QueryResult<i64> {
    let c: Count = diesel::sql_query("SELECT count(*) AS n FROM notes").get_result(conn)?;
    Ok(c.n)
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let temp = tempfile::tempdir()?;
    let folder = std::env::args()
        .nth(1)
        .map_or_else(|| temp.path().to_owned(), Into::into);
    std::fs::create_dir_all(&folder)?;
    // with_fsync: each object is on disk before its sync counts (docs/replica.md, power loss).
    let local = LocalFileSystem::new_with_prefix(&folder)?.with_fsync(true);
    let store: Arc<dyn ObjectStore> = Arc::new(local);
    let prefix = Path::from("notes");

    let pool = memory_pool()?;
    diesel::sql_query("CREATE TABLE notes(body TEXT)").execute(&mut pool.get()?)?;
    let replica = Replica::start(
        &pool,
        store.clone(),
        prefix.clone(),
        ReplicaOptions::default(),
    )?;
    diesel::sql_query("INSERT INTO notes VALUES ('first')").execute(&mut pool.get()?)?;
    replica.sync_now()?;
    let between = SystemTime::now();
    diesel::sql_query("INSERT INTO notes VALUES ('second')").execute(&mut pool.get()?)?;
    replica.stop()?;
    println!("replica in {}", folder.join("notes").display());
    for sync in list_syncs(store.clone(), &prefix)? {
        println!("sync {} at {:?}", sync.number, sync.time);
    }

    // Another pool, as another process on another machine would.
    let elsewhere = memory_pool()?;
    let mut conn = elsewhere.get()?;
    let then = conn.restore_from_replica(store.clone(), &prefix, RestoreTarget::At(between))?;
    println!(
        "restored sync {} (before the second note): {} notes",
        then.sync,
        notes(&mut conn)?
    );
    let latest = conn.restore_from_replica(store, &prefix, RestoreTarget::Latest)?;
    println!(
        "restored sync {} (latest): {} notes",
        latest.sync,
        notes(&mut conn)?
    );
    Ok(())
}
