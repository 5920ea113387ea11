//! A running replica's chain broken under it: the store wiped (between syncs, between its
//! check and its PUT, concurrently, after a failed PUT or a lost answer), its image or last
//! sync deleted, garbage or another replica's object in their place. After each, the next
//! sync leaves `Latest` restorable to the source (or the replica stops, for another
//! replica's object), and every sync `list_syncs` lists restores. Ported from an
//! adversarial review.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use diesel_sqlite_backup::{
    list_syncs, memory_pool, BackupExt, Replica, ReplicaOptions, RestoreTarget,
};
use object_store::path::Path;
use object_store::ObjectStore;

use super::hooked::Hooked;
use super::{delete, exec, get, manual, object_sizes, pad, pages, put, reference, stores};

/// `manual()`, with failures expected: they are printed, not a panic.
fn quiet_manual() -> ReplicaOptions {
    manual().on_error(|e| eprintln!("on_error: {e}"))
}

fn wipe(store: &Arc<dyn ObjectStore>, prefix: &Path) {
    for (at, _) in object_sizes(store, prefix) {
        delete(store, &at);
    }
}

fn sync_path(prefix: &Path, dir: &str, n: u64) -> Path {
    Path::from(format!("{prefix}/{dir}/{n:020}.dsbr"))
}

/// What the source holds now, as a restore must give it.
fn want(pool: &crate::common::Pool) -> Vec<u8> {
    reference(&pool.get().unwrap().snapshot().unwrap().into_vec())
}

/// `Latest` restores exactly `want`, or fails keeping the old data: the error's text.
fn check_latest(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
    want: &[u8],
    what: &str,
) -> Result<u64, String> {
    let dest = memory_pool().unwrap();
    exec(
        &dest,
        "CREATE TABLE old(x); INSERT INTO old VALUES ('kept');",
    );
    let mut c = dest.get().unwrap();
    match c.restore_from_replica(store.clone(), prefix, RestoreTarget::Latest) {
        Ok(info) => {
            assert!(
                pages(&mut c) == want,
                "{what}: Latest (sync {}) is not the source",
                info.sync
            );
            Ok(info.sync)
        }
        Err(e) => {
            let kept = crate::common::scalar(&mut c, "SELECT count(*) AS n FROM old");
            assert_eq!(kept, 1, "{what}: old data kept");
            Err(e.to_string())
        }
    }
}

/// Every sync `list_syncs` lists restores.
fn check_listed(store: &Arc<dyn ObjectStore>, prefix: &Path, what: &str) -> Vec<u64> {
    let listed: Vec<u64> = list_syncs(store.clone(), prefix)
        .unwrap()
        .iter()
        .map(|s| s.number)
        .collect();
    for &n in &listed {
        let dest = memory_pool().unwrap();
        let r =
            dest.get()
                .unwrap()
                .restore_from_replica(store.clone(), prefix, RestoreTarget::Sync(n));
        assert!(
            r.is_ok(),
            "{what}: sync {n} of {listed:?} is listed but does not restore: {r:?}"
        );
    }
    listed
}

/// A replica on `store` (directly, or through a `Hooked` over it), syncs 1 (an image) and 2
/// (a delta) made.
fn started(store: &Arc<dyn ObjectStore>, prefix: &Path) -> (crate::common::Pool, Replica) {
    let pool = memory_pool().unwrap();
    pad(&pool);
    let replica = Replica::start(&pool, store.clone(), prefix.clone(), quiet_manual()).unwrap();
    exec(&pool, "INSERT INTO t VALUES (1)");
    replica.sync_now().unwrap();
    (pool, replica)
}

/// `rounds` more commits, each synced: after every one, `Latest` is the source and every
/// listed sync restores.
fn recovers(
    pool: &crate::common::Pool,
    replica: &Replica,
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
    what: &str,
    rounds: u32,
) {
    for i in 0..rounds {
        exec(pool, &format!("INSERT INTO t VALUES ({i} + 100)"));
        replica.sync_now().unwrap();
        let got = check_latest(store, prefix, &want(pool), what);
        assert!(got.is_ok(), "{what}: after sync {i}: {got:?}");
        check_listed(store, prefix, what);
    }
}

#[test]
fn wiped_between_syncs() {
    for (name, store, _dir) in stores() {
        let prefix = Path::from("w");
        let (pool, replica) = started(&store, &prefix);
        for round in 0..4 {
            wipe(&store, &prefix);
            recovers(
                &pool,
                &replica,
                &store,
                &prefix,
                &format!("{name} round {round}"),
                2,
            );
        }
        replica.stop().unwrap();
    }
}

#[test]
fn the_last_sync_deleted() {
    for (name, store, _dir) in stores() {
        let prefix = Path::from("l");
        let (pool, replica) = started(&store, &prefix);
        exec(&pool, "INSERT INTO t VALUES (2)");
        replica.sync_now().unwrap();
        delete(&store, &sync_path(&prefix, "syncs", 3));
        recovers(&pool, &replica, &store, &prefix, name, 1);
        assert_eq!(check_listed(&store, &prefix, name), vec![1, 2, 4], "{name}");
        replica.stop().unwrap();
    }
}

#[test]
fn the_image_deleted() {
    for (name, store, _dir) in stores() {
        let prefix = Path::from("i");
        let (pool, replica) = started(&store, &prefix);
        delete(&store, &sync_path(&prefix, "syncs", 1));
        recovers(&pool, &replica, &store, &prefix, name, 3);
        replica.stop().unwrap();
    }
}

/// Another replica's object in place of the last sync: this one stops, and `Latest` is
/// never a mix of the two.
#[test]
fn another_replicas_object_in_place_of_the_last() {
    for (name, store, _dir) in stores() {
        let (prefix, other) = (Path::from("f"), Path::from("other"));
        let (pool, replica) = started(&store, &prefix);
        let (_pool2, second) = started(&store, &other);
        second.stop().unwrap();
        let before = want(&pool);
        let last = sync_path(&prefix, "syncs", 2);
        delete(&store, &last);
        put(&store, &last, get(&store, &sync_path(&other, "syncs", 2)));
        exec(&pool, "INSERT INTO t VALUES (3)");
        let err = replica.sync_now().unwrap_err();
        assert!(err.to_string().contains("another replica"), "{name}: {err}");
        assert!(replica.sync_now().is_err(), "{name}: stays stopped");
        let _ = check_latest(&store, &prefix, &before, name);
        check_listed(&store, &prefix, name);
        let _ = replica.stop();
    }
}

#[test]
fn garbage_in_place_of_the_last() {
    for len in [10usize, 71, 72, 200, 5000] {
        for (name, store, _dir) in stores() {
            let name = format!("{name}, {len} bytes of garbage");
            let prefix = Path::from("g");
            let (pool, replica) = started(&store, &prefix);
            let mut garbage = vec![0xA5u8; len];
            if len >= 8 {
                garbage[..8].copy_from_slice(b"DSBREPL1");
            }
            let last = sync_path(&prefix, "syncs", 2);
            delete(&store, &last);
            put(&store, &last, garbage);
            recovers(&pool, &replica, &store, &prefix, &name, 2);
            let _ = replica.stop();
        }
    }
}

/// Reads fail while the store is wiped, then work again.
#[test]
fn reads_fail_during_a_wipe() {
    for (name, inner, _dir) in stores() {
        let prefix = Path::from("r");
        let hooked = Hooked::new(inner.clone(), &prefix);
        let store: Arc<dyn ObjectStore> = hooked.clone();
        let (pool, replica) = started(&store, &prefix);
        hooked.fail_reads.store(true, Ordering::SeqCst);
        wipe(&inner, &prefix);
        exec(&pool, "INSERT INTO t VALUES (2)");
        let _ = replica.sync_now();
        hooked.fail_reads.store(false, Ordering::SeqCst);
        recovers(&pool, &replica, &inner, &prefix, name, 3);
        let _ = replica.stop();
    }
}

/// The store wiped between the replica's check of its chain and its PUT: the delta lands
/// alone in an empty store; the next sync sees its image gone.
#[test]
fn wiped_between_the_check_and_the_put() {
    for (name, inner, _dir) in stores() {
        let prefix = Path::from("c");
        let hooked = Hooked::new(inner.clone(), &prefix);
        let store: Arc<dyn ObjectStore> = hooked.clone();
        let (pool, replica) = started(&store, &prefix);
        hooked.wipe_before_put.store(true, Ordering::SeqCst);
        exec(&pool, "INSERT INTO t VALUES (2)");
        replica.sync_now().unwrap();
        recovers(&pool, &replica, &inner, &prefix, name, 3);
        let _ = replica.stop();
    }
}

/// A PUT that landed with its answer lost, or failed without landing; then a wipe: the
/// replica sends the same object again, and then a whole image.
#[test]
fn an_unsure_put_then_a_wipe() {
    for lose_answer in [true, false] {
        for (name, inner, _dir) in stores() {
            let name = format!("{name}, answer lost: {lose_answer}");
            let prefix = Path::from("p");
            let hooked = Hooked::new(inner.clone(), &prefix);
            let store: Arc<dyn ObjectStore> = hooked.clone();
            let (pool, replica) = started(&store, &prefix);
            let switch = match lose_answer {
                true => &hooked.lose_put_answer,
                false => &hooked.fail_puts,
            };
            switch.store(true, Ordering::SeqCst);
            exec(&pool, "INSERT INTO t VALUES (2)");
            assert!(replica.sync_now().is_err(), "{name}");
            hooked.fail_puts.store(false, Ordering::SeqCst);
            wipe(&inner, &prefix);
            recovers(&pool, &replica, &inner, &prefix, &name, 3);
            let _ = replica.stop();
        }
    }
}

/// Syncs while another thread wipes the store again and again; once it stops, the next
/// sync makes `Latest` the source again.
#[test]
fn wiped_while_syncing() {
    for (name, store, _dir) in stores() {
        let prefix = Path::from("z");
        let (pool, replica) = started(&store, &prefix);
        let stop = Arc::new(AtomicBool::new(false));
        let wiper = {
            let (store, prefix, stop) = (store.clone(), prefix.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    wipe(&store, &prefix);
                    std::thread::sleep(std::time::Duration::from_micros(300));
                }
            })
        };
        for i in 0..200 {
            exec(&pool, &format!("INSERT INTO t VALUES ({i})"));
            let _ = replica.sync_now();
        }
        stop.store(true, Ordering::SeqCst);
        wiper.join().unwrap();
        recovers(&pool, &replica, &store, &prefix, name, 3);
        let _ = replica.stop();
    }
}
