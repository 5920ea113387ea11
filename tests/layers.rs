//! The top-level modules of `src/` form layers: no module imports another that imports it
//! back, directly or through others. Reads every `crate::` path outside comments (root
//! re-exports such as `crate::BackupExt` count as the module they come from).
//! Also fails when a module imports one that lib.rs declares after it (a higher layer).
//! Run with `-- --nocapture` to see the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn no_import_cycle_between_top_level_modules() {
    // LAYERS_SRC checks another tree (e.g. an older commit's `src/` from `git archive`).
    let src = std::env::var_os("LAYERS_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let lib = code(&fs::read_to_string(src.join("lib.rs")).unwrap());
    let reexports = root_reexports(&lib);
    let mut graph = Graph::new();
    for (file, top) in files(&src) {
        let text = code(&fs::read_to_string(&file).unwrap());
        let uses = graph.entry(top.clone()).or_default();
        for name in crate_paths(&text) {
            // A module's own name is that module (lib.rs may re-export an item of the same
            // name from elsewhere, as `__private` does with `pool`).
            let target = match is_module(&src, &name) {
                true => name,
                false => reexports.get(&name).cloned().unwrap_or(name),
            };
            if target != top && is_module(&src, &target) {
                uses.insert(target);
            }
        }
    }
    for (module, uses) in &graph {
        println!(
            "{module} -> {}",
            Vec::from_iter(uses.iter().cloned()).join(", ")
        );
    }
    let cycles = cycles(&graph);
    assert!(
        cycles.is_empty(),
        "import cycles between top-level modules:\n{}",
        cycles.join("\n")
    );
    // And the order lib.rs declares them in is the order of the layers, bottom first.
    let order = declared_modules(&lib);
    let rank = |m: &str| order.iter().position(|o| o == m);
    let upward: Vec<String> = graph
        .iter()
        .flat_map(|(m, uses)| uses.iter().map(move |u| (m, u)))
        .filter(|(m, u)| rank(u) > rank(m))
        .map(|(m, u)| format!("{m} -> {u}"))
        .collect();
    assert!(
        upward.is_empty(),
        "imports of a module declared later in lib.rs (a higher layer):\n{}",
        upward.join("\n")
    );
}

/// The `mod name;` declarations of lib.rs, in order.
fn declared_modules(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("mod ")?.strip_suffix(';'))
        .map(str::to_owned)
        .collect()
}

/// Every `.rs` file under `src/` but `lib.rs`, with the top-level module it belongs to.
fn files(src: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            let mut stack = vec![path];
            while let Some(dir) = stack.pop() {
                for entry in fs::read_dir(dir).unwrap() {
                    let p = entry.unwrap().path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|e| e == "rs") {
                        out.push((p, stem.clone()));
                    }
                }
            }
        } else if path.extension().is_some_and(|e| e == "rs") && stem != "lib" {
            out.push((path, stem));
        }
    }
    out
}

fn is_module(src: &Path, name: &str) -> bool {
    src.join(name).is_dir() || src.join(format!("{name}.rs")).is_file()
}

/// The source without comments (line comments, doc comments, block comments).
fn code(text: &str) -> String {
    let text = text.replace("'\"'", "' '"); // a quote character is no string
    let mut out = String::new();
    let mut rest = text.as_str();
    while !rest.is_empty() {
        let line_c = rest.find("//");
        let block_c = rest.find("/*");
        let string = rest.find('"');
        let first = [line_c, block_c, string].into_iter().flatten().min();
        let Some(at) = first else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if Some(at) == string {
            // Skip a string literal (escapes included) so "//" inside it is no comment.
            let mut end = 1;
            let bytes = rest.as_bytes();
            while end < bytes.len() && bytes[end] != b'"' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            rest = &rest[(end + 1).min(rest.len())..];
        } else if Some(at) == line_c {
            rest = rest.find('\n').map_or("", |n| &rest[n..]);
        } else {
            rest = rest.find("*/").map_or("", |n| &rest[n + 2..]);
        }
    }
    out
}

/// The first segment after each `crate::`, and each item's first segment in `crate::{...}`.
fn crate_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        // `diesel_sqlite_backup::` or `$crate::` are not ours.
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = text[at + "crate::".len()..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.extend(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.extend(first_ident(&item));
        } else {
            out.extend(first_ident(rest));
        }
    }
    out
}

fn first_ident(s: &str) -> Option<String> {
    let ident: String = s
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!ident.is_empty() && ident != "self").then_some(ident)
}

/// `name -> module` for every `pub use module::{name, ...}` of lib.rs.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (at, _) in lib.match_indices("pub use ") {
        let rest = &lib[at + "pub use ".len()..];
        let stmt = &rest[..rest.find(';').unwrap()];
        let Some((module, names)) = stmt.split_once("::") else {
            continue;
        };
        for name in names
            .trim_matches(|c: char| c == '{' || c == '}' || c.is_whitespace())
            .split(',')
        {
            let name = name.split(" as ").last().unwrap().trim();
            if !name.is_empty() {
                out.insert(name.to_owned(), module.trim().to_owned());
            }
        }
    }
    out
}

/// Each cycle found by a depth-first search, as `a -> b -> ... -> a`.
fn cycles(graph: &Graph) -> Vec<String> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_owned());
            found.push(cycle.join(" -> "));
            return;
        }
        if !done.insert(node.to_owned()) {
            return;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done, found);
        }
        path.pop();
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}
