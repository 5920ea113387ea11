//! What a `tracing` subscriber sees: the route of a save, why an incremental save became a
//! full one, the route of an Open, and autosave's default `on_error` as a warning.
//!
//! One global subscriber (the autosave reports from its own thread) records every span's
//! fields and every event; each test looks only at the records naming its own temporary path.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use diesel_sqlite_backup::{
    memory_pool, Autosave, AutosaveOptions, BackupError, BackupExt, BackupOptions, SingletonManager,
};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_core::span::Current;

thread_local! {
    /// The spans this thread is in, innermost last.
    static STACK: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

type Fields = BTreeMap<String, String>;

/// A span as recorded so far, or an event.
#[derive(Clone)]
struct Seen {
    meta: &'static Metadata<'static>,
    name: String,
    level: Level,
    fields: Fields,
}

impl Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {:?}", self.level, self.name, self.fields)
    }
}

#[derive(Default)]
struct Capture {
    next: AtomicU64,
    spans: Mutex<BTreeMap<u64, Seen>>,
    events: Mutex<Vec<Seen>>,
}

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for &'static Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = Fields::new();
        span.record(&mut Collect(&mut fields));
        let seen = Seen {
            meta: span.metadata(),
            name: span.metadata().name().to_owned(),
            level: *span.metadata().level(),
            fields,
        };
        lock(&self.spans).insert(id, seen);
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some(seen) = lock(&self.spans).get_mut(&span.into_u64()) {
            values.record(&mut Collect(&mut seen.fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::new();
        event.record(&mut Collect(&mut fields));
        let seen = Seen {
            meta: event.metadata(),
            name: event.metadata().name().to_owned(),
            level: *event.metadata().level(),
            fields,
        };
        lock(&self.events).push(seen);
    }
    // The crate records fields on `Span::current()`, which asks the subscriber.
    fn enter(&self, span: &Id) {
        STACK.with(|s| s.borrow_mut().push(span.into_u64()));
    }
    fn exit(&self, span: &Id) {
        STACK.with(|s| {
            let mut s = s.borrow_mut();
            if let Some(at) = s.iter().rposition(|&id| id == span.into_u64()) {
                s.remove(at);
            }
        });
    }
    fn current_span(&self) -> tracing_core::span::Current {
        let current = STACK.with(|s| s.borrow().last().copied());
        let spans = lock(&self.spans);
        match current.and_then(|id| Some((id, spans.get(&id)?.meta))) {
            Some((id, meta)) => Current::new(Id::from_u64(id), meta),
            None => Current::none(),
        }
    }
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::default());
        tracing::subscriber::set_global_default(capture).expect("the only subscriber");
        capture
    })
}

/// A panicking test must not poison the records for the others.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every event so far.
fn events() -> Vec<Seen> {
    lock(&capture().events).clone()
}

/// The spans called `name` whose `path` field is `path`.
fn spans(name: &str, path: &std::path::Path) -> Vec<Seen> {
    let path = path.display().to_string();
    let spans = lock(&capture().spans);
    spans
        .values()
        .filter(|s| s.name == name && s.fields.get("path") == Some(&path))
        .cloned()
        .collect()
}

fn field<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.fields.get(name).map(String::as_str)
}

#[test]
fn a_save_as_reports_the_rename_route_with_bytes_and_pages() {
    capture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    let pool = memory_pool().unwrap();
    pool.get()
        .unwrap()
        .batch_execute("CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(10000));")
        .unwrap();
    pool.get().unwrap().save_as(&path).unwrap();
    let saves = spans("save", &path);
    assert_eq!(saves.len(), 1, "{saves:?}");
    let save = &saves[0];
    assert_eq!(save.level, Level::INFO);
    assert_eq!(field(save, "route"), Some("rename"), "{save:?}");
    let len = std::fs::metadata(&path).unwrap().len();
    assert_eq!(
        field(save, "bytes"),
        Some(len.to_string().as_str()),
        "{save:?}"
    );
    assert!(field(save, "pages").is_some_and(|p| p != "0"), "{save:?}");
    assert!(field(save, "elapsed_ms").is_some(), "{save:?}");
    assert_eq!(field(save, "error"), None, "{save:?}");
}

/// Another writer commits to the file between two incremental saves: the second is full, in
/// place, and says why.
#[test]
fn an_incremental_save_that_falls_back_says_why() {
    capture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    let pool = memory_pool().unwrap();
    let incremental = || BackupOptions::default().incremental(true);
    pool.get()
        .unwrap()
        .batch_execute("CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(10000));")
        .unwrap();
    pool.get()
        .unwrap()
        .save_as_with(&path, incremental())
        .unwrap();
    // Nothing changed anywhere: the second save is incremental.
    pool.get()
        .unwrap()
        .save_as_with(&path, incremental())
        .unwrap();
    // Another connection, one the pool's record never sees, commits to the file.
    let mut other = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    other.batch_execute("INSERT INTO t VALUES (1)").unwrap();
    drop(other);
    pool.get()
        .unwrap()
        .save_as_with(&path, incremental())
        .unwrap();

    let saves = spans("save", &path);
    let routes: Vec<_> = saves.iter().map(|s| field(s, "route")).collect();
    assert_eq!(
        routes,
        [Some("rename"), Some("incremental"), Some("in_place")],
        "{saves:?}"
    );
    let fallback = field(&saves[2], "fallback").expect("a reason");
    assert!(
        fallback.contains("baseline"),
        "the reason names the changed file: {fallback}"
    );
    // And the event at the decision carries it too, for subscribers that print events.
    let events = events();
    assert!(
        events
            .iter()
            .any(|e| e.level == Level::DEBUG && field(e, "fallback") == Some(fallback)),
        "an event with the reason"
    );
}

/// An Open into an empty pool takes the fast load; into one that holds data, the backup.
#[test]
fn a_restore_reports_its_route_and_plan() {
    capture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    let source = memory_pool().unwrap();
    source
        .get()
        .unwrap()
        .batch_execute("CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(10000));")
        .unwrap();
    source.get().unwrap().save_as(&path).unwrap();
    let empty = memory_pool().unwrap();
    empty.get().unwrap().restore_from(&path).unwrap();
    let full = memory_pool().unwrap();
    full.get()
        .unwrap()
        .batch_execute("CREATE TABLE u(y)")
        .unwrap();
    full.get().unwrap().restore_from(&path).unwrap();

    let restores = spans("restore", &path);
    let routes: Vec<_> = restores.iter().map(|s| field(s, "route")).collect();
    assert_eq!(routes, [Some("fast_load"), Some("backup")], "{restores:?}");
    for restore in &restores {
        assert_eq!(field(restore, "plan"), Some("Direct"), "{restore:?}");
        assert!(field(restore, "pages").is_some(), "{restore:?}");
    }
}

/// An Open that must wait for a reader of the pool's database: every wait is a TRACE event
/// with the time waited so far, and the span records the Busy error.
#[test]
fn lock_waits_are_trace_events() {
    capture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.db");
    let source = memory_pool().unwrap();
    source
        .get()
        .unwrap()
        .batch_execute("CREATE TABLE t(x)")
        .unwrap();
    source.get().unwrap().save_as(&path).unwrap();
    let pool = SingletonManager::pool_builder(2)
        .build(SingletonManager::new())
        .unwrap();
    let mut reader = pool.get().unwrap();
    reader
        .batch_execute("CREATE TABLE u(y); BEGIN; SELECT * FROM u;")
        .unwrap();
    // Long enough that even a starved machine reaches the lock before the budget is spent.
    let options = BackupOptions::default().timeout(Duration::from_secs(1));
    let result = pool.get().unwrap().restore_from_with(&path, options);
    assert!(
        matches!(result, Err(BackupError::Busy { .. })),
        "{result:?}"
    );
    reader.batch_execute("COMMIT").unwrap();
    let restores = spans("restore", &path);
    assert!(field(&restores[0], "error").is_some(), "{restores:?}");
    let waits = events().into_iter().filter(|e| {
        e.level == Level::TRACE
            && field(e, "op") == Some("restore")
            && field(e, "waited_us").is_some()
    });
    assert!(waits.count() > 0, "a TRACE event per wait");
}

/// An autosave whose every save fails, dropped with a change pending: its final save fails and
/// goes to the default `on_error` before the drop returns. No scheduled save comes first.
fn autosave_fails_once_on_drop() -> std::path::PathBuf {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("gone");
    std::fs::create_dir(&folder).unwrap();
    let pool = memory_pool().unwrap();
    let never = Duration::from_secs(3600);
    let options = AutosaveOptions::default().every(never).quiet(never);
    let autosave = Autosave::start(&pool, folder.join("doc.db"), options).unwrap();
    std::fs::remove_dir_all(&folder).unwrap();
    pool.get()
        .unwrap()
        .batch_execute("CREATE TABLE t(x)")
        .unwrap();
    drop(autosave);
    folder
}

/// With a subscriber installed, autosave's default `on_error` is a warning naming the error,
/// and the autosave's span records it.
#[test]
fn autosave_default_on_error_goes_to_tracing() {
    capture();
    let folder = autosave_fails_once_on_drop();
    let folder_name = folder.display().to_string();
    let events = events();
    let warned = events.iter().any(|e| {
        e.level == Level::WARN && field(e, "error").is_some_and(|m| m.contains(&folder_name))
    });
    assert!(warned, "a warning naming {folder_name}");
    let saves = spans("autosave", &folder.join("doc.db"));
    assert!(
        saves.iter().any(|s| field(s, "error").is_some()),
        "{saves:?}"
    );
}

/// Without a subscriber, the same error is a line on standard error (in a child process of
/// this test binary, where nothing installs one).
#[test]
fn without_a_subscriber_autosave_errors_go_to_standard_error() {
    const CHILD: &str = "DSB_TRACING_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let folder = autosave_fails_once_on_drop();
        println!("folder: {}", folder.display());
        return;
    }
    let name = "without_a_subscriber_autosave_errors_go_to_standard_error";
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}");
    let folder = stdout
        .lines()
        .find_map(|l| l.split_once("folder: ").map(|(_, f)| f.trim()))
        .expect("the child names its folder");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("diesel-sqlite-backup autosave:") && l.contains(folder)),
        "{stderr}"
    );
}
