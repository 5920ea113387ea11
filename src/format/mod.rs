//! SQLite's on-disk formats: pure functions over bytes, no connection and no file system.

pub(crate) mod header;
pub(crate) mod journal;
pub(crate) mod pages;
