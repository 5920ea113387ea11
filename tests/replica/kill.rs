//! A process that replicates while writers commit is SIGKILLed at spread-out moments (50
//! times; 500 with DSB_LONG=1); after each kill the store restores `Latest` to a sound
//! database that holds the writers' invariant, and each new process goes on with the same
//! history.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_sqlite_backup::{
    list_syncs, memory_pool, BackupExt, Replica, ReplicaOptions, RestoreTarget,
};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::ObjectStore;

const CHILD: &str = "DSB_REPLICA_KILL_DIR";

/// In the child: replicate a ledger to the folder while committing, until killed.
#[test]
fn replica_child() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(&dir).unwrap());
    let pool = crate::common::pool_of(2);
    let prefix = Path::from("kill");
    // Each life goes on from the store's latest state, as an app would after a crash.
    if !list_syncs(store.clone(), &prefix).unwrap().is_empty() {
        pool.get()
            .unwrap()
            .restore_from_replica(store.clone(), &prefix, RestoreTarget::Latest)
            .unwrap();
    } else {
        super::ledger(&pool);
    }
    let options = ReplicaOptions::default()
        .every(Duration::from_millis(3))
        .quiet(Duration::ZERO)
        .compact_after(7)
        .on_error(|e| eprintln!("child replica error: {e}"));
    let _replica = Replica::start(&pool, store, prefix, options).unwrap();
    println!("started");
    let mut c = pool.get().unwrap();
    loop {
        super::add_item(&mut c);
    }
}

#[test]
fn sigkill_mid_upload_leaves_the_store_restorable() {
    let dir = tempfile::tempdir().unwrap();
    let kills = if std::env::var("DSB_LONG").is_ok() {
        500
    } else {
        50
    };
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let prefix = Path::from("kill");
    let mut latest = 0;
    let mut items = 0;
    for i in 0..kills {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kill::replica_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait for its first sync, then a spread-out moment (0 to 150 ms).
        let mut out = child.stdout.take().unwrap();
        let mut seen = Vec::new();
        let started = Instant::now();
        while !String::from_utf8_lossy(&seen).contains("started") {
            let mut buf = [0u8; 256];
            let n = std::io::Read::read(&mut out, &mut buf).unwrap();
            assert!(n > 0, "child {i} ended before starting");
            seen.extend_from_slice(&buf[..n]);
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "child {i} hangs"
            );
        }
        std::thread::sleep(Duration::from_millis((i * 37 % 150) as u64));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let dest = memory_pool().unwrap();
        let info = dest
            .get()
            .unwrap()
            .restore_from_replica(store.clone(), &prefix, RestoreTarget::Latest)
            .unwrap_or_else(|e| panic!("after kill {i}: {e}"));
        let (n, total) = super::ledger_of(&mut dest.get().unwrap());
        assert_eq!(n, total, "after kill {i}: sync {} is torn", info.sync);
        assert!(
            info.sync > latest,
            "after kill {i}: sync {} after {latest}",
            info.sync
        );
        assert!(total >= items, "after kill {i}: commits lost");
        (latest, items) = (info.sync, total);
    }
    println!("{kills} kills, {latest} syncs, {items} items");
}
