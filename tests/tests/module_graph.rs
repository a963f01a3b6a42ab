//! No two modules of a crate import each other in a circle: in every crate of the workspace,
//! the modules (one per source file) and the `crate::…` and `super::…` paths between them
//! form a graph without cycles, so each module can be read knowing only those below it.
//! Test modules (`#[cfg(test)] mod tests`) and comments do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: &[&str] = &[
    "proto/src",
    "tsdb/src",
    "query/mql/src",
    "query/chart/src",
    "query/asl/src",
    "ingest/src",
    "agent/src",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `a::b` for `src/a/b.rs` and `src/a/b/mod.rs`; the crate root is "".
fn module_of(root: &Path, file: &Path) -> String {
    let rel = file
        .strip_prefix(root)
        .expect("under the root")
        .with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without comments and without its test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string literal is rare in paths; cutting there only drops text.
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Paths after `prefix` (`crate::` or `super::`): `a::b::c` as its segments.
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before_ok = i == 0
            || !rest.as_bytes()[i - 1].is_ascii_alphanumeric() && rest.as_bytes()[i - 1] != b'_';
        rest = &rest[i + prefix.len()..];
        if !before_ok {
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let segments: Vec<&str> = rest[..end]
            .split("::")
            .take_while(|s| !s.is_empty())
            .collect();
        out.push(segments);
    }
    out
}

/// The module a path names: its longest prefix that is a module.
fn resolve(modules: &BTreeSet<String>, segments: &[&str]) -> Option<String> {
    (0..=segments.len()).rev().find_map(|n| {
        let candidate = segments[..n].join("::");
        modules.contains(&candidate).then_some(candidate)
    })
}

fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Depth-first search; a back edge closes a cycle, reported by the modules on it.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for next in edges.get(m).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                0 => visit(next, edges, state, stack, found),
                1 => {
                    let from = stack.iter().position(|s| s == next).unwrap_or(0);
                    found.push(stack[from..].to_vec());
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
    }
    let mut state = BTreeMap::new();
    let mut found = Vec::new();
    for m in edges.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0 {
            visit(m, edges, &mut state, &mut Vec::new(), &mut found);
        }
    }
    found
}

fn module_graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(root, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(root, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let me = module_of(root, file);
        let text = std::fs::read_to_string(file).expect("a readable source file");
        let code = code(&text);
        let mut deps = BTreeSet::new();
        for segments in paths_after(&code, "crate::") {
            deps.extend(resolve(&modules, &segments));
        }
        // `super::x` from `a::b` is `a::x`.
        let parent: Vec<&str> = me.split("::").filter(|s| !s.is_empty()).collect();
        let parent = &parent[..parent.len().saturating_sub(1)];
        for segments in paths_after(&code, "super::") {
            let full: Vec<&str> = parent.iter().copied().chain(segments).collect();
            deps.extend(resolve(&modules, &full));
        }
        // The crate root re-exports everything; paths to its own items are not modules.
        deps.retain(|d| !d.is_empty() && *d != me);
        edges.insert(me, deps);
    }
    edges
}

#[test]
fn no_module_imports_another_in_a_circle() {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    for krate in CRATES {
        let root = workspace.join(krate);
        let edges = module_graph(&root);
        assert!(edges.len() > 3, "{krate}: only {} modules", edges.len());
        for cycle in cycles(&edges) {
            found.push(format!("{krate}: {}", cycle.join(" -> ")));
        }
    }
    assert!(
        found.is_empty(),
        "modules importing each other in a circle:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_finds_a_circle() {
    let dir = argus_tests::scratch_dir("module-graph");
    std::fs::write(dir.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(dir.join("a.rs"), "use crate::b::B;\npub struct A;\n").unwrap();
    std::fs::write(
        dir.join("b.rs"),
        "// crate::a in a comment does not count\npub struct B(crate::a::A);\n",
    )
    .unwrap();
    let found = cycles(&module_graph(&dir));
    assert_eq!(found, [vec!["a".to_string(), "b".to_string()]]);
    std::fs::write(dir.join("b.rs"), "// crate::a::A\npub struct B;\n").unwrap();
    assert!(cycles(&module_graph(&dir)).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
