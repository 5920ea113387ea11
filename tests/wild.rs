//! Files made by a real, independent SQLite writer (Python's `sqlite3` module in child
//! processes) through every route that copies a database file INTO memory:
//! `restore_from_with` (fresh and used pools, with and without `verify_integrity`),
//! `backup_to`, the stepped `Backup` handle, `Template::from_file` and
//! `Template::from_connection` (`connection()`, `pool()`, `copy_into` a used pool).
//!
//! For every route and file, one of two outcomes is acceptable:
//! - `Ok`, and the destination holds exactly what a plain SQLite reader of the file sees
//!   (Python's canonical dump of the source equals its dump of the destination saved with
//!   `save_as`; for files that change during the call, a consistent snapshot), passes
//!   `integrity_check`, and takes a write and a read afterwards, from a second pooled
//!   connection too;
//! - `Err` with a clear message (not one of SQLite's generic texts such as "attempt to
//!   write a readonly database", and not `InvalidDatabase`: every file here is a valid
//!   database at every moment), and the destination still holds its old data, passes
//!   `integrity_check` and stays usable. The Open routes (`restore_from`, templates) may
//!   not refuse a finished file nothing else is touching: SQLite itself reads it.
//!
//! Never a crash, a torn copy or an unusable pool. Run with `--nocapture` to see one line
//! per case and route.

#[path = "wild/cases.rs"]
mod cases;
#[path = "wild/check.rs"]
mod check;
#[path = "wild/live.rs"]
mod live;
#[path = "wild/lock.rs"]
mod lock;
#[path = "wild/matrix.rs"]
mod matrix;
#[path = "wild/py.rs"]
mod py;
#[path = "wild/routes.rs"]
mod routes;
#[path = "wild/scripts.rs"]
mod scripts;
#[path = "wild/vtab.rs"]
mod vtab;
