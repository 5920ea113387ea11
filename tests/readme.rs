//! The README is read in two places: as the crate's rustdoc page, where every ```rust block
//! is a doctest (`cargo test --doc`), and as plain Markdown on a forge or crates.io. These
//! checks keep rustdoc-only syntax out of it, so what a reader copies is what is tested.
//! The README is the front page; the rest lives in docs/, whose Rust blocks run as doctests
//! too (src/lib.rs includes each file under `cfg(doctest)`).

const README: &str = include_str!("../README.md");

/// The texts under docs/, by name: each is doctested through src/lib.rs.
const DOCS: [(&str, &str); 7] = [
    ("async.md", include_str!("../docs/async.md")),
    ("design.md", include_str!("../docs/design.md")),
    ("guarantees.md", include_str!("../docs/guarantees.md")),
    ("performance.md", include_str!("../docs/performance.md")),
    ("reliability.md", include_str!("../docs/reliability.md")),
    ("power-loss.md", include_str!("../docs/power-loss.md")),
    ("replica.md", include_str!("../docs/replica.md")),
];

/// Each fenced block of the README: (its language tag, its lines, the line number of its
/// opening fence).
fn code_blocks() -> Vec<(&'static str, Vec<&'static str>, usize)> {
    blocks_of(README)
}

fn blocks_of(text: &'static str) -> Vec<(&'static str, Vec<&'static str>, usize)> {
    let mut blocks = Vec::new();
    let mut open: Option<(&str, Vec<&str>, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        match (open.take(), line.strip_prefix("```")) {
            (None, Some(lang)) => open = Some((lang.trim(), Vec::new(), i + 1)),
            (Some(block), Some("")) => blocks.push(block),
            (Some((lang, mut lines, at)), _) => {
                lines.push(line);
                open = Some((lang, lines, at));
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a code block is never closed");
    blocks
}

/// The README's prose: every line outside fenced blocks, as (line number, the line with its
/// `code spans` removed, the line).
fn prose() -> Vec<(usize, String, &'static str)> {
    let mut in_block = false;
    let mut out = Vec::new();
    for (i, line) in README.lines().enumerate() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            let text: String = line
                .split('`')
                .step_by(2) // the parts between code spans
                .collect::<Vec<_>>()
                .join(" ");
            out.push((i + 1, text, line));
        }
    }
    out
}

#[test]
fn the_readme_is_the_crate_documentation() {
    let lib = include_str!("../src/lib.rs");
    assert!(
        lib.contains(r#"#![doc = include_str!("../README.md")]"#),
        "src/lib.rs must include the README, so its Rust blocks run as doctests"
    );
}

#[test]
fn every_code_block_says_its_language() {
    let texts = [("README.md", README)].into_iter().chain(DOCS);
    for (name, text) in texts {
        for (lang, _, at) in blocks_of(text) {
            // `rs`: Rust to Markdown, not a doctest to rustdoc; the README's copies of
            // feature-gated examples (checked below).
            let rs = name == "README.md" && lang == "rs";
            assert!(
                rs || ["rust", "sh", "toml", "text", "python"].contains(&lang),
                "{name} line {at}: code block tagged {lang:?}; use rust (a doctest), sh, toml, \
                 text or python"
            );
        }
    }
}

/// The README's async and replica examples need features which plain `cargo test` (the
/// README's own command) does not turn on: they are tagged `rs`, which rustdoc does not run,
/// and each is a verbatim copy of a ```rust block of its doc, which runs as a doctest with the
/// feature on (src/lib.rs includes it then). So they are tested, and never twice.
#[test]
fn the_feature_examples_are_tested_copies() {
    let rs: Vec<_> = code_blocks()
        .into_iter()
        .filter(|(lang, _, _)| *lang == "rs")
        .collect();
    assert_eq!(rs.len(), 2, "the async and replica examples");
    let lib = include_str!("../src/lib.rs");
    for (_, lines, at) in rs {
        assert!(lines.len() <= 10, "README line {at}: a few lines");
        let copied = [("async", "async.md"), ("replica", "replica.md")]
            .into_iter()
            .find(|(_, doc)| {
                let (_, text) = DOCS.iter().find(|(name, _)| name == doc).unwrap();
                blocks_of(text)
                    .iter()
                    .any(|(lang, theirs, _)| *lang == "rust" && *theirs == lines)
            });
        let Some((feature, doc)) = copied else {
            panic!("README block at line {at} is not a copy of a ```rust block of docs/");
        };
        assert!(
            lib.contains(&format!(
                "#[cfg(all(doctest, feature = \"{feature}\"))]\n#[doc = include_str!(\"../docs/{doc}\")]"
            )),
            "src/lib.rs doctests docs/{doc} with the {feature} feature"
        );
        let before = &README[..README.lines().take(at - 1).map(|l| l.len() + 1).sum()];
        let paragraph = before.rsplit("\n\n").nth(1).unwrap_or_default();
        assert!(
            paragraph.contains(&format!("`{feature}`")),
            "README line {at}: the text before says it needs the `{feature}` feature"
        );
    }
}

#[test]
fn the_docs_are_doctested() {
    let lib = include_str!("../src/lib.rs");
    for (name, text) in DOCS {
        let include = format!(r#"#[doc = include_str!("../docs/{name}")]"#);
        let has_rust = blocks_of(text).iter().any(|(lang, _, _)| *lang == "rust");
        assert!(
            !has_rust || lib.contains(&include),
            "docs/{name} has Rust blocks: src/lib.rs must include it under cfg(doctest)"
        );
    }
}

#[test]
fn the_readme_is_a_front_page() {
    let lines = README.lines().count();
    assert!(
        lines <= 265,
        "README has {lines} lines; move details into docs/"
    );
}

#[test]
fn every_linked_doc_exists() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut linked = 0;
    for (at, part) in README.split("](docs/").enumerate().skip(1) {
        let target = part.split([')', '#']).next().unwrap();
        let path = root.join("docs").join(target);
        assert!(
            path.is_file(),
            "README link {at} to docs/{target}: no such file"
        );
        linked += 1;
    }
    for name in [
        "guarantees.md",
        "design.md",
        "performance.md",
        "reliability.md",
    ] {
        assert!(
            README.contains(&format!("](docs/{name}")),
            "README links docs/{name}"
        );
    }
    assert!(linked > 0);
}

#[test]
fn rust_blocks_are_complete_programs_without_hidden_lines() {
    let rust: Vec<_> = code_blocks()
        .into_iter()
        .filter(|(lang, _, _)| ["rust", "rs"].contains(lang))
        .collect();
    assert!(rust.len() >= 2, "the quick start and the test harness");
    for (_, lines, at) in rust {
        for line in &lines {
            let t = line.trim_start();
            assert!(
                !(t == "#" || t.starts_with("# ") || t.starts_with("##")),
                "README block at line {at}: rustdoc hides {line:?}, Markdown shows it"
            );
        }
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("fn main()") || l.starts_with("async fn main()")),
            "README block at line {at} needs its own `fn main`, so it runs as pasted"
        );
    }
}

#[test]
fn no_intra_doc_links() {
    for (line, text, original) in prose() {
        let mut rest = text.as_str();
        while let Some(start) = rest.find('[') {
            let after = &rest[start..];
            let end = after
                .find(']')
                .unwrap_or_else(|| panic!("README line {line}: unclosed ["));
            assert!(
                after[end + 1..].starts_with('('),
                "README line {line} has an intra-doc link, which Markdown shows as text: \
                 {original}"
            );
            rest = &after[end + 1..];
        }
    }
}

#[test]
fn the_quick_start_is_self_contained() {
    let (_, quick_start, at) = code_blocks()
        .into_iter()
        .find(|(lang, _, _)| *lang == "rust")
        .unwrap();
    let code = quick_start.join("\n");
    assert!(
        !code.contains("embed_migrations!"),
        "README block at line {at}: the reader has no migrations folder"
    );
    assert!(code.contains("tempfile::tempdir()"), "{code}");
    assert!(code.contains("println!"), "it prints where it wrote");
    let before = &README[..README.find("```rust").unwrap()];
    assert!(
        before.contains("tempfile"),
        "the text before the quick start says it needs tempfile"
    );
}

#[test]
fn the_set_up_commands_are_there_and_the_examples_exist() {
    let setup = code_blocks()
        .into_iter()
        .find(|(lang, lines, _)| *lang == "sh" && lines.contains(&"cargo test"))
        .expect("a sh block with the set-up commands");
    assert_eq!(setup.1, ["cargo run --example quickstart", "cargo test"]);

    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    for name in [
        "quickstart",
        "migrate_then_persist",
        "save_with_progress",
        "open_modify_save",
        "test_harness",
        "async_service",
    ] {
        assert!(README.contains(name), "README names the {name} example");
        let file = std::path::Path::new(examples).join(format!("{name}.rs"));
        assert!(file.is_file(), "{} is missing", file.display());
    }
}

#[test]
fn the_sections_come_in_order() {
    let mut last = 0;
    for heading in [
        "## The problem",
        "## Quick start",
        "## What it does",
        "## Test harness",
        "## Guarantees",
        "## Errors",
        "## Features and MSRV",
    ] {
        let at = README
            .find(heading)
            .unwrap_or_else(|| panic!("README has no {heading:?}"));
        assert!(at > last, "{heading:?} is out of order");
        last = at;
    }
}
