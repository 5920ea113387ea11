//! Reaching the `sqlite3*` behind a Diesel `SqliteConnection` through documented SQLite APIs only.
//!
//! [`init`] registers an auto-extension, so every connection opened afterwards in this process
//! gets a direct-only SQL function. Calling that function through Diesel makes SQLite hand the
//! function its own connection (`sqlite3_context_db_handle`), which the function stores in a
//! thread-local for [`raw_handle`] to pick up. No Diesel internals are read and nothing is
//! transmuted; SQL can never see or forge the pointer.
//!
//! Each probe pushes its own slot on a thread-local stack and the function fills only the top
//! slot, so a probe of another connection made meanwhile on the same thread (from Diesel's
//! instrumentation hooks, which run before and after the probe's statement) pushes, fills
//! and pops its own slot and can neither overwrite nor clear the outer one.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_void};
use std::ptr::{self, NonNull};
use std::sync::Once;

use diesel::{RunQueryDsl, SqliteConnection};
use libsqlite3_sys as ffi;

use super::db::DbRef;

/// Name of the SQL function; long and namespaced so no application will collide with it.
const PROBE_NAME: &std::ffi::CStr = c"diesel_sqlite_backup_handle";

diesel::define_sql_function! {
    #[sql_name = "diesel_sqlite_backup_handle"]
    fn handle_probe() -> diesel::sql_types::Nullable<diesel::sql_types::Integer>;
}

/// Identifies our registration: the probe only trusts calls whose user data is this address.
static PROBE_TOKEN: u8 = 0;

thread_local! {
    /// One slot per probe running on this thread (probes can nest): the handle its statement
    /// captured, or null.
    static SLOTS: RefCell<Vec<*mut ffi::sqlite3>> = const { RefCell::new(Vec::new()) };
}

thread_local! {
    /// While a budgeted call runs on this thread, how its lock waits are decided: the
    /// open-time busy handler of every connection asks this (attempt, busy connection).
    static LOCK_WAITS: Cell<Option<*const LockWaits<'static>>> = const { Cell::new(None) };
}

/// Decides one lock wait: sleeps and returns true to try again, or false to give up. Gets
/// the try number and the busy connection.
pub(crate) type LockWaits<'w> = dyn Fn(u32, &DbRef<'_>) -> bool + 'w;

/// Runs `f` with `waits` deciding every lock wait of connections opened after [`init`] on
/// this thread, unless their busy handler was replaced (for example by `busy_timeout`).
/// Outside such a call the handler gives up at once, as if there were none.
pub(crate) fn with_lock_waits<T>(waits: &LockWaits<'_>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<*const LockWaits<'static>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            LOCK_WAITS.with(|w| w.set(self.0));
        }
    }
    // SAFETY: only the trait object's lifetime bound is erased (same layout). The pointer is
    // dereferenced only by `on_busy`, on this thread, while `f` runs; `Restore` puts the
    // previous value back before `waits` can go away, even if `f` panics.
    let erased =
        unsafe { std::mem::transmute::<*const LockWaits<'_>, *const LockWaits<'static>>(waits) };
    let _restore = Restore(LOCK_WAITS.with(|w| w.replace(Some(erased))));
    f()
}

/// The busy handler every connection gets at open.
unsafe extern "C" fn on_busy(db: *mut c_void, attempt: c_int) -> c_int {
    let Some(waits) = LOCK_WAITS.with(Cell::get) else {
        return 0;
    };
    let Some(db) = NonNull::new(db.cast::<ffi::sqlite3>()) else {
        return 0;
    };
    // SAFETY: SQLite passes the argument we registered, the connection itself, which is open
    // while its busy handler runs on this thread; `waits` is live (see `with_lock_waits`).
    unsafe {
        let db = DbRef::from_raw(db);
        c_int::from((*waits)(attempt.max(0) as u32, &db))
    }
}

/// Gives `db` the handler that waits only inside [`with_lock_waits`]: every connection gets it
/// at open, and gets it back after a backup whose previous `busy_timeout` was 0.
///
/// # Safety
/// `db` is an open connection.
pub(crate) unsafe fn install_default_busy_handler(db: *mut ffi::sqlite3) {
    // SAFETY: open handle per the contract; the argument is the connection itself, valid
    // whenever SQLite calls its busy handler.
    unsafe { ffi::sqlite3_busy_handler(db, Some(on_busy), db.cast()) };
}

static INIT: Once = Once::new();

/// Makes every SQLite connection opened from now on in this process backup-capable.
///
/// [`establish`](crate::establish), [`SingletonManager`](crate::SingletonManager) and
/// [`BackupExt`](crate::BackupExt) call this for you. Call it yourself, once, before you open
/// connections some other way (for example with `SqliteConnection::establish` or diesel's own
/// `ConnectionManager`) if you want to back those up. It is idempotent and cheap after the
/// first call.
///
/// ```
/// use diesel::{Connection, SqliteConnection};
/// use diesel_sqlite_backup::BackupExt;
///
/// diesel_sqlite_backup::init();
/// let mut conn = SqliteConnection::establish(":memory:")?;
/// let dir = tempfile::tempdir()?;
/// conn.save_as(dir.path().join("copy.db"))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn init() {
    INIT.call_once(|| {
        // SAFETY: `register_probe` has exactly the signature SQLite's auto-extension contract
        // requires, never unwinds, and lives for the whole program (it is a plain fn item).
        let rc = unsafe { ffi::sqlite3_auto_extension(Some(register_probe)) };
        // Only SQLITE_NOMEM is possible here; connections then stay incapable and
        // `raw_handle` reports NotBackupCapable instead of misbehaving.
        debug_assert_eq!(rc, ffi::SQLITE_OK);
    });
}

/// Runs inside `sqlite3_open_v2` for every new connection.
unsafe extern "C" fn register_probe(
    db: *mut ffi::sqlite3,
    _err: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    // SAFETY: SQLite passes the connection being opened, which is valid for this call. The
    // name is a NUL-terminated static; the user-data pointer is a static, so it outlives the
    // connection; no destructor is needed. DIRECTONLY keeps triggers, views and schema
    // expressions (which an untrusted database file controls) from calling the probe.
    // The busy handler's argument is the connection itself, valid whenever SQLite calls it.
    unsafe {
        install_default_busy_handler(db);
        ffi::sqlite3_create_function_v2(
            db,
            PROBE_NAME.as_ptr(),
            0,
            ffi::SQLITE_UTF8 | ffi::SQLITE_DIRECTONLY,
            ptr::addr_of!(PROBE_TOKEN) as *mut c_void,
            Some(capture_handle),
            None,
            None,
            None,
        )
    }
}

/// The SQL function's body: records which connection called it, in the slot of the
/// innermost probe running on this thread.
unsafe extern "C" fn capture_handle(
    ctx: *mut ffi::sqlite3_context,
    _argc: c_int,
    _argv: *mut *mut ffi::sqlite3_value,
) {
    // SAFETY: SQLite calls this with a valid context for the duration of the call; both
    // accessors only read from it, and `sqlite3_result_null` is the documented way to answer.
    unsafe {
        if ffi::sqlite3_user_data(ctx) as *const u8 == ptr::addr_of!(PROBE_TOKEN) {
            let handle = ffi::sqlite3_context_db_handle(ctx);
            // try_borrow_mut: never panic across the FFI boundary.
            SLOTS.with(|slots| {
                if let Ok(mut slots) = slots.try_borrow_mut() {
                    if let Some(top) = slots.last_mut().filter(|top| top.is_null()) {
                        *top = handle;
                    }
                }
            });
        }
        ffi::sqlite3_result_null(ctx);
    }
}

/// Why the handle of a connection could not be reached.
pub(crate) enum HandleError {
    /// Opened before [`init`], or the probe failed for a reason other than a lock.
    NotCapable,
    /// Loading the schema, which any statement needs first, met a lock that stayed busy.
    Busy,
}

/// The raw handle of `conn`, borrowed for as long as `conn` is. Run it inside
/// [`with_lock_waits`] to wait for a lock the schema load meets.
pub(crate) fn raw_handle(conn: &mut SqliteConnection) -> Result<DbRef<'_>, HandleError> {
    match probe(conn) {
        Ok(Some(db)) => Ok(db),
        Err(e) if is_lock_error(&e) => Err(HandleError::Busy),
        _ => Err(HandleError::NotCapable),
    }
}

/// Runs the probe on `conn`: `Ok(Some)` with its handle, `Ok(None)` when `conn` has no probe
/// (opened before [`init`]), `Err` when the query itself failed.
pub(crate) fn probe(
    conn: &mut SqliteConnection,
) -> Result<Option<DbRef<'_>>, diesel::result::Error> {
    init();
    SLOTS.with(|s| s.borrow_mut().push(ptr::null_mut()));
    let ran = diesel::select(handle_probe()).execute(conn);
    let captured = SLOTS
        .with(|s| s.borrow_mut().pop())
        .unwrap_or(ptr::null_mut());
    match (ran, NonNull::new(captured)) {
        // SAFETY: the pointer was written into this probe's slot by `capture_handle` during the
        // query we just ran on `conn` on this thread (nested probes use slots of their own),
        // so it is `conn`'s own handle, open for as long as `conn` is.
        // The returned borrow ties its use to the `&mut` borrow of `conn`.
        (Ok(_), Some(handle)) => Ok(Some(unsafe { DbRef::from_raw(handle) })),
        (Err(e), _) if !is_missing_probe(&e) => Err(e),
        _ => Ok(None),
    }
}

fn is_missing_probe(e: &diesel::result::Error) -> bool {
    e.to_string().contains("no such function")
}

/// SQLite's BUSY and LOCKED reach Diesel only as message text.
pub(crate) fn is_lock_error(e: &diesel::result::Error) -> bool {
    let text = e.to_string();
    text.contains("database is locked") || text.contains("database table is locked")
}
