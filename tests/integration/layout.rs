//! The supervisor's shape, checked: no module of `src/supervisor` imports one that imports it
//! back (directly or through others), and the keeper and the worker never import each other.
//! Needs no root.
//!
//! An edge is any path a file names (`super::x`, `crate::supervisor::x::y`, `use x::...` of a
//! child module in a `mod.rs`), resolved to the module file it reaches. Unit tests (`tests.rs`,
//! `mod tests { ... }`) are left out: a test may reach anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`supervisor::worker::serve`) → its file.
fn modules(root: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.join("supervisor")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("tests.rs") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().with_extension("");
            let mut segs: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if segs.last().is_some_and(|s| s == "mod") {
                segs.pop();
            }
            out.insert(segs.join("::"), path);
        }
    }
    out
}

/// The file's text without its `#[cfg(test)] mod tests { ... }` and comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => &text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path in `code` that starts with `super::` or `crate::`, or with one of `children`,
/// as absolute segments (brace groups expanded one level: `super::{a, b::c}`).
fn paths(module: &str, code: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    // `super` is the parent module, whether the module is a file or a directory's `mod.rs`.
    let own: Vec<&str> = module.split("::").collect();
    let bytes = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !ident(bytes[i]) || (i > 0 && (ident(bytes[i - 1]) || bytes[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < bytes.len() && (ident(bytes[j]) || bytes[j] == b':') {
            j += 1;
        }
        let word = &code[i..j];
        if !word.contains("::") {
            // `pub(super)`, a lone name: no path.
            i = j;
            continue;
        }
        let segs: Vec<&str> = word.split("::").filter(|s| !s.is_empty()).collect();
        let mut abs: Option<Vec<String>> = None;
        if segs.first() == Some(&"crate") {
            abs = Some(segs[1..].iter().map(|s| s.to_string()).collect());
        } else if segs.first() == Some(&"super") {
            let mut at: Vec<&str> = own.clone();
            let mut k = 0;
            while segs.get(k) == Some(&"super") {
                at.pop();
                k += 1;
            }
            abs = Some(at.iter().chain(&segs[k..]).map(|s| s.to_string()).collect());
        } else if segs.len() > 1 && children.contains(segs[0]) {
            abs = Some(own.iter().chain(&segs).map(|s| s.to_string()).collect());
        } else if segs.len() == 1 && children.contains(segs[0]) && code[j..].starts_with('{') {
            abs = Some(own.iter().chain(&segs).map(|s| s.to_string()).collect());
        }
        if let Some(prefix) = abs {
            if code[j..].starts_with('{') || code[j..].starts_with("::{") {
                let open = j + code[j..].find('{').unwrap();
                let close = open + code[open..].find('}').unwrap_or(0);
                for item in code[open + 1..close].split(',') {
                    let item = item.trim();
                    let first = item
                        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                        .next()
                        .unwrap_or("");
                    if first.is_empty() || first == "self" {
                        out.push(prefix.clone());
                        continue;
                    }
                    let mut p = prefix.clone();
                    p.extend(
                        first
                            .split("::")
                            .filter(|s| !s.is_empty())
                            .map(String::from),
                    );
                    out.push(p);
                }
            } else {
                out.push(prefix);
            }
        }
        i = j;
    }
    out
}

/// The module file a path reaches: its longest prefix that is a module.
fn resolve(path: &[String], modules: &BTreeMap<String, PathBuf>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains_key(m))
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&root);
    let mut edges = BTreeMap::new();
    for (module, file) in &modules {
        let children: BTreeSet<String> = modules
            .keys()
            .filter_map(|m| m.strip_prefix(&format!("{module}::")))
            .filter(|rest| !rest.contains("::"))
            .map(String::from)
            .collect();
        let code = code(file);
        let to: BTreeSet<String> = paths(module, &code, &children)
            .iter()
            .filter_map(|p| resolve(p, &modules))
            .filter(|m| m != module)
            .collect();
        edges.insert(module.clone(), to);
    }
    edges
}

/// A cycle through `start`, if there is one.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_owned(), vec![start.to_owned()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in edges.get(&at).into_iter().flatten() {
            if next == start {
                let mut c = path.clone();
                c.push(next.clone());
                return Some(c);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

#[test]
fn no_module_of_the_supervisor_imports_one_that_imports_it_back() {
    let edges = graph();
    assert!(
        edges.len() > 30,
        "the supervisor's modules were not found: {edges:?}"
    );
    // The check finds edges: the serve loop reaches both checkpoints.
    let serve = &edges["supervisor::worker::serve"];
    assert!(
        serve.contains("supervisor::worker::image") && serve.contains("supervisor::worker::exec"),
        "{serve:?}"
    );
    let cycles: Vec<Vec<String>> = edges.keys().filter_map(|m| cycle(&edges, m)).collect();
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn the_keeper_and_the_worker_never_import_each_other() {
    for (module, to) in graph() {
        for side in ["keeper", "worker"] {
            let other = if side == "keeper" { "worker" } else { "keeper" };
            if module.starts_with(&format!("supervisor::{side}")) {
                let crossing: Vec<_> = to
                    .iter()
                    .filter(|t| t.starts_with(&format!("supervisor::{other}")))
                    .collect();
                assert!(crossing.is_empty(), "{module} imports {crossing:?}");
            }
        }
    }
}
