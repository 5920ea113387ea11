//! The raw-handle bridge: how the crate reaches SQLite's C API under a Diesel connection.

pub(crate) mod batch_vfs;
mod bridge;
mod db;
pub(crate) mod memdb;
pub(crate) mod memdb_vfs;
mod owned;

pub use bridge::init;
pub(crate) use bridge::{probe, raw_handle, with_lock_waits, HandleError};
pub(crate) use db::{failure_from_code, path_cstring, readonly_uri, DbRef, Storage};
pub(crate) use owned::OwnedDb;
