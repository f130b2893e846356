//! The crate's layering, checked from its source: every `crate::` path in a module points
//! to a lower layer, the files of one folder import each other without a cycle, and no
//! source file grows past 500 lines. `docs/architecture.md` draws the same layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first; a module may use only lower layers.
const LAYERS: &[&[&str]] = &[
    &["domain", "sync"],
    &[
        "messages",
        "status",
        "conditions",
        "params",
        "live_ref",
        "batch",
    ],
    &["grouping"],
    &["ports"],
    &["outbox", "sensor"],
    &["matcher"],
    &["generator"],
    &["pipeline"],
    &["supervisor"],
];

const MAX_LINES: usize = 500;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The top-level module a file belongs to (`None` for `lib.rs`).
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src()).expect("under src");
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" => None,
        name => Some(name.trim_end_matches(".rs").to_owned()),
    }
}

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("module '{module}' is in no layer; add it to LAYERS"))
}

/// The names that follow `prefix` in the code (comments excluded), e.g. `crate::` → the
/// top-level modules used.
fn names_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            rest = &rest[at + prefix.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

fn all_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    files
}

#[test]
fn every_crate_import_points_down_a_layer() {
    let mut upward = Vec::new();
    for file in all_files() {
        let Some(module) = module_of(&file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read source");
        for used in names_after(&text, "crate::") {
            if used == module {
                continue;
            }
            if layer_of(&used) >= layer_of(&module) {
                upward.push(format!("{} uses crate::{used}", file.display()));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that do not point down a layer:\n{}",
        upward.join("\n")
    );
}

#[test]
fn files_of_one_folder_import_each_other_without_a_cycle() {
    // Sibling files (not the folder's mod.rs, which declares them) by folder.
    let mut folders: BTreeMap<PathBuf, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in all_files() {
        let (Some(folder), Some(stem)) = (file.parent(), file.file_stem()) else {
            continue;
        };
        let stem = stem.to_string_lossy().into_owned();
        if folder == src() || stem == "mod" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        folders
            .entry(folder.to_owned())
            .or_default()
            .insert(stem, names_after(&text, "super::"));
    }
    for (folder, files) in &folders {
        let edges: BTreeMap<&str, Vec<&str>> = files
            .iter()
            .map(|(file, uses)| {
                let siblings = uses
                    .iter()
                    .filter(|u| files.contains_key(*u) && *u != file)
                    .map(String::as_str)
                    .collect();
                (file.as_str(), siblings)
            })
            .collect();
        if let Some(cycle) = find_cycle(&edges) {
            panic!("a cycle among {}: {}", folder.display(), cycle.join(" -> "));
        }
    }
}

/// A cycle in the graph, as the files on it, if there is one.
fn find_cycle<'a>(edges: &BTreeMap<&'a str, Vec<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node);
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let acyclic = BTreeMap::from([("a", vec!["b"]), ("b", vec!["c"]), ("c", vec![])]);
    assert_eq!(find_cycle(&acyclic), None);
    let cyclic = BTreeMap::from([("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"])]);
    assert_eq!(find_cycle(&cyclic), Some(vec!["a", "b", "c", "a"]));
}

#[test]
fn no_source_file_is_over_500_lines() {
    let long: Vec<String> = all_files()
        .into_iter()
        .filter_map(|file| {
            let lines = std::fs::read_to_string(&file).ok()?.lines().count();
            (lines > MAX_LINES).then(|| format!("{}: {lines} lines", file.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these files:\n{}", long.join("\n"));
}
