//! The supervisor's shape, checked: no module of `src/supervisor` imports one that imports it
//! back (directly or through others), and no module of the keeper reaches one of the worker,
//! or the reverse, directly or through the modules they share. Needs no root.
//!
//! An edge is any path a file names (`super::x`, `self::x`, `crate::supervisor::x::y`, `use
//! x::...` of a child module in a `mod.rs`; use groups expanded, nested ones too), resolved to
//! the module file it reaches (a re-export counts as an edge of the module that re-exports). Unit tests (`tests.rs`,
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

/// The file's text without its test module (`mod tests { ... }` under a `#[cfg(...)]` that
/// names `test`, such as `#[cfg(test)]` or `#[cfg(all(test, target_arch = "x86_64"))]`) and
/// comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let test_module = text.match_indices("\nmod tests {").find_map(|(i, _)| {
        let line_start = text[..i].rfind('\n').map_or(0, |j| j + 1);
        let attr = &text[line_start..i];
        (attr.starts_with("#[cfg(") && attr.contains("test")).then_some(line_start)
    });
    let text = match test_module {
        Some(i) => &text[..i],
        None => &text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path in `code` that starts with `super::`, `self::` or `crate::`, or with one of
/// `children`, as absolute segments; brace groups are expanded, nested ones too
/// (`super::{a, b::{c, d}}`).
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
        let abs: Option<Vec<String>> = match segs[0] {
            "crate" => Some(segs[1..].iter().map(|s| s.to_string()).collect()),
            "self" => Some(
                own.iter()
                    .chain(&segs[1..])
                    .map(|s| s.to_string())
                    .collect(),
            ),
            "super" => {
                let mut at: Vec<&str> = own.clone();
                let mut k = 0;
                while segs.get(k) == Some(&"super") {
                    at.pop();
                    k += 1;
                }
                Some(at.iter().chain(&segs[k..]).map(|s| s.to_string()).collect())
            }
            first if children.contains(first) => {
                Some(own.iter().chain(&segs).map(|s| s.to_string()).collect())
            }
            _ => None,
        };
        match abs {
            Some(prefix) if word.ends_with("::") && code[j..].starts_with('{') => {
                let close = matching_brace(code, j);
                expand(&prefix, &code[j + 1..close], &mut out);
                i = close;
                continue;
            }
            Some(prefix) => out.push(prefix),
            None => {}
        }
        i = j;
    }
    out
}

/// The index of the `}` that closes the `{` at `open`.
fn matching_brace(code: &str, open: usize) -> usize {
    let mut depth = 0;
    for (k, c) in code[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return open + k;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// The paths of a use group's items (`a, b::c, d::{e, f}, self, g as h`), below `prefix`.
fn expand(prefix: &[String], group: &str, out: &mut Vec<Vec<String>>) {
    let mut depth = 0;
    let mut start = 0;
    let mut items = Vec::new();
    for (k, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    for item in items {
        let item = item.trim();
        let item = item.split(" as ").next().unwrap_or("").trim();
        if item.is_empty() || item == "*" || item == "self" {
            out.push(prefix.to_vec());
            continue;
        }
        if let Some(open) = item.find('{') {
            let mut p = prefix.to_vec();
            p.extend(
                item[..open]
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
            let close = matching_brace(item, open);
            expand(&p, &item[open + 1..close], out);
            continue;
        }
        let mut p = prefix.to_vec();
        p.extend(item.split("::").filter(|s| !s.is_empty()).map(String::from));
        out.push(p);
    }
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

/// Every module `from` reaches through imports, itself excluded.
fn reach(edges: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_owned()];
    while let Some(at) = stack.pop() {
        for next in edges.get(&at).into_iter().flatten() {
            if seen.insert(next.clone()) {
                stack.push(next.clone());
            }
        }
    }
    seen
}

#[test]
fn the_keeper_and_the_worker_never_reach_each_other() {
    let edges = graph();
    for module in edges.keys() {
        for (side, other) in [("keeper", "worker"), ("worker", "keeper")] {
            if !module.starts_with(&format!("supervisor::{side}")) {
                continue;
            }
            let crossing: Vec<_> = reach(&edges, module)
                .into_iter()
                .filter(|t| t.starts_with(&format!("supervisor::{other}")))
                .collect();
            assert!(
                crossing.is_empty(),
                "{module} reaches {crossing:?} (directly or through shared modules)"
            );
        }
    }
}

#[test]
fn the_import_scan_reads_every_form_of_path() {
    let children: BTreeSet<String> = ["child".to_owned()].into();
    let found = paths(
        "a::b",
        "use super::{x, y::{z, w as v}, self};\nuse self::q::r;\nuse crate::m::n;\nchild::f();",
        &children,
    );
    let found: BTreeSet<String> = found.iter().map(|p| p.join("::")).collect();
    let want: BTreeSet<String> = [
        "a::x",
        "a::y::z",
        "a::y::w",
        "a",
        "a::b::q::r",
        "m::n",
        "a::b::child::f",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(found, want);
}
