//! docs/architecture.md opens with the map of the code: one row per crate and
//! module. This holds the map to the tree both ways, so neither can drift: every
//! Rust source file of the workspace has its row (a module directory's `mod.rs`
//! is the directory's row, a crate is its directory's row), and every row names
//! a path that exists.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// The paths in the first column of the map: the first table of the document.
fn map_rows(doc: &str) -> Vec<String> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in doc.lines() {
        let is_row = line.starts_with('|');
        if in_table && !is_row {
            break;
        }
        if !is_row {
            continue;
        }
        in_table = true;
        let first = line
            .trim_matches('|')
            .split('|')
            .next()
            .unwrap_or("")
            .trim();
        if let Some(path) = first.strip_prefix('`').and_then(|p| p.strip_suffix('`')) {
            rows.push(path.to_string());
        }
    }
    rows
}

fn rust_files(dir: &Path, ws: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(ws).unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if !["target", ".git", "data"].contains(&path.file_name().unwrap().to_str().unwrap()) {
                rust_files(&path, ws, out);
            }
        } else if rel.ends_with(".rs") {
            // A directory module is listed as its directory.
            let row = match rel.strip_suffix("mod.rs") {
                Some(dir) => dir.to_string(),
                None => rel,
            };
            out.insert(row);
        }
    }
}

#[test]
fn the_architecture_map_matches_the_tree() {
    let ws = workspace();
    let doc = std::fs::read_to_string(ws.join("docs/architecture.md")).unwrap();
    let rows = map_rows(&doc);
    assert!(
        rows.len() > 20,
        "docs/architecture.md must open with the code map, found {} rows",
        rows.len()
    );

    let mut want = BTreeSet::new();
    for krate in ["dhcp-ebpf", "dhcp-user", "xtask", "tests"] {
        want.insert(format!("{krate}/"));
        rust_files(&ws.join(krate), &ws, &mut want);
    }
    let have: BTreeSet<String> = rows.iter().cloned().collect();

    let missing: Vec<_> = want.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "in the tree but not in docs/architecture.md's code map: {missing:?}"
    );
    let stale: Vec<_> = rows.iter().filter(|r| !ws.join(r).exists()).collect();
    assert!(
        stale.is_empty(),
        "in docs/architecture.md's code map but not in the tree: {stale:?}"
    );
    let extra: Vec<_> = have.difference(&want).collect();
    assert!(
        extra.is_empty(),
        "rows that are neither a crate nor a Rust module: {extra:?}"
    );
}
