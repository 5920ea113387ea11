//! `TemplateCache::key` covers which registered folder each migration file came from, not
//! only its path inside that folder: moving a migration between two registered folders
//! must give a new key, so a template built from the old layout is never reused.

use std::fs;
use std::path::Path;

use diesel_sqlite_backup::TemplateCache;

/// Writes `<root>/<name>/up.sql` and `down.sql`.
fn migration(root: &Path, name: &str, up: &str, down: &str) {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("up.sql"), up).unwrap();
    fs::write(dir.join("down.sql"), down).unwrap();
}

/// Two registered folders: `a` holds `001_users`, `b` holds `002_posts`.
fn two_folders() -> (tempfile::TempDir, TemplateCache) {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    migration(
        &a,
        "001_users",
        "CREATE TABLE users (id INTEGER PRIMARY KEY);",
        "DROP TABLE users;",
    );
    migration(
        &b,
        "002_posts",
        "CREATE TABLE posts (id INTEGER PRIMARY KEY);",
        "DROP TABLE posts;",
    );
    let cache = TemplateCache::new("seed-v1")
        .migrations_dir(&a)
        .migrations_dir(&b)
        .dir(root.path().join("cache"));
    (root, cache)
}

#[test]
fn key_is_stable_without_changes() {
    let (_root, cache) = two_folders();
    let first = cache.key().unwrap();
    assert_eq!(first, cache.key().unwrap(), "same files, same key");
    assert_eq!(first.len(), 32, "32 hex digits: {first}");
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
}

#[test]
fn moving_a_migration_between_registered_folders_changes_the_key() {
    let (root, cache) = two_folders();
    let before = cache.key().unwrap();

    // Same relative path (`002_posts/up.sql`), same contents, other folder.
    fs::rename(
        root.path().join("b/002_posts"),
        root.path().join("a/002_posts"),
    )
    .unwrap();
    let moved = cache.key().unwrap();
    assert_ne!(
        before, moved,
        "a migration moved from folder b to folder a must change the key"
    );
    assert_eq!(
        moved,
        cache.key().unwrap(),
        "the new layout has a stable key"
    );

    // Moving it back restores the original key: the key depends on the layout only.
    fs::rename(
        root.path().join("a/002_posts"),
        root.path().join("b/002_posts"),
    )
    .unwrap();
    assert_eq!(before, cache.key().unwrap());
}

#[test]
fn swapping_the_registration_order_changes_the_key() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    migration(&a, "001_one", "CREATE TABLE one (x);", "DROP TABLE one;");
    migration(&b, "001_one", "CREATE TABLE one (x);", "DROP TABLE one;");
    migration(&b, "002_two", "CREATE TABLE two (x);", "DROP TABLE two;");
    let ab = TemplateCache::new("seed-v1")
        .migrations_dir(&a)
        .migrations_dir(&b);
    let ba = TemplateCache::new("seed-v1")
        .migrations_dir(&b)
        .migrations_dir(&a);
    assert_ne!(ab.key().unwrap(), ba.key().unwrap());
}

#[test]
fn the_key_does_not_depend_on_where_the_folders_live() {
    // Two checkouts of the same project at different paths share cached templates.
    let make = || {
        let root = tempfile::tempdir().unwrap();
        migration(
            &root.path().join("migrations"),
            "001_users",
            "CREATE TABLE users (id INTEGER PRIMARY KEY);",
            "DROP TABLE users;",
        );
        let key = TemplateCache::new("seed-v1")
            .migrations_dir(root.path().join("migrations"))
            .key()
            .unwrap();
        (root, key)
    };
    let (_one, k1) = make();
    let (_two, k2) = make();
    assert_eq!(k1, k2);
}
