//! Placeholder until the logical copy lands.
use std::ffi::CStr;

use crate::error::SqliteFailure;
use crate::raw::DbRef;

pub(crate) fn copy_logically(
    _src: &DbRef<'_>,
    _src_schema: &CStr,
    _dst: &DbRef<'_>,
) -> Result<(), SqliteFailure> {
    Err(crate::raw::failure_from_code(libsqlite3_sys::SQLITE_ERROR))
}
