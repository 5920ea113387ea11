//! The compile errors of `#[diesel_sqlite_backup::test]`, with their spans: tests/ui/*.rs
//! must fail to compile with exactly the messages in the .stderr beside each
//! (`TRYBUILD=overwrite cargo test --test ui` rewrites them after a deliberate change).

#[test]
fn compile_errors_point_at_the_mistake() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
    if cfg!(not(feature = "async")) {
        cases.compile_fail("tests/ui/without_async/*.rs");
    }
}
