//! An async service on the shared in-memory database: a tokio runtime, a deadpool pool from
//! `MemoryDatabase::async_manager()`, tasks that write notes through it, a periodic Save As
//! of a backup (`AsyncBackupExt::save_as`, on tokio's blocking pool), and an `Autosave` that
//! keeps a live file following every commit. It ends by itself after about two seconds.
//!
//! Run: `cargo run --example async_service --features async [-- path/to/live.db]`. Without a
//! path it writes into a new private temporary folder; the backups go beside the live file
//! (`backup-1.db`, ...). It prints where everything is.

mod common;

use std::time::{Duration, Instant};

use common::{notes, NewNote};
use diesel::{Connection, SqliteConnection};
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::RunQueryDsl;
use diesel_sqlite_backup::{
    AsyncBackupExt, AsyncSqliteConnection, Autosave, AutosaveOptions, MemoryDatabase,
};

const WRITERS: i32 = 4;
const RUN_FOR: Duration = Duration::from_secs(2);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let live = common::output_path(1, "live.db")?;
    let dir = live
        .parent()
        .ok_or("the live file has no folder")?
        .to_owned();

    let db = MemoryDatabase::new()?;
    // Migrations are blocking work: a plain connection to the same database, at start-up.
    let mut setup = db.connect()?;
    common::migrate(&mut setup);
    let inbox = common::add_notebook(&mut setup, "Inbox");
    drop(setup);

    let pool: Pool<AsyncSqliteConnection> =
        Pool::builder(db.async_manager()).max_size(8).build()?;
    // Saves once before it returns (blocking, but quick on a new database).
    let every = Duration::from_millis(200);
    let autosave =
        Autosave::start_with_database(&db, &live, AutosaveOptions::default().every(every))?;
    println!("autosaving to {}", live.display());

    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let pool = pool.clone();
        writers.spawn(async move {
            let mut written = 0;
            while started.elapsed() < RUN_FOR {
                let title = format!("writer {w} note {written}");
                let note = NewNote {
                    notebook_id: inbox,
                    title: &title,
                    body: "written by a task",
                };
                let mut conn = pool.get().await?;
                diesel::insert_into(notes::table)
                    .values(&note)
                    .execute(&mut conn)
                    .await?;
                written += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(written)
        });
    }

    // A backup every half second, while the writers write: each a consistent state.
    let backups = tokio::spawn({
        let (pool, dir) = (pool.clone(), dir.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            tick.tick().await; // the first tick is immediate
            let mut n = 0;
            while started.elapsed() < RUN_FOR {
                tick.tick().await;
                n += 1;
                let path = dir.join(format!("backup-{n}.db"));
                let mut conn = pool.get().await?;
                conn.save_as(&path).await?; // cancelled, old file kept, if this task is dropped
                println!("backup {n}: saved {}", path.display());
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(n)
        }
    });

    let mut total = 0;
    while let Some(written) = writers.join_next().await {
        total += written??;
    }
    let backups = backups.await??;
    autosave.save_now_async().await?; // every note is in the live file
    autosave.stop_async().await?;

    let mut file = SqliteConnection::establish(live.to_str().ok_or("path is not UTF-8")?)?;
    let in_file = common::note_count(&mut file);
    println!("{WRITERS} tasks wrote {total} notes; {backups} backups");
    println!("autosaved {in_file} notes to {}", live.display());
    assert_eq!(in_file, i64::from(total));
    Ok(())
}
