//! The import structure of `src/` (issue 10): no import circle among its
//! modules, and the two backends never import each other: `cuda/` never
//! imports the CPU reference `ops/`, `ops/` never the GPU's `cuda/` (only
//! `backend.rs` sees both; what both share lives below both, in
//! `layers.rs`; `cuda/` may import other neutral modules such as the
//! optimiser configuration or the data records).
//!
//! Read from the source text, comments skipped: `use` trees (grouped,
//! multi-line, `self`, `super`, child-relative) and inline `crate::` and
//! `super::` paths. A path names the deepest module file it reaches, through
//! `pub use` re-exports (`crate::Window` is `layers.rs`); `mod child;` is no
//! edge, `pub use child::X` is one. Inline `mod tests { .. }` blocks are
//! found by rustfmt's indentation, so their `super::*` is the file itself.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Each module's path from the crate root (`["ops", "batchnorm"]`) and its file.
type Modules = BTreeMap<Vec<String>, String>;
/// Each file and the files it imports from.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The module a file under `src/` holds: `ops/mod.rs` is `["ops"]`, `lib.rs` the root.
fn module_of(rel: &str) -> Vec<String> {
    let mut segs: Vec<String> = rel.trim_end_matches(".rs").split('/').map(String::from).collect();
    if matches!(segs.last().map(String::as_str), Some("mod" | "lib")) {
        segs.pop();
    }
    segs
}

/// The library's files under `dir` (not `main.rs`, a crate of its own) and their text.
fn read_files(dir: &Path, src: &Path, out: &mut BTreeMap<String, String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(src).unwrap().to_str().unwrap().replace('\\', "/");
        if path.is_dir() {
            read_files(&path, src, out);
        } else if rel.ends_with(".rs") && rel != "main.rs" && !rel.starts_with("bin/") {
            out.insert(format!("src/{rel}"), fs::read_to_string(&path).unwrap());
        }
    }
}

fn segs(s: &str) -> Vec<String> {
    s.split("::")
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

/// The paths of a use tree, each with the name it brings in.
fn expand(tree: &str, prefix: &[String], out: &mut Vec<(Vec<String>, String)>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let prefix = [prefix, &segs(&tree[..open])].concat();
        let inner = &tree[open + 1..tree.rfind('}').unwrap()];
        let (mut depth, mut start) = (0, 0);
        for (i, c) in inner.char_indices().chain([(inner.len(), ',')]) {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    if !inner[start..i].trim().is_empty() {
                        expand(&inner[start..i], &prefix, out);
                    }
                    start = i + 1;
                }
                _ => {}
            }
        }
    } else {
        let (path, alias) = tree
            .split_once(" as ")
            .map_or((tree, None), |(p, a)| (p, Some(a.trim())));
        let mut full = [prefix, &segs(path)].concat();
        if full.last().is_some_and(|s| s == "self") {
            full.pop();
        }
        let name = alias
            .map(String::from)
            .or_else(|| full.last().cloned())
            .unwrap_or_default();
        out.push((full, name));
    }
}

/// `path` as seen from module `here`, made absolute; None for other crates.
fn absolute(here: &[String], path: &[String], modules: &Modules) -> Option<Vec<String>> {
    let (mut abs, mut rest) = (here.to_vec(), path);
    match path.first()?.as_str() {
        "crate" => (abs, rest) = (vec![], &path[1..]),
        "self" => rest = &path[1..],
        "super" => {
            while rest.first().is_some_and(|s| s == "super") {
                abs.pop();
                rest = &rest[1..];
            }
        }
        first if !modules.contains_key(&[here, &[first.to_string()]].concat()) => return None,
        _ => {}
    }
    abs.extend(rest.iter().cloned());
    Some(abs)
}

/// What one file refers to: absolute paths; its re-exports and exported macros (name -> path).
#[derive(Default)]
struct Parsed {
    paths: Vec<Vec<String>>,
    reexports: BTreeMap<String, Vec<String>>,
    macros: BTreeMap<String, Vec<String>>,
}

fn parse(module: &[String], text: &str, modules: &Modules) -> Parsed {
    let mut parsed = Parsed::default();
    let mut inline: Vec<(usize, String)> = vec![]; // open inline modules: (indent, name)
    let (mut stmt, mut stmt_pub, mut macro_export) = (String::new(), false, false);
    // Modules a `use` names (`use crate::cuda::{self, pool as gpu_pool}`), so `gpu_pool::f` counts.
    let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let t = line.split("//").next().unwrap().trim();
        let indent = line.len() - line.trim_start().len();
        if t == "}" && inline.last().is_some_and(|(i, _)| *i == indent) {
            inline.pop();
        }
        let here: Vec<String> = module.iter().chain(inline.iter().map(|(_, n)| n)).cloned().collect();
        let use_start = t
            .split_once("use ")
            .filter(|(vis, _)| vis.is_empty() || vis.starts_with("pub") && !vis.trim_end().contains(' '));
        if !stmt.is_empty() {
            stmt.push(' ');
            stmt.push_str(t);
        } else if let Some((vis, rest)) = use_start {
            (stmt, stmt_pub) = (rest.to_string(), !vis.is_empty());
        } else {
            for key in ["crate", "super"].into_iter().chain(aliases.keys().map(String::as_str)) {
                for (i, _) in t.match_indices(&format!("{key}::")) {
                    if t[..i].ends_with(|c: char| c.is_alphanumeric() || "_$:.".contains(c)) {
                        continue;
                    }
                    let chain: String = t[i..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    let chain = segs(&chain);
                    let path = match aliases.get(key) {
                        Some(module) => [&["crate".to_string()], &module[..], &chain[1..]].concat(),
                        None => chain,
                    };
                    parsed.paths.extend(absolute(&here, &path, modules));
                }
            }
            let decl = t.trim_start_matches("pub(crate) ").trim_start_matches("pub ");
            if let Some(name) = decl.strip_prefix("mod ").and_then(|r| r.strip_suffix(" {")) {
                inline.push((indent, name.to_string()));
            }
            if let Some(name) = t.strip_prefix("macro_rules! ").filter(|_| macro_export) {
                let name = name.trim_end_matches(" {").to_string();
                parsed.macros.insert(name.clone(), [&here[..], &[name]].concat());
            }
            macro_export = t == "#[macro_export]";
        }
        if let Some((tree, _)) = stmt.split_once(';') {
            let mut out = vec![];
            expand(tree, &[], &mut out);
            for (path, name) in out {
                if let Some(abs) = absolute(&here, &path, modules) {
                    if stmt_pub && name != "*" {
                        parsed.reexports.insert(name.clone(), abs.clone());
                    }
                    if modules.contains_key(&abs) {
                        aliases.insert(name, abs.clone());
                    }
                    parsed.paths.push(abs);
                }
            }
            stmt.clear();
        }
    }
    parsed
}

type Reexports = BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>;

/// The file an absolute path names: its deepest module, through re-exports.
fn resolve(abs: &[String], modules: &Modules, reexports: &Reexports, depth: usize) -> String {
    let k = (0..=abs.len())
        .rev()
        .find(|&k| modules.contains_key(&abs[..k]))
        .unwrap();
    match abs.get(k).and_then(|name| reexports.get(&abs[..k])?.get(name)) {
        Some(target) if depth < 8 => resolve(&[target, &abs[k + 1..]].concat(), modules, reexports, depth + 1),
        _ => modules[&abs[..k]].clone(),
    }
}

/// The import graph of `files` (`src/..` path -> source text).
fn graph_of(files: &BTreeMap<String, String>) -> Graph {
    let modules: Modules = files.keys().map(|f| (module_of(&f[4..]), f.clone())).collect();
    let modules = &modules;
    let parsed: BTreeMap<_, _> = modules.iter().map(|(m, f)| (m, parse(m, &files[f], modules))).collect();
    let mut reexports: Reexports = parsed.iter().map(|(m, p)| (m.to_vec(), p.reexports.clone())).collect();
    for p in parsed.values() {
        reexports.entry(vec![]).or_default().extend(p.macros.clone());
    }
    let mut graph = Graph::new();
    for (m, p) in &parsed {
        let from = &modules[*m];
        let deps = graph.entry(from.clone()).or_default();
        for path in &p.paths {
            deps.insert(resolve(path, modules, &reexports, 0));
        }
        deps.remove(from);
    }
    graph
}

/// Every circle, found as a back edge of a depth-first search: `a -> b -> a`.
fn cycles(graph: &Graph) -> Vec<String> {
    fn visit(
        n: &str,
        graph: &Graph,
        done: &mut BTreeMap<String, bool>,
        stack: &mut Vec<String>,
        out: &mut Vec<String>,
    ) {
        done.insert(n.to_string(), false);
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            match done.get(m) {
                None => visit(m, graph, done, stack, out),
                Some(false) => {
                    let start = stack.iter().position(|s| s == m).unwrap();
                    out.push([&stack[start..], &[m.clone()]].concat().join(" -> "));
                }
                Some(true) => {}
            }
        }
        stack.pop();
        done.insert(n.to_string(), true);
    }
    let (mut done, mut out) = (BTreeMap::new(), vec![]);
    for n in graph.keys() {
        if !done.contains_key(n) {
            visit(n, graph, &mut done, &mut vec![], &mut out);
        }
    }
    out
}

/// Every import of a file under `from` from a file under `to` (`src/cuda/`,
/// `src/ops/`).
fn imports_between(graph: &Graph, from: &str, to: &str) -> Vec<String> {
    let edges = graph
        .iter()
        .flat_map(|(file, deps)| deps.iter().map(move |dep| (file, dep)));
    edges
        .filter(|(file, dep)| file.starts_with(from) && dep.starts_with(to))
        .map(|(file, dep)| format!("{file} -> {dep}"))
        .collect()
}

#[test]
fn no_import_circle_and_the_backends_never_import_each_other() {
    let (src, mut files) = (Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), BTreeMap::new());
    read_files(&src, &src, &mut files);
    let graph = graph_of(&files);
    // The parser sees imports at all: the backend switch reaches both backends.
    for backend in ["src/ops/conv.rs", "src/cuda/conv.rs"] {
        assert!(graph["src/backend.rs"].contains(backend), "{graph:#?}");
    }
    let circles = cycles(&graph);
    assert!(circles.is_empty(), "import circles:\n{}", circles.join("\n"));
    for (from, to) in [("src/cuda/", "src/ops/"), ("src/ops/", "src/cuda/")] {
        let wrong = imports_between(&graph, from, to);
        assert!(wrong.is_empty(), "{from} imports {to}:\n{}", wrong.join("\n"));
    }
}

/// The checks above can fail: a hand-made tree with a circle and a cuda -> ops import.
#[test]
fn the_checks_find_a_planted_circle_and_cuda_import() {
    let files = [
        ("src/lib.rs", "pub mod a;\npub mod cuda;\npub mod ops;\npub use a::A;\n"),
        (
            "src/a.rs",
            "use crate::{ops::b::{self, B}, cuda as gpu};\nfn f() {\n    gpu::k::g();\n}\n",
        ),
        ("src/ops/mod.rs", "pub mod b;\n"),
        (
            "src/ops/b.rs",
            "use crate::A;\n#[cfg(test)]\nmod tests {\n    use super::*; // itself\n}\n",
        ),
        ("src/cuda/mod.rs", "pub mod k;\n"),
        (
            "src/cuda/k.rs",
            "fn f() {\n    let d = super::super::ops::b::dims();\n}\n",
        ),
    ];
    let graph = graph_of(&files.map(|(f, t)| (f.to_string(), t.to_string())).into());
    assert_eq!(graph["src/lib.rs"], BTreeSet::from(["src/a.rs".to_string()]));
    let a_deps = ["src/cuda/k.rs", "src/cuda/mod.rs", "src/ops/b.rs"];
    assert_eq!(graph["src/a.rs"], a_deps.map(String::from).into());
    assert_eq!(
        cycles(&graph),
        ["src/a.rs -> src/cuda/k.rs -> src/ops/b.rs -> src/a.rs"]
    );
    assert_eq!(
        imports_between(&graph, "src/cuda/", "src/ops/"),
        ["src/cuda/k.rs -> src/ops/b.rs"]
    );
    assert!(imports_between(&graph, "src/ops/", "src/cuda/").is_empty());
}
