//! The relayer's rooms stay layered: each module of `relayer/src` uses only the rooms listed
//! before it (see the `//! # Layout` of `src/lib.rs`), there is no import cycle between rooms,
//! and only the HTTP rooms mention axum.
//!
//! The check reads the source, not the compiled crate: every `crate::<room>` path in a file
//! (`use` lines, grouped `use crate::{a, b::c}` and inline paths), with comments and string
//! literals left out. `LAYERING_SRC=<dir>` checks another tree (e.g. an old checkout) instead of
//! `relayer/src`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The rooms in order: each may use only the rooms before it (and itself).
const ROOMS: [&str; 16] = [
    "exposition",
    "otel",
    "tables",
    "clock",
    "domain",
    "book",
    "store",
    "resilience",
    "settlement",
    "order_saga",
    "exchange",
    "ratelimit",
    "metrics",
    "http",
    "server",
    "main",
];

/// The typed config: usable by every room; it uses only the leaf config modules.
const CONFIG: &str = "config";

/// Config modules that use nothing of the crate, so `config` may use them.
const LEAF_CONFIGS: [&str; 2] = ["ratelimit::config", "resilience::config"];

/// Where axum may be mentioned: the `http` room, `server.rs` and `main.rs`.
const AXUM_ROOMS: [&str; 3] = ["http", "server", "main"];

/// One `crate::…` reference: the room it names, and the room-qualified module when it names a
/// leaf config (`ratelimit::config`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Reference {
    room: String,
    /// `room::module`, the first two segments of the path.
    module: Option<String>,
    line: usize,
}

/// A source file of the tree: its path below the root, its room, and its code (comments and
/// string contents blanked, line breaks kept).
#[derive(Debug)]
struct Source {
    path: String,
    room: String,
    code: String,
}

/// `code` with comments and the contents of string and char literals replaced by spaces; line
/// breaks are kept so positions still name the right line.
fn strip_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !chars
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // A raw string: r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.push('r');
            out.push_str(&"#".repeat(hashes));
            out.push('"');
            j += 1;
            loop {
                match chars.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) => {
                        out.push('"');
                        out.push_str(&"#".repeat(hashes));
                        j += 1 + hashes;
                        break;
                    }
                    Some(&other) => {
                        out.push(blank(other));
                        j += 1;
                    }
                }
            }
            i = j;
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if let Some(&inner) = chars.get(i) {
                    out.push(blank(inner));
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}'), else a lifetime or label.
            if next == Some('\\') {
                out.push('\'');
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    out.push(' ');
                    i += 1;
                }
                out.push_str(" '");
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                out.push_str("' '");
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The identifier starting at `i` (after spaces), and the index after it.
fn ident_at(chars: &[char], mut i: usize) -> (String, usize) {
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    let start = i;
    while chars.get(i).is_some_and(|c| is_ident(*c)) {
        i += 1;
    }
    (chars[start..i].iter().collect(), i)
}

/// The path segment after `::` at `i` (spaces allowed), if there is one.
fn next_segment(chars: &[char], mut i: usize) -> Option<String> {
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    if chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':') {
        let (name, _) = ident_at(chars, i + 2);
        (!name.is_empty()).then_some(name)
    } else {
        None
    }
}

/// Every `crate::…` reference in `code` (already stripped of comments and strings).
fn references(code: &str) -> Vec<Reference> {
    let chars: Vec<char> = code.chars().collect();
    let line_of = |i: usize| chars[..i].iter().filter(|c| **c == '\n').count() + 1;
    let mut found = Vec::new();
    let mut i = 0;
    while i + 5 <= chars.len() {
        let is_crate = chars[i..i + 5].iter().collect::<String>() == "crate"
            && !chars
                .get(i.wrapping_sub(1))
                .is_some_and(|p| is_ident(*p) || *p == '$');
        if !is_crate {
            i += 1;
            continue;
        }
        let mut j = i + 5;
        while chars.get(j).is_some_and(|c| c.is_whitespace()) {
            j += 1;
        }
        if !(chars.get(j) == Some(&':') && chars.get(j + 1) == Some(&':')) {
            i += 5;
            continue;
        }
        j += 2;
        while chars.get(j).is_some_and(|c| c.is_whitespace()) {
            j += 1;
        }
        if chars.get(j) == Some(&'{') {
            // A group: every top-level item names a room.
            let mut depth = 0;
            let mut expect_item = true;
            while let Some(&c) = chars.get(j) {
                match c {
                    '{' => {
                        depth += 1;
                        j += 1;
                    }
                    '}' => {
                        depth -= 1;
                        j += 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' => {
                        if depth == 1 {
                            expect_item = true;
                        }
                        j += 1;
                    }
                    c if depth == 1 && expect_item && is_ident(c) => {
                        let (name, end) = ident_at(&chars, j);
                        let module = next_segment(&chars, end).map(|m| format!("{name}::{m}"));
                        found.push(Reference {
                            room: name,
                            module,
                            line: line_of(j),
                        });
                        expect_item = false;
                        j = end;
                    }
                    _ => j += 1,
                }
            }
        } else {
            let (name, end) = ident_at(&chars, j);
            if !name.is_empty() {
                let module = next_segment(&chars, end).map(|m| format!("{name}::{m}"));
                found.push(Reference {
                    room: name,
                    module,
                    line: line_of(j),
                });
            }
            j = end;
        }
        i = j.max(i + 5);
    }
    found
}

/// Whether `code` mentions axum (as a path or an identifier).
fn mentions_axum(code: &str) -> Option<usize> {
    code.match_indices("axum").find_map(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + 4..].chars().next();
        let word = !before.is_some_and(is_ident) && !after.is_some_and(is_ident);
        word.then(|| code[..i].matches('\n').count() + 1)
    })
}

/// The room of a file below the source root: its first path component (`http/routes/x.rs` →
/// `http`, `clock.rs` → `clock`); a leaf config module is a room of its own.
fn room_of(relative: &Path) -> String {
    let parts: Vec<String> = relative
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned()
        })
        .collect();
    let joined = parts.join("::");
    if LEAF_CONFIGS.contains(&joined.as_str()) {
        return joined;
    }
    parts.first().cloned().unwrap_or_default()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources(root: &Path) -> Vec<Source> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    files
        .into_iter()
        .map(|path| {
            let relative = path
                .strip_prefix(root)
                .expect("below the root")
                .to_path_buf();
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            Source {
                path: relative.display().to_string(),
                room: room_of(&relative),
                code: strip_comments_and_strings(&text),
            }
        })
        .collect()
}

fn rank(room: &str) -> Option<usize> {
    ROOMS.iter().position(|r| *r == room)
}

/// Every way the tree at `root` breaks the layering, one line each naming the file.
fn violations(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    // Room → room edges, with the file and line of the first reference making each.
    let mut edges: BTreeMap<(String, String), String> = BTreeMap::new();
    // Files of rooms missing from ROOMS, named once each.
    let mut unknown: BTreeSet<String> = BTreeSet::new();
    for source in sources(root) {
        let here = source.room.as_str();
        if let Some(line) = mentions_axum(&source.code)
            && !AXUM_ROOMS.contains(&here)
        {
            problems.push(format!(
                "{}:{line}: mentions axum outside http/, server.rs and main.rs",
                source.path
            ));
        }
        if here == "lib" {
            continue;
        }
        for reference in references(&source.code) {
            let at = format!("{}:{}", source.path, reference.line);
            let named = format!(
                "crate::{}",
                reference.module.as_ref().unwrap_or(&reference.room)
            );
            let target = match &reference.module {
                Some(m) if LEAF_CONFIGS.contains(&m.as_str()) => m.clone(),
                _ => reference.room.clone(),
            };
            if LEAF_CONFIGS.contains(&here) {
                problems.push(format!(
                    "{at}: `{named}`: the leaf config module {here} uses nothing of the crate"
                ));
                continue;
            }
            if target == here
                || (LEAF_CONFIGS.contains(&target.as_str()) && target.starts_with(here))
            {
                continue;
            }
            edges
                .entry((here.to_owned(), target.clone()))
                .or_insert_with(|| at.clone());
            if target == CONFIG || LEAF_CONFIGS.contains(&target.as_str()) {
                // Every room may use the config; the config itself only the leaf configs.
                continue;
            }
            if here == CONFIG {
                problems.push(format!(
                    "{at}: `{named}`: config may use only {}",
                    LEAF_CONFIGS.join(" and ")
                ));
                continue;
            }
            match (rank(here), rank(&target)) {
                (Some(from), Some(to)) if to > from => problems.push(format!(
                    "{at}: `{named}`: room {here} uses {target}, which comes after it"
                )),
                (Some(_), Some(_)) => {}
                (None, _) => {
                    if unknown.insert(source.path.clone()) {
                        problems.push(format!(
                            "{at}: room {here} is not in the layering (add it to ROOMS and lib.rs)"
                        ));
                    }
                }
                (_, None) => problems.push(format!(
                    "{at}: `{named}`: room {target} is not in the layering"
                )),
            }
        }
    }
    problems.extend(cycles(&edges));
    problems
}

/// Every cycle between rooms, each once, with the reference making each edge.
fn cycles(edges: &BTreeMap<(String, String), String>) -> Vec<String> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        graph.entry(from).or_default().insert(to);
    }
    let mut found: BTreeSet<Vec<String>> = BTreeSet::new();
    // NB: a dozen rooms: a search from every room is cheap.
    for start in graph.keys() {
        let mut stack: Vec<(&str, Vec<&str>)> = vec![(start, vec![start])];
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(node).into_iter().flatten() {
                if next == start {
                    // Canonical form: rotated to start at its smallest room.
                    let mut cycle: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
                    let min = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, r)| (*r).clone())
                        .map_or(0, |(i, _)| i);
                    cycle.rotate_left(min);
                    found.insert(cycle);
                } else if !path.contains(next) {
                    let mut longer = path.clone();
                    longer.push(next);
                    stack.push((next, longer));
                }
            }
        }
    }
    found
        .into_iter()
        .map(|cycle| {
            let hops: Vec<String> = cycle
                .iter()
                .zip(cycle.iter().cycle().skip(1))
                .map(|(a, b)| format!("{a} → {b} ({})", edges[&(a.clone(), b.clone())]))
                .collect();
            format!("import cycle: {}", hops.join(", "))
        })
        .collect()
}

#[test]
fn each_room_uses_only_the_rooms_before_it_and_only_http_knows_axum() {
    let root = std::env::var_os("LAYERING_SRC").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        PathBuf::from,
    );
    let problems = violations(&root);
    assert!(
        problems.is_empty(),
        "the layering of {} is broken:\n{}",
        root.display(),
        problems.join("\n")
    );
}

#[test]
fn references_are_read_from_use_lines_groups_and_inline_paths_but_not_comments() {
    let code = strip_comments_and_strings(
        r#"
use crate::clock::Clock;
use crate::{domain::UserId, store::{Store, StoreError}, book};
// use crate::server::AppState;
/// See [`crate::http`].
/* crate::metrics */
fn f() -> crate::exchange::Exchange { let _ = "crate::server"; let c = 'x'; todo!() }
pub(crate) fn g<'a>(x: &'a str) -> &'a str { x }
"#,
    );
    let rooms: Vec<String> = references(&code).into_iter().map(|r| r.room).collect();
    assert_eq!(rooms, ["clock", "domain", "store", "book", "exchange"]);
    assert_eq!(
        mentions_axum(&strip_comments_and_strings("// axum\nuse axum_x;")),
        None
    );
    assert_eq!(mentions_axum("\nuse axum::Router;"), Some(2));
}

#[test]
fn a_room_using_a_later_room_and_a_cycle_are_both_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        fs::write(path, text).expect("write");
    };
    write("clock.rs", "use crate::domain::X;\n");
    write("domain.rs", "fn f() { crate::clock::now_ms(); }\n");
    write("metrics.rs", "use axum::Router;\n");
    write("ratelimit/config.rs", "use crate::domain::UserId;\n");
    write(
        "config.rs",
        "use crate::{ratelimit::config::A, resilience::config::B, store};\n",
    );
    let problems = violations(dir.path());
    let has = |needle: &str| problems.iter().any(|p| p.contains(needle));
    assert!(
        has("clock.rs:1: `crate::domain::X`: room clock uses domain"),
        "{problems:#?}"
    );
    assert!(
        has("import cycle: clock → domain (clock.rs:1), domain → clock (domain.rs:1)"),
        "{problems:#?}"
    );
    assert!(has("metrics.rs:1: mentions axum"), "{problems:#?}");
    assert!(
        has("ratelimit/config.rs:1: `crate::domain::UserId`: the leaf config"),
        "{problems:#?}"
    );
    assert!(
        has("config.rs:1: `crate::store`: config may use only"),
        "{problems:#?}"
    );
    assert_eq!(problems.len(), 5, "{problems:#?}");
}
