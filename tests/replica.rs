//! Replicas in object storage (feature `replica`): round trips at every sync, point-in-time
//! and numbered restores, hostile stores, writers during syncs, a replica beside an
//! autosave, stop/drop, retention, compaction, two replicas on one prefix, and SIGKILLs of a
//! replicating process. Against object_store's `InMemory` and `LocalFileSystem`; the S3
//! protocol is in tests/replica_s3.rs.
#![cfg(feature = "replica")]

mod common;
#[path = "replica/hooked.rs"]
mod hooked;
#[path = "replica/kill.rs"]
mod kill;
#[path = "replica/wipes.rs"]
mod wipes;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use diesel::connection::SimpleConnection;
use diesel::SqliteConnection;
use diesel_sqlite_backup::{
    list_syncs, memory_pool, Autosave, AutosaveOptions, BackupError, BackupExt, Replica,
    ReplicaOptions, RestoreTarget, Retain,
};
use hooked::{Hooked, Objects, SwapOnRead};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

pub const HOUR: Duration = Duration::from_secs(3600);

/// Options that never sync on their own: each test says when.
pub fn manual() -> ReplicaOptions {
    ReplicaOptions::default()
        .every(HOUR)
        .quiet(HOUR)
        .on_error(|e| panic!("unexpected replica error: {e}"))
}

fn stores() -> Vec<(
    &'static str,
    Arc<dyn ObjectStore>,
    Option<tempfile::TempDir>,
)> {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    vec![
        ("memory", Arc::new(InMemory::new()), None),
        ("local", Arc::new(local), Some(dir)),
    ]
}

/// The database's content, page for page, except the header fields a restore sets (the
/// change counter, the schema cookie and the version-valid-for number).
pub fn pages(conn: &mut SqliteConnection) -> Vec<u8> {
    let mut bytes = conn.snapshot().unwrap().into_vec();
    if bytes.len() >= 100 {
        bytes[24..28].fill(0);
        bytes[40..44].fill(0);
        bytes[92..96].fill(0);
    }
    bytes
}

/// What `restore_from_bytes` of the source's own image leaves in a target pool: what a
/// restore from the replica must leave too.
fn reference(image: &[u8]) -> Vec<u8> {
    let dest = target_pool();
    let mut c = dest.get().unwrap();
    c.restore_from_bytes(image).unwrap();
    pages(&mut c)
}

/// Asserts two images are equal, saying where they first differ.
pub fn same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        if let Some(at) = at {
            let from = at.saturating_sub(8);
            eprintln!(
                "got  {:?}\nwant {:?}",
                &got[from..(at + 24).min(got.len())],
                &want[from..(at + 24).min(want.len())]
            );
        }
        panic!(
            "{what}: {} bytes, want {}; first difference at {at:?}",
            got.len(),
            want.len()
        );
    }
}

/// 40 pages of padding and an empty table `t`: enough pages that an insert into `t` changes
/// few of them, so its sync is a delta.
fn pad(pool: &common::Pool) {
    exec(
        pool,
        "CREATE TABLE pad(x);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 40)
         INSERT INTO pad SELECT randomblob(3000) FROM s;
         CREATE TABLE t(x);",
    );
}

fn exec(pool: &common::Pool, sql: &str) {
    pool.get().unwrap().batch_execute(sql).unwrap();
}

/// A fresh pool holding `marker`, to restore into: a failed restore must leave it.
fn target_pool() -> common::Pool {
    let pool = memory_pool().unwrap();
    exec(
        &pool,
        "CREATE TABLE old(x); INSERT INTO old VALUES ('kept');",
    );
    pool
}

fn assert_kept(pool: &common::Pool) {
    let mut c = pool.get().unwrap();
    assert_eq!(common::scalar(&mut c, "SELECT count(*) AS n FROM old"), 1);
}

/// Every kind of change, one sync after each: the restored database equals the source at
/// `Latest` and at every `Sync(k)`, and `At(time of k)` gives k.
#[test]
fn every_sync_restores_to_the_same_pages() {
    for (name, store, _dir) in stores() {
        let prefix = Path::from("db/one");
        let pool = memory_pool().unwrap();
        // A first page (an empty pool database has none, and restores as an empty image).
        exec(&pool, "PRAGMA user_version = 7");
        let replica = Replica::start(&pool, store.clone(), prefix.clone(), manual()).unwrap();
        let mut states = vec![pool.get().unwrap().snapshot().unwrap().into_vec()];
        let steps = [
            "CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)",
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 200) INSERT INTO t(body) SELECT randomblob(300) FROM s",
            "UPDATE t SET body = randomblob(10) WHERE id % 3 = 0",
            "DELETE FROM t WHERE id > 150",
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 100) INSERT INTO t(body) SELECT randomblob(3000) FROM s",
            "DELETE FROM t WHERE id > 100; VACUUM",
            "CREATE INDEX t_body ON t(body); ALTER TABLE t ADD COLUMN extra TEXT DEFAULT 'x'",
            "PRAGMA page_size = 1024; VACUUM",
            "UPDATE t SET extra = 'y' WHERE id < 10",
            "DROP INDEX t_body; DELETE FROM t; VACUUM",
        ];
        for sql in steps {
            exec(&pool, sql);
            replica.sync_now().unwrap();
            states.push(pool.get().unwrap().snapshot().unwrap().into_vec());
        }
        replica.sync_now().unwrap(); // nothing new: no sync
        assert_eq!(replica.syncs(), states.len() as u64, "{name}");
        replica.stop().unwrap();
        let syncs = list_syncs(store.clone(), &prefix).unwrap();
        let numbers: Vec<u64> = syncs.iter().map(|s| s.number).collect();
        assert_eq!(
            numbers,
            (1..=states.len() as u64).collect::<Vec<_>>(),
            "{name}"
        );
        assert!(syncs.windows(2).all(|w| w[0].time < w[1].time));
        for (k, state) in states.iter().enumerate() {
            let sync = k as u64 + 1;
            for target in [RestoreTarget::Sync(sync), RestoreTarget::At(syncs[k].time)] {
                let dest = target_pool();
                let mut c = dest.get().unwrap();
                let info = c
                    .restore_from_replica(store.clone(), &prefix, target)
                    .unwrap();
                assert_eq!(
                    (info.sync, info.time),
                    (sync, syncs[k].time),
                    "{name} {target:?}"
                );
                same(
                    &pages(&mut c),
                    &reference(state),
                    &format!("{name}: sync {sync}"),
                );
                assert_eq!(common::integrity_of(&mut c), "ok");
            }
        }
        let dest = target_pool();
        let info = dest
            .get()
            .unwrap()
            .restore_from_replica(store.clone(), &prefix, RestoreTarget::Latest)
            .unwrap();
        assert_eq!(info.sync, states.len() as u64);
        same(
            &pages(&mut dest.get().unwrap()),
            &reference(states.last().unwrap()),
            "latest",
        );
    }
}

/// A delta holds only the changed pages: one row updated in a big table uploads a few
/// pages, not the database.
#[test]
fn a_small_change_uploads_a_small_object() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let prefix = Path::from("small");
    let pool = memory_pool().unwrap();
    exec(
        &pool,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 2000) INSERT INTO t(body) SELECT randomblob(1000) FROM s;",
    );
    let replica = Replica::start(&pool, store.clone(), prefix.clone(), manual()).unwrap();
    exec(
        &pool,
        "UPDATE t SET body = randomblob(1000) WHERE id = 1000",
    );
    replica.sync_now().unwrap();
    let sizes = object_sizes(&store, &prefix);
    let (first, second) = (sizes[0].1, sizes[1].1);
    assert!(
        first > 2_000_000,
        "the first sync is a whole image: {first}"
    );
    // Page 1, the leaf, and at most a few interior pages, plus their numbers and a header.
    assert!(
        second <= 4 * 4100 + 72,
        "a one-row delta took {second} bytes"
    );
}

/// (object path, size), sorted by path.
pub fn object_sizes(store: &Arc<dyn ObjectStore>, prefix: &Path) -> Vec<(Path, u64)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for dir in ["syncs", "snapshots"] {
        let listed = rt
            .block_on(store.list_with_delimiter(Some(&prefix.clone().join(dir))))
            .unwrap();
        out.extend(listed.objects.into_iter().map(|m| (m.location, m.size)));
    }
    out.sort();
    out
}

pub fn get(store: &Arc<dyn ObjectStore>, at: &Path) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async { store.get(at).await.unwrap().bytes().await.unwrap().to_vec() })
}

pub fn put(store: &Arc<dyn ObjectStore>, at: &Path, bytes: Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(store.put(at, PutPayload::from(bytes))).unwrap();
}

pub fn delete(store: &Arc<dyn ObjectStore>, at: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(store.delete(at)).unwrap();
}

/// A replica of three syncs (a whole image, two deltas) in `store`.
fn three_syncs(store: Arc<dyn ObjectStore>, prefix: &Path) -> (Arc<dyn ObjectStore>, Vec<Vec<u8>>) {
    let pool = memory_pool().unwrap();
    exec(&pool, "CREATE TABLE t(x); WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 50) INSERT INTO t SELECT randomblob(500) FROM s;");
    let replica = Replica::start(&pool, store.clone(), prefix.clone(), manual()).unwrap();
    let mut states = vec![pages(&mut pool.get().unwrap())];
    for sql in [
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET x = 2 WHERE rowid < 5",
    ] {
        exec(&pool, sql);
        replica.sync_now().unwrap();
        states.push(pages(&mut pool.get().unwrap()));
    }
    replica.stop().unwrap();
    (store, states)
}

fn restore_err(store: &Arc<dyn ObjectStore>, prefix: &Path, target: RestoreTarget) -> String {
    let dest = target_pool();
    let err = dest
        .get()
        .unwrap()
        .restore_from_replica(store.clone(), prefix, target)
        .unwrap_err();
    assert_kept(&dest);
    err.to_string()
}

/// Any byte of any object flipped: the restore that needs it fails naming the object, and
/// the old data stays.
#[test]
fn a_flipped_byte_anywhere_is_caught_and_named() {
    // A local folder's objects are mapped rather than read: both routes.
    for (_name, store, _dir) in stores() {
        flipped_bytes(store);
    }
}

fn flipped_bytes(store: Arc<dyn ObjectStore>) {
    let prefix = Path::from("flip");
    let (store, _) = three_syncs(store, &prefix);
    for (at, size) in object_sizes(&store, &prefix) {
        let good = get(&store, &at);
        // Every header byte, then a spread of body bytes and the last one.
        let mut offsets: Vec<usize> = (0..72).collect();
        offsets.extend((72..size as usize).step_by(509));
        offsets.push(size as usize - 1);
        for offset in offsets {
            let mut bad = good.clone();
            bad[offset] ^= 0x01;
            put(&store, &at, bad);
            let err = restore_err(&store, &prefix, RestoreTarget::Latest);
            assert!(err.contains(at.as_ref()), "flip at {offset} of {at}: {err}");
        }
        put(&store, &at, good);
    }
    let dest = memory_pool().unwrap();
    let info = dest
        .get()
        .unwrap()
        .restore_from_replica(store, &prefix, RestoreTarget::Latest);
    assert_eq!(info.unwrap().sync, 3, "all good again");
}

#[test]
fn truncated_missing_and_foreign_objects_are_named() {
    for (_name, store, _dir) in stores() {
        truncated_missing_and_foreign(store);
    }
}

fn truncated_missing_and_foreign(store: Arc<dyn ObjectStore>) {
    let prefix = Path::from("hostile");
    let (store, states) = three_syncs(store, &prefix);
    let second = Path::from("hostile/syncs/00000000000000000002.dsbr");
    let good = get(&store, &second);
    put(&store, &second, good[..good.len() - 1].to_vec());
    let err = restore_err(&store, &prefix, RestoreTarget::Latest);
    assert!(
        err.contains(second.as_ref()) && err.contains("truncated"),
        "{err}"
    );
    // Missing in the middle: the sync before it still restores, the ones after fail.
    delete(&store, &second);
    let err = restore_err(&store, &prefix, RestoreTarget::Latest);
    assert!(
        err.contains(second.as_ref()) && err.contains("missing"),
        "{err}"
    );
    let dest = memory_pool().unwrap();
    let info = dest
        .get()
        .unwrap()
        .restore_from_replica(store.clone(), &prefix, RestoreTarget::Sync(1))
        .unwrap();
    assert_eq!(info.sync, 1);
    same(&pages(&mut dest.get().unwrap()), &states[0], "sync 1");
    let listed: Vec<u64> = list_syncs(store.clone(), &prefix)
        .unwrap()
        .iter()
        .map(|s| s.number)
        .collect();
    assert_eq!(listed, vec![1], "a broken chain is not listed");
    // The same sync number from another replica's history.
    let (other, _) = three_syncs(Arc::new(InMemory::new()), &Path::from("other"));
    let foreign = get(&other, &Path::from("other/syncs/00000000000000000002.dsbr"));
    put(&store, &second, foreign);
    let err = restore_err(&store, &prefix, RestoreTarget::Latest);
    assert!(
        err.contains(second.as_ref()) && err.contains("another replica"),
        "{err}"
    );
}

/// A FIFO under an object's name in a local store (a folder may hold anything): listing and
/// restoring never open it, so they cannot wait forever for a writer; `Latest` names it.
#[cfg(unix)]
#[test]
fn a_fifo_named_like_an_object_is_refused_unopened() {
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let prefix = Path::from("fifo");
    let (store, states) = three_syncs(local, &prefix);
    let fifo = dir.path().join("fifo/syncs/00000000000000000004.dsbr");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let listed: Vec<u64> = list_syncs(store.clone(), &prefix)
            .unwrap()
            .iter()
            .map(|s| s.number)
            .collect();
        let latest = restore_err(&store, &prefix, RestoreTarget::Latest);
        let dest = memory_pool().unwrap();
        let third = dest
            .get()
            .unwrap()
            .restore_from_replica(store, &prefix, RestoreTarget::Sync(3))
            .unwrap();
        let third_pages = pages(&mut dest.get().unwrap());
        tx.send((listed, latest, third.sync, third_pages)).unwrap();
    });
    // A hang guard: the calls take milliseconds.
    let (listed, latest, third, third_pages) = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("a restore waited on the FIFO");
    assert_eq!(listed, vec![1, 2, 3]);
    assert!(
        latest.contains("fifo/syncs/00000000000000000004.dsbr") && latest.contains("truncated"),
        "{latest}"
    );
    assert_eq!(third, 3);
    same(&third_pages, &states[2], "sync 3");
}

/// Junk under a sync's name, numbered above every sync: `Latest` names the junk and why,
/// not a gap before it; the syncs below still restore.
#[test]
fn junk_named_like_the_newest_sync_is_named() {
    let prefix = Path::from("junk");
    let (store, _) = three_syncs(Arc::new(InMemory::new()), &prefix);
    let junk = Path::from("junk/syncs/00000000000000006199.dsbr");
    put(&store, &junk, vec![0x41; 100]);
    let err = restore_err(&store, &prefix, RestoreTarget::Latest);
    assert!(
        err.contains(junk.as_ref()) && err.contains("bad magic"),
        "{err}"
    );
    let listed: Vec<u64> = list_syncs(store.clone(), &prefix)
        .unwrap()
        .iter()
        .map(|s| s.number)
        .collect();
    assert_eq!(listed, vec![1, 2, 3]);
}

/// An object whose checksums hold but whose page 1 is no database header (here the image,
/// which later deltas' page 1 would have covered): the restore refuses it and names it.
#[test]
fn a_checksummed_object_that_is_no_database_is_named() {
    for (_name, store, _dir) in stores() {
        forged_page_one(store);
    }
}

fn forged_page_one(store: Arc<dyn ObjectStore>) {
    let prefix = Path::from("forged");
    let (store, _) = three_syncs(store, &prefix);
    let first = Path::from("forged/syncs/00000000000000000001.dsbr");
    let mut forged = get(&store, &first);
    let entries = u32::from_le_bytes(forged[20..24].try_into().unwrap()) as usize;
    let page_one = 72 + 4 * entries;
    forged[page_one..page_one + 16].copy_from_slice(b"Not a database!\0");
    let body_crc = crc32fast::hash(&forged[72..]);
    forged[64..68].copy_from_slice(&body_crc.to_le_bytes());
    let head_crc = crc32fast::hash(&forged[..68]);
    forged[68..72].copy_from_slice(&head_crc.to_le_bytes());
    put(&store, &first, forged);
    let err = restore_err(&store, &prefix, RestoreTarget::Latest);
    assert!(
        err.contains(first.as_ref()) && err.contains("page 1"),
        "{err}"
    );
}

/// Deltas adding up to more than a quarter of the last image start a compaction, however
/// few syncs that is, so a restore reads little past an image.
#[test]
fn compaction_starts_once_the_deltas_pass_a_quarter_of_the_image() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let prefix = Path::from("quarter");
    let pool = memory_pool().unwrap();
    exec(
        &pool,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, x);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 100)
         INSERT INTO t SELECT i, randomblob(3000) FROM s;",
    );
    let replica = Replica::start(&pool, store.clone(), prefix.clone(), manual()).unwrap();
    // Each sync rewrites 10 of about 100 pages: 10% of the image.
    for k in 0..4 {
        exec(
            &pool,
            &format!("UPDATE t SET x = randomblob(3000) WHERE id % 10 = {k}"),
        );
        replica.sync_now().unwrap();
    }
    replica.stop().unwrap();
    let objects: Vec<String> = object_sizes(&store, &prefix)
        .into_iter()
        .map(|(p, _)| p.to_string())
        .collect();
    assert!(
        objects.iter().any(|p| p.contains("/snapshots/")),
        "no compaction after 40% of the image in deltas: {objects:?}"
    );
}

#[test]
fn a_sync_or_time_that_does_not_exist_is_a_clear_error_and_keeps_the_data() {
    let prefix = Path::from("none");
    let (store, _) = three_syncs(Arc::new(InMemory::new()), &prefix);
    let err = restore_err(&store, &prefix, RestoreTarget::Sync(4));
    assert!(
        err.contains("no sync 4") && err.contains("syncs 1 to 3"),
        "{err}"
    );
    let err = restore_err(&store, &prefix, RestoreTarget::At(SystemTime::UNIX_EPOCH));
    assert!(err.contains("no sync at or before"), "{err}");
    let err = restore_err(&store, &Path::from("elsewhere"), RestoreTarget::Latest);
    assert!(err.contains("no sync"), "{err}");
    let syncs = list_syncs(store.clone(), &prefix).unwrap();
    let dest = memory_pool().unwrap();
    let info = dest
        .get()
        .unwrap()
        .restore_from_replica(store, &prefix, RestoreTarget::At(SystemTime::now()))
        .unwrap();
    assert_eq!(info.sync, syncs.last().unwrap().number);
}

/// The ledger: every commit adds an item and counts it in `total`.
pub fn ledger(pool: &common::Pool) {
    exec(
        pool,
        "CREATE TABLE item(id INTEGER PRIMARY KEY, body TEXT);
         CREATE TABLE total(n INTEGER); INSERT INTO total VALUES (0);",
    );
}

pub fn add_item(conn: &mut SqliteConnection) {
    conn.batch_execute(
        "BEGIN IMMEDIATE;
         INSERT INTO item(body) VALUES (hex(randomblob(300)));
         UPDATE total SET n = n + 1;
         DELETE FROM item WHERE id % 7 = 0 AND id < (SELECT max(id) FROM item) - 50;
         UPDATE total SET n = (SELECT count(*) FROM item);
         COMMIT;",
    )
    .unwrap();
}

/// (items, total) of a restored database, after checking it is sound.
pub fn ledger_of(conn: &mut SqliteConnection) -> (i64, i64) {
    assert_eq!(common::integrity_of(conn), "ok");
    let items = common::scalar(conn, "SELECT count(*) AS n FROM item");
    let total = common::scalar(conn, "SELECT n FROM total");
    (items, total)
}

/// Writers commit on four connections while the replica syncs every few milliseconds (and
/// compacts every 5): every sync in the store is a sound database whose total matches.
#[test]
fn writers_during_syncs_leave_only_consistent_syncs() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let prefix = Path::from("busy");
    let pool = common::pool_of(5);
    ledger(&pool);
    let errors = Arc::new(Mutex::new(Vec::new()));
    let options = ReplicaOptions::default()
        .every(Duration::from_millis(5))
        .quiet(Duration::ZERO)
        .compact_after(5)
        .on_error({
            let errors = errors.clone();
            move |e| errors.lock().unwrap().push(e.to_string())
        });
    let replica = Replica::start(&pool, store.clone(), prefix.clone(), options).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (pool, stop) = (pool.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut c = pool.get().unwrap();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < 400 {
                    add_item(&mut c);
                    n += 1;
                }
            })
        })
        .collect();
    while replica.syncs() < 40 && !writers.iter().all(|w| w.is_finished()) {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    writers.into_iter().for_each(|w| w.join().unwrap());
    replica.stop().unwrap();
    assert!(
        errors.lock().unwrap().is_empty(),
        "{:?}",
        errors.lock().unwrap()
    );
    let syncs = list_syncs(store.clone(), &prefix).unwrap();
    assert!(syncs.len() >= 3, "only {} syncs", syncs.len());
    let dest = memory_pool().unwrap();
    for s in &syncs {
        let mut c = dest.get().unwrap();
        c.restore_from_replica(store.clone(), &prefix, RestoreTarget::Sync(s.number))
            .unwrap();
        let (items, total) = ledger_of(&mut c);
        assert_eq!(items, total, "sync {} is torn", s.number);
    }
    let latest = ledger_of(&mut dest.get().unwrap());
    assert_eq!(
        latest,
        ledger_of(&mut pool.get().unwrap()),
        "stop syncs everything"
    );
}

/// A replica and an autosave of one pool, side by side: each gets every commit, the
/// autosave stays incremental (its file is written in place), and neither confuses the
/// other's record.
#[test]
fn a_replica_beside_an_autosave() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let prefix = Path::from("both");
    let pool = memory_pool().unwrap();
    ledger(&pool);
    let file = dir.path().join("ledger.db");
    let autosave = Autosave::start(
        &pool,
        &file,
        AutosaveOptions::default().every(HOUR).quiet(HOUR),
    )
    .unwrap();
    let replica = Replica::start(&pool, store.clone(), prefix.clone(), manual()).unwrap();
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(&file).unwrap().ino();
    for round in 0..20 {
        let mut c = pool.get().unwrap();
        for _ in 0..5 {
            add_item(&mut c);
        }
        drop(c);
        if round % 2 == 0 {
            autosave.save_now().unwrap();
            replica.sync_now().unwrap();
        } else {
            replica.sync_now().unwrap();
            autosave.save_now().unwrap();
        }
        let dest = memory_pool().unwrap();
        dest.get()
            .unwrap()
            .restore_from_replica(store.clone(), &prefix, RestoreTarget::Latest)
            .unwrap();
        let want = pages(&mut pool.get().unwrap());
        same(
            &pages(&mut dest.get().unwrap()),
            &want,
            &format!("round {round}: replica"),
        );
        let from_file = memory_pool().unwrap();
        from_file.get().unwrap().restore_from(&file).unwrap();
        same(
            &pages(&mut from_file.get().unwrap()),
            &want,
            &format!("round {round}: file"),
        );
    }
    assert_eq!(
        std::fs::metadata(&file).unwrap().ino(),
        inode,
        "saves stayed in place"
    );
    assert_eq!(replica.syncs(), 21);
    autosave.stop().unwrap();
    replica.stop().unwrap();
}

#[test]
fn stop_and_drop_sync_what_is_pending() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let prefix = Path::from("stop");
    let pool = memory_pool().unwrap();
    let replica = Replica::start(&pool, store.clone(), prefix.clone(), manual()).unwrap();
    exec(&pool, "CREATE TABLE t(x)");
    replica.stop().unwrap();
    assert_eq!(
        list_syncs(store.clone(), &prefix).unwrap().len(),
        2,
        "stop synced"
    );
    let replica = Replica::start(&pool, store.clone(), prefix.clone(), manual()).unwrap();
    assert_eq!(
        list_syncs(store.clone(), &prefix).unwrap().len(),
        3,
        "start syncs the image"
    );
    exec(&pool, "INSERT INTO t VALUES (1)");
    drop(replica);
    let syncs = list_syncs(store.clone(), &prefix).unwrap();
    assert_eq!(syncs.len(), 4, "drop synced");
    let dest = memory_pool().unwrap();
    dest.get()
        .unwrap()
        .restore_from_replica(store, &prefix, RestoreTarget::Latest)
        .unwrap();
    assert_eq!(
        common::scalar(&mut dest.get().unwrap(), "SELECT count(*) AS n FROM t"),
        1
    );
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Replica>();
}

/// Retention deletes the image (and deltas) a restore listed, before the listing reads their
/// headers or before the restore reads them: the restore loads the newest sync, instead of
/// failing on a missing object.
#[test]
fn a_restore_lists_again_when_retention_deletes_what_it_listed() {
    // 0: while listing (the first read is a header's); 1: after the listing.
    for reads_before in [0, 1] {
        retention_meanwhile(reads_before);
    }
}

fn retention_meanwhile(reads_before: usize) {
    let source: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let prefix = Path::from("meanwhile");
    let pool = memory_pool().unwrap();
    pad(&pool);
    let options = manual().compact_after(2).retain(Retain::Snapshots(1));
    let replica = Replica::start(&pool, source.clone(), prefix.clone(), options).unwrap();
    let objects = |store: &Arc<dyn ObjectStore>| -> Objects {
        let sizes = object_sizes(store, &prefix);
        sizes
            .into_iter()
            .map(|(p, _)| (p.clone(), get(store, &p)))
            .collect()
    };
    exec(&pool, "INSERT INTO t VALUES (1)");
    replica.sync_now().unwrap();
    let before = objects(&source);
    let first = Path::from("meanwhile/syncs/00000000000000000001.dsbr");
    let names =
        |objects: &Objects| -> Vec<String> { objects.iter().map(|(p, _)| p.to_string()).collect() };
    assert_eq!(
        names(&before).len(),
        2,
        "an image and a delta: {:?}",
        names(&before)
    );
    assert!(
        before.iter().any(|(p, _)| p == &first),
        "{:?}",
        names(&before)
    );
    // Until a newer image has made retention delete sync 1.
    for i in 2.. {
        exec(&pool, &format!("INSERT INTO t VALUES ({i})"));
        replica.sync_now().unwrap();
        if !objects(&source).iter().any(|(p, _)| p == &first) {
            break;
        }
        assert!(i < 50, "retention never dropped sync 1");
    }
    replica.stop().unwrap();
    let latest = list_syncs(source.clone(), &prefix)
        .unwrap()
        .last()
        .unwrap()
        .number;
    let want = pages(&mut pool.get().unwrap());

    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    for (at, bytes) in &before {
        put(&inner, at, bytes.clone());
    }
    let hooked = Hooked::new(inner, &prefix);
    *hooked.swap_on_read.lock().unwrap() = Some(SwapOnRead {
        trigger: first.clone(),
        reads_before,
        before: before.iter().map(|(p, _)| p.clone()).collect(),
        after: objects(&source),
    });
    let store: Arc<dyn ObjectStore> = hooked;
    let dest = memory_pool().unwrap();
    let info = dest
        .get()
        .unwrap()
        .restore_from_replica(store, &prefix, RestoreTarget::Latest)
        .unwrap();
    assert_eq!(info.sync, latest);
    same(&pages(&mut dest.get().unwrap()), &want, "the newest sync");
}

/// The store wiped under a running replica: its next sync is a whole image, so the store is
/// restorable again at once (a delta would have had nothing to apply to).
#[test]
fn a_store_wiped_under_a_replica_gets_a_whole_image_next() {
    for (name, store, _dir) in stores() {
        let prefix = Path::from("wiped");
        let pool = memory_pool().unwrap();
        pad(&pool);
        let replica = Replica::start(&pool, store.clone(), prefix.clone(), manual()).unwrap();
        exec(&pool, "INSERT INTO t VALUES (1)");
        replica.sync_now().unwrap();
        for (at, _) in object_sizes(&store, &prefix) {
            delete(&store, &at);
        }
        exec(&pool, "INSERT INTO t VALUES (2)");
        replica.sync_now().unwrap();
        let listed: Vec<u64> = list_syncs(store.clone(), &prefix)
            .unwrap()
            .iter()
            .map(|s| s.number)
            .collect();
        assert_eq!(listed, vec![3], "{name}");
        let dest = memory_pool().unwrap();
        let info = dest
            .get()
            .unwrap()
            .restore_from_replica(store.clone(), &prefix, RestoreTarget::Latest)
            .unwrap();
        assert_eq!(info.sync, 3, "{name}");
        same(
            &pages(&mut dest.get().unwrap()),
            &pages(&mut pool.get().unwrap()),
            name,
        );
        replica.stop().unwrap();
    }
}

/// The background schedule: a commit reaches the store without `sync_now`.
#[test]
fn commits_reach_the_store_on_their_own() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let prefix = Path::from("auto");
    let pool = memory_pool().unwrap();
    let options = ReplicaOptions::default()
        .every(Duration::from_millis(20))
        .quiet(Duration::ZERO);
    let replica = Replica::start(&pool, store.clone(), prefix.clone(), options).unwrap();
    exec(&pool, "CREATE TABLE t(x)");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while list_syncs(store.clone(), &prefix).unwrap().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "never synced");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(replica.syncs(), 2);
}

/// Compaction writes a whole image every few syncs; retention then drops everything
/// before the images it keeps, oldest first, and the latest sync stays restorable.
#[test]
fn retention_keeps_the_latest_restorable() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let prefix = Path::from("retain");
    let pool = memory_pool().unwrap();
    let options = manual().compact_after(3).retain(Retain::Snapshots(2));
    pad(&pool);
    let replica = Replica::start(&pool, store.clone(), prefix.clone(), options).unwrap();
    for i in 0..20 {
        exec(&pool, &format!("INSERT INTO t VALUES ({i})"));
        replica.sync_now().unwrap();
    }
    replica.stop().unwrap();
    let numbers: Vec<u64> = list_syncs(store.clone(), &prefix)
        .unwrap()
        .iter()
        .map(|s| s.number)
        .collect();
    // What is left starts at the older of the two images kept, and ends at the last sync.
    let objects: Vec<String> = object_sizes(&store, &prefix)
        .into_iter()
        .map(|(p, _)| p.to_string())
        .collect();
    let images: Vec<&String> = objects
        .iter()
        .filter(|p| p.contains("/snapshots/"))
        .collect();
    assert_eq!(images.len(), 2, "{objects:?}");
    let oldest = format!("retain/snapshots/{:020}.dsbr", numbers[0]);
    assert_eq!(images[0], &oldest, "{objects:?}");
    assert_eq!(*numbers.last().unwrap(), 21);
    assert!(numbers.len() > 2, "deltas between the images: {objects:?}");
    assert_eq!(
        objects.len(),
        numbers.len() + 2,
        "nothing older is left: {objects:?}"
    );
    let dest = memory_pool().unwrap();
    let info = dest
        .get()
        .unwrap()
        .restore_from_replica(store.clone(), &prefix, RestoreTarget::Latest)
        .unwrap();
    assert_eq!(info.sync, 21);
    assert_eq!(
        common::scalar(&mut dest.get().unwrap(), "SELECT count(*) AS n FROM t"),
        20
    );
    // A damaged compaction image: the restore goes back to the older one and the deltas.
    let image = Path::from(images[1].as_str());
    let mut bad = get(&store, &image);
    bad[100] ^= 1;
    put(&store, &image, bad);
    let info = dest
        .get()
        .unwrap()
        .restore_from_replica(store.clone(), &prefix, RestoreTarget::Latest)
        .unwrap();
    assert_eq!(info.sync, 21);
    assert_eq!(
        common::scalar(&mut dest.get().unwrap(), "SELECT count(*) AS n FROM t"),
        20
    );
}

/// Two replicas on one prefix: the one that finds its sync number taken fails, clearly,
/// and the history stays the other's.
#[test]
fn two_replicas_on_one_prefix_do_not_mix() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let prefix = Path::from("two");
    let (a, b) = (memory_pool().unwrap(), memory_pool().unwrap());
    exec(&a, "CREATE TABLE a(x)");
    exec(&b, "CREATE TABLE b(x)");
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let options = manual().on_error({
        let errors = errors.clone();
        move |e| errors.lock().unwrap().push(e.to_string())
    });
    let first = Replica::start(&a, store.clone(), prefix.clone(), options).unwrap();
    let second = Replica::start(&b, store.clone(), prefix.clone(), manual()).unwrap();
    exec(&a, "INSERT INTO a VALUES (1)");
    let err = first.sync_now().unwrap_err();
    assert!(matches!(err, BackupError::InvalidInput { .. }), "{err}");
    assert!(
        err.to_string().contains("another replica wrote sync 2"),
        "{err}"
    );
    exec(&a, "INSERT INTO a VALUES (2)");
    assert!(first.sync_now().is_err(), "it stays stopped");
    exec(&b, "INSERT INTO b VALUES (1)");
    second.sync_now().unwrap();
    drop(first);
    second.stop().unwrap();
    let dest = memory_pool().unwrap();
    let info = dest
        .get()
        .unwrap()
        .restore_from_replica(store, &prefix, RestoreTarget::Latest)
        .unwrap();
    assert_eq!(info.sync, 3);
    assert_eq!(
        common::scalar(&mut dest.get().unwrap(), "SELECT count(*) AS n FROM b"),
        1
    );
}

/// The blocking calls work from inside a Tokio runtime's `spawn_blocking` and from an async
/// task alike.
#[test]
fn works_from_inside_a_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let prefix = Path::from("rt");
    let pool = memory_pool().unwrap();
    exec(&pool, "CREATE TABLE t(x)");
    let replica = rt
        .block_on({
            let (pool, store, prefix) = (pool.clone(), store.clone(), prefix.clone());
            async move { Replica::start(&pool, store, prefix, manual()) }
        })
        .unwrap();
    exec(&pool, "INSERT INTO t VALUES (1)");
    let replica = rt
        .block_on(async move {
            tokio::task::spawn_blocking(move || {
                replica.sync_now().unwrap();
                replica
            })
            .await
        })
        .unwrap();
    replica.stop().unwrap();
    let syncs = rt
        .block_on({
            let (store, prefix) = (store.clone(), prefix.clone());
            async move { list_syncs(store, &prefix) }
        })
        .unwrap();
    assert_eq!(syncs.len(), 2);
}

/// An Open into the replicated database (`restore_from` of a file, through SQLite's backup,
/// whose writes the incremental saves' record leaves out) reaches the store like any commit.
#[test]
fn an_open_into_the_replicated_database_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let prefix = Path::from("open");
    let other = memory_pool().unwrap();
    exec(
        &other,
        "CREATE TABLE doc(body BLOB);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 300)
         INSERT INTO doc SELECT randomblob(700) FROM s;",
    );
    let file = dir.path().join("doc.db");
    other.get().unwrap().save_as(&file).unwrap();
    let pool = memory_pool().unwrap();
    exec(
        &pool,
        "CREATE TABLE mine(body BLOB);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 100)
         INSERT INTO mine SELECT randomblob(500) FROM s;",
    );
    let replica = Replica::start(&pool, store.clone(), prefix.clone(), manual()).unwrap();
    pool.get().unwrap().restore_from(&file).unwrap();
    replica.sync_now().unwrap(); // sync 2: a delta of the pages the Open wrote
    let opened = pages(&mut pool.get().unwrap());
    exec(&pool, "DELETE FROM doc WHERE rowid % 2 = 0");
    replica.sync_now().unwrap();
    let edited = pages(&mut pool.get().unwrap());
    replica.stop().unwrap();
    for (sync, want) in [(2, opened), (3, edited)] {
        let dest = target_pool();
        dest.get()
            .unwrap()
            .restore_from_replica(store.clone(), &prefix, RestoreTarget::Sync(sync))
            .unwrap();
        same(
            &pages(&mut dest.get().unwrap()),
            &want,
            &format!("sync {sync}"),
        );
    }
}

/// Figures for docs/replica.md (not a check: run with `--ignored --nocapture`). A database
/// of `DSB_REPLICA_MIB` MiB (default 64): bytes uploaded for a 1% change against the bytes
/// of the pages it changed, and restore times from a folder against `restore_from`.
#[test]
#[ignore]
fn figures() {
    use std::time::Instant;
    let mib: usize = std::env::var("DSB_REPLICA_MIB").map_or(64, |v| v.parse().unwrap());
    let rows = mib * 1024; // 1 KiB each
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let prefix = Path::from("figures");
    let pool = memory_pool().unwrap();
    exec(
        &pool,
        &format!(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {rows})
             INSERT INTO t(body) SELECT randomblob(1000) FROM s;"
        ),
    );
    let replica = Replica::start(&pool, store.clone(), prefix.clone(), manual()).unwrap();
    let mut uploaded = 0u64;
    let mut changed = 0u64;
    for round in 0..100u64 {
        let before = pool.get().unwrap().snapshot().unwrap().into_vec();
        // 1% of the rows, spread over the table.
        exec(
            &pool,
            &format!(
                "UPDATE t SET body = randomblob(1000) WHERE id % 100 = {}",
                round % 100
            ),
        );
        replica.sync_now().unwrap();
        let after = pool.get().unwrap().snapshot().unwrap().into_vec();
        let pages = before
            .chunks(4096)
            .zip(after.chunks(4096))
            .filter(|(a, b)| a != b)
            .count();
        changed += pages as u64 * 4096;
        let object = Path::from(format!("figures/syncs/{:020}.dsbr", round + 2));
        uploaded += get(&store, &object).len() as u64;
        if round == 0 {
            println!(
                "1% change: {pages} pages changed, object of {} bytes",
                get(&store, &object).len()
            );
        }
    }
    replica.stop().unwrap();
    println!(
        "100 syncs of a 1% change: {uploaded} bytes uploaded for {changed} bytes of changed pages \
         (page 1 included in the upload): ratio {:.4}",
        uploaded as f64 / changed as f64
    );
    let file = dir.path().join("same.db");
    pool.get().unwrap().save_as(&file).unwrap();
    let dest = memory_pool().unwrap();
    let time = |f: &dyn Fn()| {
        let start = Instant::now();
        f();
        start.elapsed()
    };
    let from_file = time(&|| dest.get().unwrap().restore_from(&file).unwrap());
    let latest = time(&|| {
        dest.get()
            .unwrap()
            .restore_from_replica(store.clone(), &prefix, RestoreTarget::Latest)
            .map(drop)
            .unwrap()
    });
    let middle = time(&|| {
        dest.get()
            .unwrap()
            .restore_from_replica(store.clone(), &prefix, RestoreTarget::Sync(50))
            .map(drop)
            .unwrap()
    });
    println!(
        "{mib} MiB: restore_from {from_file:?}; Latest after 100 syncs {latest:?} ({:.2}x); \
         Sync(50) {middle:?} ({:.2}x)",
        latest.as_secs_f64() / from_file.as_secs_f64(),
        middle.as_secs_f64() / from_file.as_secs_f64()
    );
    // A writer loop, alone and beside a replica on its defaults, alternating.
    let commits = |pool: &common::Pool| {
        let mut c = pool.get().unwrap();
        let start = Instant::now();
        for _ in 0..150000 {
            c.batch_execute(
                "UPDATE t SET body = randomblob(1000) WHERE id = abs(random()) % 60000 + 1",
            )
            .unwrap();
        }
        start.elapsed()
    };
    let (mut alone, mut beside) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..3 {
        alone += commits(&pool);
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        // DSB_REPLICA_EVERY_MS=3600000: the cost of a replica that does not sync.
        let every = std::env::var("DSB_REPLICA_EVERY_MS").map_or(1000, |v| v.parse().unwrap());
        let options = ReplicaOptions::default().every(Duration::from_millis(every));
        let replica = Replica::start(&pool, store, Path::from("writers"), options).unwrap();
        beside += commits(&pool);
        println!("syncs during 150000 commits: {}", replica.syncs());
        replica.stop().unwrap();
    }
    println!(
        "450000 commits: alone {alone:?}, beside a replica {beside:?}: {:.1}% slower",
        (beside.as_secs_f64() / alone.as_secs_f64() - 1.0) * 100.0
    );
}

/// Feature `replica-zstd`: compressed objects restore the same, and a text-heavy database
/// takes less room.
#[cfg(feature = "replica-zstd")]
#[test]
fn zstd_objects_round_trip_and_are_smaller() {
    use diesel_sqlite_backup::Compression;
    let sizes = |compression: Compression| {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let prefix = Path::from("z");
        let pool = memory_pool().unwrap();
        exec(
            &pool,
            "CREATE TABLE t(body TEXT);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 500)
             INSERT INTO t SELECT 'the same words again ' || i FROM s;",
        );
        let options = manual().compression(compression);
        let replica = Replica::start(&pool, store.clone(), prefix.clone(), options).unwrap();
        exec(
            &pool,
            "UPDATE t SET body = body || '!' WHERE rowid % 50 = 0",
        );
        replica.sync_now().unwrap();
        replica.stop().unwrap();
        let want = pages(&mut pool.get().unwrap());
        let dest = target_pool();
        dest.get()
            .unwrap()
            .restore_from_replica(store.clone(), &prefix, RestoreTarget::Latest)
            .unwrap();
        same(
            &pages(&mut dest.get().unwrap()),
            &want,
            &format!("{compression:?}"),
        );
        object_sizes(&store, &prefix)
            .iter()
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    let (plain, packed) = (sizes(Compression::None), sizes(Compression::Zstd(3)));
    assert!(packed * 3 < plain, "zstd {packed} bytes, plain {plain}");
}

/// Restores in tight loops (`Latest`, `At`, `Sync` of a listed number, `list_syncs`) while
/// writers move money and a replica syncs as fast as it can, compacting and dropping all but
/// the newest image every sync or two: every restore that succeeds is a sound ledger of a
/// sync that existed, every failure keeps the old data and is a restore's error, and
/// neither `Latest` nor `list_syncs` ever fails for what retention deleted meanwhile
/// (ported from an adversarial review's race test).
#[test]
fn restores_racing_retention_get_a_sync_that_existed() {
    const ACCOUNTS: i64 = 100;
    for compact in [1, 2] {
        for (name, store, _dir) in stores() {
            let pool = common::pool_of(4);
            exec(
                &pool,
                &format!(
                    "CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER, pad BLOB);
                     WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {ACCOUNTS})
                     INSERT INTO acct SELECT i, 1000, randomblob(1500) FROM s;"
                ),
            );
            let prefix = Path::from("race");
            let options = ReplicaOptions::default()
                .every(Duration::from_millis(5))
                .quiet(Duration::from_millis(1))
                .retain(Retain::Snapshots(1))
                .compact_after(compact)
                .on_error(|_| {});
            let replica = Replica::start(&pool, store.clone(), prefix.clone(), options).unwrap();
            let stop = AtomicBool::new(false);
            let started = SystemTime::now();
            let bad = Mutex::new(Vec::<String>::new());
            let check = |c: &mut SqliteConnection| -> Result<(), String> {
                let sum = common::scalar(c, "SELECT sum(bal) AS n FROM acct");
                match (common::integrity_of(c).as_str(), sum) {
                    ("ok", s) if s == ACCOUNTS * 1000 => Ok(()),
                    (integrity, s) => Err(format!("integrity {integrity}, total {s}")),
                }
            };
            std::thread::scope(|s| {
                for w in 0..2u64 {
                    let (pool, stop) = (&pool, &stop);
                    s.spawn(move || {
                        let mut c = pool.get().unwrap();
                        let mut i = w;
                        while !stop.load(Ordering::Relaxed) {
                            let (a, b) = ((i * 7) % 100 + 1, (i * 13 + 5) % 100 + 1);
                            c.batch_execute(&format!(
                                "BEGIN IMMEDIATE;
                                 UPDATE acct SET bal = bal - 1, pad = randomblob(1500) WHERE id = {a};
                                 UPDATE acct SET bal = bal + 1 WHERE id = {b}; COMMIT;"
                            ))
                            .unwrap();
                            i += 2;
                        }
                    });
                }
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = replica.sync_now();
                    }
                });
                let restorers: Vec<_> = (0..2u64)
                    .map(|r| {
                        let (store, prefix, bad, check) = (store.clone(), &prefix, &bad, &check);
                        s.spawn(move || {
                            for i in 0..60u64 {
                                let listed = list_syncs(store.clone(), prefix).unwrap();
                                let Some(last) = listed.last() else {
                                    bad.lock().unwrap().push("list_syncs empty".into());
                                    continue;
                                };
                                let target = match (i + r) % 3 {
                                    0 => RestoreTarget::Latest,
                                    1 => RestoreTarget::At(SystemTime::now()),
                                    _ => RestoreTarget::Sync(last.number),
                                };
                                let dest = memory_pool().unwrap();
                                let mut c = dest.get().unwrap();
                                c.batch_execute("CREATE TABLE old(x); INSERT INTO old VALUES (1)")
                                    .unwrap();
                                match c.restore_from_replica(store.clone(), prefix, target) {
                                    Ok(info) => {
                                        if let Err(e) = check(&mut c) {
                                            bad.lock()
                                                .unwrap()
                                                .push(format!("sync {}: {e}", info.sync));
                                        }
                                    }
                                    Err(e) => {
                                        let kept =
                                            common::scalar(&mut c, "SELECT count(*) AS n FROM old");
                                        let restore = e.to_string().starts_with("restore");
                                        let latest = target == RestoreTarget::Latest;
                                        if latest || kept != 1 || !restore {
                                            bad.lock().unwrap().push(format!("{target:?}: {e}"));
                                        }
                                    }
                                }
                            }
                        })
                    })
                    .collect();
                for r in restorers {
                    r.join().unwrap();
                }
                stop.store(true, Ordering::Relaxed);
            });
            replica.stop().unwrap();
            let bad = bad.into_inner().unwrap();
            assert!(bad.is_empty(), "{name}, compact_after({compact}): {bad:?}");
            let dest = memory_pool().unwrap();
            let info = dest
                .get()
                .unwrap()
                .restore_from_replica(store.clone(), &prefix, RestoreTarget::Latest)
                .unwrap();
            assert!(info.time >= started);
            check(&mut dest.get().unwrap()).unwrap();
        }
    }
}
