//! The replica against a real S3-protocol server: `moto_server` (PyPI's `moto[server]`),
//! installed with pip if missing and started on 127.0.0.1 by the test itself. Under
//! `CI=true` a server that cannot be installed or started fails the test; elsewhere it is
//! skipped with a message.
//!
//! To run the same tests against real S3 (or any S3-compatible store) instead, set
//! `DSB_S3_BUCKET` and the usual `AWS_*` variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT` for non-AWS stores); each run
//! writes under a fresh prefix.
#![cfg(feature = "replica-s3")]

mod common;

use std::io::{BufRead, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use diesel::connection::SimpleConnection;
use diesel_sqlite_backup::{
    list_syncs, memory_pool, BackupExt, Replica, ReplicaOptions, RestoreTarget,
};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

const HOUR: Duration = Duration::from_secs(3600);

/// A moto_server child on a free port, killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn unavailable(why: &str) -> Option<Moto> {
    assert!(
        !ci(),
        "CI=true needs an S3 server for the replica tests: {why}"
    );
    eprintln!("skipped: {why} (pip install 'moto[server]' to run the S3 tests)");
    None
}

fn has_moto() -> bool {
    Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs moto_server if missing, starts it and makes bucket `dsb-replica`.
fn moto() -> Option<Moto> {
    if !has_moto() {
        let _ = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "moto[server]"])
            .status();
        if !has_moto() {
            return unavailable("moto_server is not installed and pip could not install it");
        }
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    moto_on(port)
}

/// Starts moto_server on `port` (it keeps nothing: a new one is an empty store) and makes
/// bucket `dsb-replica`.
fn moto_on(port: u16) -> Option<Moto> {
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        return unavailable("moto_server did not start");
    };
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(port, "PUT /dsb-replica HTTP/1.1").is_none() {
        if Instant::now() > deadline {
            return unavailable("moto_server did not answer within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(moto)
}

/// One bodiless request; the status line of the answer.
fn http(port: u16, request: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{request}\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    // The status line is enough (the server may keep the connection open).
    let mut status = String::new();
    std::io::BufReader::new(s).read_line(&mut status).ok()?;
    status.contains(" 200 ").then_some(status)
}

/// The store, a fresh prefix, and the server keeping it (none for real S3).
fn s3(timeout: Duration) -> Option<(Arc<dyn ObjectStore>, Path, Option<Moto>)> {
    let options = ClientOptions::new()
        .with_allow_http(true)
        .with_timeout(timeout)
        .with_connect_timeout(timeout);
    let retry = RetryConfig {
        max_retries: 1,
        retry_timeout: timeout,
        ..Default::default()
    };
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = Path::from(format!("dsb-test/{nanos}"));
    if let Ok(bucket) = std::env::var("DSB_S3_BUCKET") {
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_client_options(options)
            .with_retry(retry)
            .build()
            .unwrap();
        return Some((Arc::new(store), prefix, None));
    }
    let moto = moto()?;
    let store = AmazonS3Builder::new()
        .with_endpoint(format!("http://127.0.0.1:{}", moto.port))
        .with_bucket_name("dsb-replica")
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_client_options(options)
        .with_retry(retry)
        .build()
        .unwrap();
    Some((Arc::new(store), prefix, Some(moto)))
}

fn add_item(c: &mut diesel::SqliteConnection) {
    c.batch_execute(
        "BEGIN IMMEDIATE; INSERT INTO item(body) VALUES (hex(randomblob(200)));
         UPDATE total SET n = n + 1; COMMIT;",
    )
    .unwrap();
}

fn ledger_of(c: &mut diesel::SqliteConnection) -> (i64, i64) {
    assert_eq!(common::integrity_of(c), "ok");
    let items = common::scalar(c, "SELECT count(*) AS n FROM item");
    (items, common::scalar(c, "SELECT n FROM total"))
}

/// A pool holding the ledger `add_item` keeps, and `pad_pages` pages of padding.
fn ledger(pad_pages: u32) -> common::Pool {
    let pool = memory_pool().unwrap();
    pool.get()
        .unwrap()
        .batch_execute(&format!(
            "CREATE TABLE item(id INTEGER PRIMARY KEY, body TEXT);
             CREATE TABLE total(n INTEGER); INSERT INTO total VALUES (0);
             CREATE TABLE pad(x);
             WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {pad_pages})
             INSERT INTO pad SELECT randomblob(3000) FROM s WHERE {pad_pages} > 0;"
        ))
        .unwrap();
    pool
}

/// Options that sync 50 ms after each commit, and the errors they are given.
fn syncing_often() -> (ReplicaOptions, Arc<Mutex<Vec<String>>>) {
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let options = ReplicaOptions::default()
        .every(Duration::from_millis(50))
        .quiet(Duration::ZERO)
        .on_error({
            let errors = errors.clone();
            move |e| errors.lock().unwrap().push(e.to_string())
        });
    (options, errors)
}

fn manual() -> ReplicaOptions {
    ReplicaOptions::default().every(HOUR).quiet(HOUR)
}

/// Syncs through S3's protocol, with compaction; every sync restores to a sound ledger, a
/// flipped byte is named, and a second replica on the prefix is refused by S3's
/// conditional PUT.
#[test]
fn replica_over_s3() {
    let Some((store, prefix, _moto)) = s3(Duration::from_secs(30)) else {
        return;
    };
    let pool = memory_pool().unwrap();
    pool.get()
        .unwrap()
        .batch_execute(
            "CREATE TABLE item(id INTEGER PRIMARY KEY, body TEXT);
             CREATE TABLE total(n INTEGER); INSERT INTO total VALUES (0);",
        )
        .unwrap();
    let replica = Replica::start(
        &pool,
        store.clone(),
        prefix.clone(),
        manual().compact_after(4),
    )
    .unwrap();
    for _ in 0..10 {
        let mut c = pool.get().unwrap();
        for _ in 0..20 {
            add_item(&mut c);
        }
        replica.sync_now().unwrap();
    }
    let syncs = list_syncs(store.clone(), &prefix).unwrap();
    assert_eq!(syncs.len(), 11);
    for s in &syncs {
        let dest = memory_pool().unwrap();
        let mut c = dest.get().unwrap();
        let info = c
            .restore_from_replica(store.clone(), &prefix, RestoreTarget::Sync(s.number))
            .unwrap();
        assert_eq!(info.time, s.time);
        let (items, total) = ledger_of(&mut c);
        assert_eq!(
            (items, total),
            (20 * (s.number as i64 - 1), 20 * (s.number as i64 - 1))
        );
    }
    // A second replica on the same prefix: S3's If-None-Match refuses its sync numbers.
    let other = memory_pool().unwrap();
    let second = Replica::start(&other, store.clone(), prefix.clone(), manual()).unwrap();
    add_item(&mut pool.get().unwrap());
    let err = replica.sync_now().unwrap_err();
    assert!(
        err.to_string().contains("another replica wrote sync 12"),
        "{err}"
    );
    drop(second);
    drop(replica);
    // One byte flipped in sync 11's object (and compaction's image of it, if any, gone):
    // named, and the old data kept.
    let latest = list_syncs(store.clone(), &prefix)
        .unwrap()
        .last()
        .unwrap()
        .number;
    assert_eq!(latest, 12);
    let at = Path::from(format!("{prefix}/syncs/{:020}.dsbr", 11));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let image = Path::from(format!("{prefix}/snapshots/{:020}.dsbr", 11));
    let _ = rt.block_on(store.delete(&image));
    let mut bytes = rt.block_on(async {
        store
            .get(&at)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    });
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    rt.block_on(store.put(&at, PutPayload::from(bytes)))
        .unwrap();
    let dest = memory_pool().unwrap();
    dest.get()
        .unwrap()
        .batch_execute("CREATE TABLE kept(x)")
        .unwrap();
    let err = dest
        .get()
        .unwrap()
        .restore_from_replica(store.clone(), &prefix, RestoreTarget::Sync(11))
        .unwrap_err();
    assert!(err.to_string().contains(at.as_ref()), "{err}");
    common::scalar(&mut dest.get().unwrap(), "SELECT count(*) AS n FROM kept");
}

/// The server stops answering mid-run (SIGSTOP), then resumes: the failures reach
/// `on_error` or `sync_now`, nothing is lost, and the next sync catches up.
#[test]
fn replica_survives_a_server_outage() {
    let Some((store, prefix, moto)) = s3(Duration::from_secs(2)) else {
        return;
    };
    let Some(moto) = moto else {
        return; // real S3 cannot be paused
    };
    let pool = ledger(0);
    let (options, _errors) = syncing_often();
    let replica = Replica::start(&pool, store.clone(), prefix.clone(), options).unwrap();
    let pid = moto.child.id().to_string();
    let signal = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success())
    };
    for round in 0..3 {
        add_item(&mut pool.get().unwrap());
        replica.sync_now().unwrap();
        signal("-STOP");
        let mut c = pool.get().unwrap();
        for _ in 0..10 {
            add_item(&mut c);
        }
        let err = replica.sync_now().unwrap_err();
        assert!(
            err.to_string().contains(prefix.as_ref()),
            "round {round}: {err}"
        );
        signal("-CONT");
        replica.sync_now().unwrap();
        let dest = memory_pool().unwrap();
        let mut d = dest.get().unwrap();
        d.restore_from_replica(store.clone(), &prefix, RestoreTarget::Latest)
            .unwrap();
        assert_eq!(
            ledger_of(&mut d),
            ledger_of(&mut c),
            "round {round}: caught up"
        );
    }
    replica.stop().unwrap();
    drop(moto);
}

/// The server is killed mid-run and a new one started on the same address (moto keeps
/// objects in memory, so the store comes back empty): the failures reach `sync_now` and
/// `on_error`, nothing committed is lost, and the next sync, finding its last sync gone,
/// uploads a whole image that restores to the source.
#[test]
fn replica_survives_a_server_restart() {
    let Some((store, prefix, moto)) = s3(Duration::from_secs(2)) else {
        return;
    };
    let Some(moto) = moto else {
        return; // real S3 cannot be restarted
    };
    // Padding, so that the syncs after the restart are deltas, not whole images.
    let pool = ledger(100);
    let (options, errors) = syncing_often();
    let replica = Replica::start(&pool, store.clone(), prefix.clone(), options).unwrap();
    let mut c = pool.get().unwrap();
    for _ in 0..5 {
        add_item(&mut c);
        replica.sync_now().unwrap();
    }
    let port = moto.port;
    drop(moto); // killed
    for _ in 0..10 {
        add_item(&mut c);
    }
    let err = replica.sync_now().unwrap_err();
    assert!(err.to_string().contains(prefix.as_ref()), "{err}");
    // The background syncs fail too, and say so.
    let deadline = Instant::now() + Duration::from_secs(60);
    add_item(&mut c);
    while errors.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no failure reached on_error");
        std::thread::sleep(Duration::from_millis(20));
    }
    let Some(_moto) = moto_on(port) else {
        return;
    };
    replica.sync_now().unwrap();
    // Restorable only if the new store's first sync is a whole image.
    let syncs = list_syncs(store.clone(), &prefix).unwrap();
    assert!(syncs.first().is_some_and(|s| s.number > 6), "{syncs:?}");
    let dest = memory_pool().unwrap();
    let mut d = dest.get().unwrap();
    d.restore_from_replica(store.clone(), &prefix, RestoreTarget::Latest)
        .unwrap();
    assert_eq!(ledger_of(&mut d), ledger_of(&mut c), "caught up");
    assert_eq!(ledger_of(&mut d).1, 16);
    replica.stop().unwrap();
}
