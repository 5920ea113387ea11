//! `SingletonManager` and `memory_pool`: one database per manager, shared by every
//! connection on every thread, outliving every connection.

mod common;

use std::time::Duration;

use common::{app, scalar};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_sqlite_backup::{memory_pool, shared_thread_pool, SingletonManager};
use r2d2::ManageConnection;

/// Connections on different threads see one database; two managers never share one.
#[test]
fn every_connection_sees_the_same_database_and_managers_are_isolated() {
    let pool = r2d2::Pool::builder()
        .max_size(4)
        .build(SingletonManager::new())
        .unwrap();
    let other = memory_pool().unwrap();
    app::migrate(&mut pool.get().unwrap());
    std::thread::scope(|s| {
        for t in 0..4 {
            let pool = pool.clone();
            s.spawn(move || {
                let mut c = pool.get().unwrap();
                app::fill(&mut c, &format!("thread {t}"), 25, 5);
            });
        }
    });
    assert_eq!(app::note_count(&mut pool.get().unwrap()), 100);
    let mut o = other.get().unwrap();
    assert_eq!(
        scalar(
            &mut o,
            "SELECT count(*) AS n FROM sqlite_schema WHERE name = 'notes'"
        ),
        0,
        "a second manager saw the first one's tables"
    );
}

/// r2d2 recycling every connection (max_lifetime, idle_timeout) loses no committed row.
#[test]
fn data_outlives_recycled_connections() {
    let pool = r2d2::Pool::builder()
        .max_size(2)
        .min_idle(Some(0))
        .max_lifetime(Some(Duration::from_millis(50)))
        .idle_timeout(Some(Duration::from_millis(50)))
        .build(SingletonManager::new())
        .unwrap();
    app::migrate(&mut pool.get().unwrap());
    for round in 0..5 {
        app::fill(&mut pool.get().unwrap(), &format!("round {round}"), 10, 5);
        // Long enough for the reaper (which runs every 30 s in r2d2) not to matter: expired
        // connections are also dropped when returned.
        std::thread::sleep(Duration::from_millis(60));
        assert!(pool.state().connections <= 2);
    }
    assert_eq!(app::note_count(&mut pool.get().unwrap()), 50);
}

/// The manager's database survives even when no pooled connection is open at all.
#[test]
fn data_survives_with_zero_open_connections() {
    let manager = SingletonManager::new();
    let mut c = manager.connect().unwrap();
    app::migrate(&mut c);
    app::fill(&mut c, "kept", 9, 5);
    drop(c);
    let mut again = manager.connect().unwrap();
    assert_eq!(app::note_count(&mut again), 9);
}

/// A connection dropped during a panic inside a transaction is discarded, its writes rolled
/// back, and the next checkout is not inside anyone's transaction.
#[test]
fn panic_inside_transaction_never_leaks_the_transaction() {
    let pool = memory_pool().unwrap();
    app::migrate(&mut pool.get().unwrap());
    let worker = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let mut c = pool.get().unwrap();
            c.transaction::<(), diesel::result::Error, _>(|c| {
                app::fill(c, "doomed", 3, 1);
                panic!("boom");
            })
            .unwrap();
        })
    };
    assert!(worker.join().is_err());
    let mut c = pool.get().unwrap();
    assert_eq!(
        app::note_count(&mut c),
        0,
        "the panicking transaction's rows leaked"
    );
    // A new transaction starts cleanly, so the connection is not stuck in the old one.
    c.transaction::<_, diesel::result::Error, _>(|c| {
        app::fill(c, "fresh", 1, 1);
        Ok(())
    })
    .unwrap();
}

/// A raw `BEGIN` left open when a connection goes back to the pool is caught by
/// `has_broken`, so nobody receives a connection inside someone else's transaction.
#[test]
fn connection_returned_inside_raw_begin_is_not_reused() {
    let manager = SingletonManager::new();
    let mut c = manager.connect().unwrap();
    app::migrate(&mut c);
    assert!(!manager.has_broken(&mut c));
    c.batch_execute("BEGIN; INSERT INTO notebooks(title) VALUES ('half');")
        .unwrap();
    assert!(manager.has_broken(&mut c));
    c.batch_execute("ROLLBACK").unwrap();
    assert!(!manager.has_broken(&mut c));
    assert!(manager.is_valid(&mut c).is_ok());

    let pool = memory_pool().unwrap();
    {
        let mut c = pool.get().unwrap();
        c.batch_execute("CREATE TABLE t(x); BEGIN; INSERT INTO t VALUES (1);")
            .unwrap();
    }
    let mut c = pool.get().unwrap();
    assert_eq!(scalar(&mut c, "SELECT count(*) AS n FROM t"), 0);
    c.batch_execute("BEGIN; COMMIT;").unwrap();
}

/// Checking a returned connection never waits for a lock another connection holds.
#[test]
fn has_broken_answers_at_once_while_another_connection_writes() {
    // A check that waited for the lock would wait out this busy timeout.
    let manager = SingletonManager::new().busy_timeout(Duration::from_secs(120));
    let (mut writer, mut idle) = (manager.connect().unwrap(), manager.connect().unwrap());
    writer
        .batch_execute("CREATE TABLE t(x); BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
        .unwrap();
    let started = std::time::Instant::now();
    assert!(!manager.has_broken(&mut idle));
    assert!(manager.is_valid(&mut idle).is_ok());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "waited for the writer's lock"
    );
    writer.batch_execute("COMMIT").unwrap();
}

/// Opening connections for a pool whose database is write-locked holds no thread of the shared
/// scheduler: another pool still opens its connection, and the locked pool's own checkouts
/// wait for the lock in their own threads.
#[test]
fn a_locked_pool_does_not_starve_other_pools() {
    // A connect that waited for the lock would hold a shared thread this long, so every
    // other pool's connect would queue behind it until its own checkout timeout (5 s).
    let manager = SingletonManager::new().busy_timeout(Duration::from_secs(120));
    let mut writer = manager.connect().unwrap();
    writer
        .batch_execute("CREATE TABLE t(x); BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
        .unwrap();
    // Queues three connects on the shared scheduler (two threads) before `memory_pool`'s.
    let locked = r2d2::Pool::builder()
        .max_size(3)
        .thread_pool(shared_thread_pool())
        .idle_timeout(None)
        .max_lifetime(None)
        .connection_timeout(Duration::from_secs(120))
        .build_unchecked(manager);
    let reader = std::thread::spawn({
        let locked = locked.clone();
        move || {
            let mut c = locked.get().expect("checkout from the locked pool");
            scalar(&mut c, "SELECT count(*) AS n FROM t")
        }
    });

    let other = memory_pool().expect("a pool beside a locked one");
    let mut c = other.get().expect("a checkout beside a locked pool");
    c.batch_execute("CREATE TABLE u(y); INSERT INTO u VALUES (1);")
        .unwrap();
    assert!(!reader.is_finished(), "read through another's write lock");

    writer.batch_execute("COMMIT").unwrap();
    assert_eq!(reader.join().unwrap(), 1);
    let mut conns: Vec<_> = (0..3).map(|_| locked.get().unwrap()).collect();
    assert_eq!(scalar(&mut conns[2], "SELECT count(*) AS n FROM t"), 1);
}

/// Pooled connections wait for each other's locks instead of failing at once.
#[test]
fn pooled_connections_have_a_busy_timeout() {
    let pool = r2d2::Pool::builder()
        .max_size(2)
        .build(SingletonManager::new().busy_timeout(Duration::from_millis(1234)))
        .unwrap();
    let mut c = pool.get().unwrap();
    assert_eq!(
        scalar(&mut c, "SELECT timeout AS n FROM pragma_busy_timeout"),
        1234
    );

    let (mut a, mut b) = (pool.get().unwrap(), c);
    a.batch_execute("CREATE TABLE t(x)").unwrap();
    b.batch_execute("SELECT * FROM t").unwrap();
    a.batch_execute("BEGIN IMMEDIATE; INSERT INTO t VALUES (1);")
        .unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        a.batch_execute("COMMIT").unwrap();
    });
    // b waits for a's commit instead of failing with "database is locked".
    b.batch_execute("INSERT INTO t VALUES (2)").unwrap();
    releaser.join().unwrap();
    assert_eq!(scalar(&mut b, "SELECT count(*) AS n FROM t"), 2);
}

/// `memory_pool` has one connection; a second `get` on the same thread times out (the
/// documented re-entrancy pitfall) instead of deadlocking forever.
#[test]
fn memory_pool_is_pinned_to_one_connection() {
    let pool = memory_pool().unwrap();
    assert_eq!(pool.max_size(), 1);
    let _held = pool.get().unwrap();
    let second = pool.get_timeout(Duration::from_millis(100));
    assert!(second.is_err());
}

/// A thread that calls `get()` while holding the only connection gets r2d2's error after the
/// pool's checkout timeout (seconds, not 30 s), and standard error says why. Run in a child
/// process so its standard error can be read.
#[test]
fn reentrant_get_on_memory_pool_says_why_within_seconds() {
    const CHILD: &str = "DSB_REENTRANT_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let pool = memory_pool().unwrap();
        assert_eq!(
            pool.connection_timeout(),
            diesel_sqlite_backup::DEFAULT_CHECKOUT_TIMEOUT
        );
        let held = pool.get().unwrap();
        assert!(pool.get().is_err());
        drop(held);
        pool.get().unwrap(); // the pool still works
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "reentrant_get_on_memory_pool_says_why_within_seconds",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}");
    assert!(stderr.contains("checked out all 1"), "{stderr}");
    assert!(stderr.contains("pass the connection you hold"), "{stderr}");
}

/// A connection handed to another thread comes back to a waiting thread as usual: the
/// re-entrancy check explains, it never turns a wait into a failure.
#[test]
fn connection_handed_to_another_thread_comes_back() {
    let pool = memory_pool().unwrap();
    let conn = pool.get().unwrap();
    let worker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        drop(conn);
    });
    pool.get().expect("the worker gives the connection back");
    worker.join().unwrap();
}

/// memdb's 1 GiB default cap is lifted; an explicit cap is enforced.
#[test]
fn size_limit_is_configurable() {
    let pool = r2d2::Pool::builder()
        .max_size(1)
        .build(SingletonManager::new().size_limit(Some(256 * 1024)))
        .unwrap();
    let mut c = pool.get().unwrap();
    app::migrate(&mut c);
    let too_much = c.transaction::<_, diesel::result::Error, _>(|c| {
        let id = app::add_notebook(c, "big");
        let body = "y".repeat(1000);
        for i in 0..1000 {
            let title = format!("{i}");
            diesel::insert_into(app::notes::table)
                .values(app::NewNote {
                    notebook_id: id,
                    title: &title,
                    body: &body,
                })
                .execute(c)?;
        }
        Ok(())
    });
    let err = too_much.unwrap_err().to_string();
    assert!(err.contains("full"), "{err}");
}

/// Fills a fresh `memory_pool()` with ~256 KiB and drops it.
fn fill_and_drop_a_pool() {
    let pool = memory_pool().unwrap();
    let mut c = pool.get().unwrap();
    c.batch_execute(
        "CREATE TABLE t(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 256)
         INSERT INTO t SELECT randomblob(1000) FROM n;",
    )
    .unwrap();
}

/// SQLite's own count of the bytes it holds: independent of the allocator and of RSS.
fn sqlite_memory_used() -> i64 {
    // SAFETY: a thread-safe read of SQLite's global memory statistics.
    unsafe { libsqlite3_sys::sqlite3_memory_used() }
}

/// Dropping a pool frees its database: SQLite's own memory count returns to where it was.
/// Each pool holds ~256 KiB, so 200 that were not freed would show as ~50 MiB.
#[test]
fn dropped_pools_free_their_memory() {
    if !common::in_own_process("dropped_pools_free_their_memory") {
        return;
    }
    fill_and_drop_a_pool(); // one-time set-up (registrations, caches) before the baseline
    let before = sqlite_memory_used();
    for _ in 0..200 {
        fill_and_drop_a_pool();
    }
    let grown = sqlite_memory_used() - before;
    // Allow SQLite's own small caches (lookaside, a page-cache slot or two) to vary.
    assert!(
        grown < 1 << 20,
        "SQLite holds {grown} more bytes after 200 dropped pools"
    );
}

/// The threads of this process, from the kernel's own list.
#[cfg(target_os = "linux")]
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Pools built by the crate share one scheduler and run no reaper, so building and dropping
/// many leaves no thread behind (r2d2's default gives each pool three threads of its own,
/// alive until the next reaper tick up to 30 s later).
#[cfg(target_os = "linux")]
#[test]
fn dropped_pools_leave_no_threads_behind() {
    if !common::in_own_process("dropped_pools_leave_no_threads_behind") {
        return;
    }
    // Starts the shared scheduler, so the baseline includes its threads.
    fill_and_drop_a_pool();
    let template = diesel_sqlite_backup::Template::new(|c| {
        c.batch_execute("CREATE TABLE t(x)")
            .map_err(|e| e.to_string())
    })
    .unwrap();
    drop(template.pool().unwrap());
    let before = threads();
    for _ in 0..100 {
        fill_and_drop_a_pool();
        drop(template.pool().unwrap());
    }
    assert_eq!(
        threads(),
        before,
        "building and dropping 200 pools changed the thread count"
    );
}
