//! No import cycles between modules. In every crate of the workspace the
//! top-level modules, and the submodules of each module directory among
//! themselves, must form an acyclic graph: then each module can be read,
//! tested and replaced knowing only what it uses, and the crates keep
//! reading as the data flow they are named after.
//!
//! Module `a` uses its sibling `b` when code anywhere under `a` names a path
//! into `b`: `crate::b::..`, `super::b::..`, `self::b::..`, including the
//! members of `use crate::{b, c::D}` groups. Test code is nobody's
//! dependency (a `mod tests` may reach anywhere, e.g. through
//! `use super::*`), so `#[cfg(test)]` items and `mod tests` are skipped.
//!
//! A small scanner rather than a Rust parser: comments and the contents of
//! string and char literals are dropped, the rest is split into identifiers,
//! `::` and punctuation, and paths are read from that.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write;
use std::path::{Path, PathBuf};

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut report = String::new();
    for (name, src) in crate_sources(root) {
        let graphs = graphs(&read_sources(&src));
        let base = src.strip_prefix(root).expect("under the workspace");
        let edges: usize = graphs.values().map(Graph::edge_count).sum();
        eprintln!("{name}: {edges} module dependencies");
        for (parent, graph) in &graphs {
            let label = std::iter::once(name.as_str())
                .chain(parent.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join("::");
            for cycle in graph.cycles() {
                report += &graph.describe(&label, base, &cycle);
            }
        }
    }
    assert!(
        report.is_empty(),
        "import cycles between modules (the first place each step is used is shown):\n{report}"
    );
}

/// The source directory of each workspace member (named after its
/// directory) and of the root package (`satflow`).
fn crate_sources(root: &Path) -> Vec<(String, PathBuf)> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("reading Cargo.toml");
    let members = manifest
        .split_once("members")
        .and_then(|(_, rest)| rest.split_once('['))
        .and_then(|(_, rest)| rest.split_once(']'))
        .expect("a [workspace] members list")
        .0;
    let mut crates: Vec<(String, PathBuf)> = members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .map(|m| (m.to_string(), root.join(m).join("src")))
        .collect();
    crates.push(("satflow".to_string(), root.join("src")));
    crates.retain(|(_, src)| src.is_dir());
    crates
}

/// Every `.rs` file under `src` (path relative to it, text), binaries in
/// `src/bin` excepted: they are crates of their own.
fn read_sources(src: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() && path != src.join("bin") {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("reading a source file");
                let relative = path.strip_prefix(src).expect("under src").to_path_buf();
                files.push((relative, text));
            }
        }
    }
    files.sort();
    files
}

/// The module a file holds: `lib.rs` → the crate root (empty),
/// `cluster/mod.rs` → `cluster`, `cluster/live.rs` → `cluster::live`.
fn module_of(file: &Path) -> Vec<String> {
    let mut path: Vec<String> = file
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = path.last().map(String::as_str);
    if last == Some("mod") || (path.len() == 1 && matches!(last, Some("lib" | "main"))) {
        path.pop();
    }
    path
}

/// Where a sibling is first used: file and line.
type Evidence = (PathBuf, usize);

/// The modules under one parent and which of them use which.
#[derive(Default)]
struct Graph {
    edges: BTreeMap<String, BTreeMap<String, Evidence>>,
}

impl Graph {
    fn add(&mut self, from: &str, to: &str, evidence: Evidence) {
        let targets = self.edges.entry(from.to_string()).or_default();
        targets.entry(to.to_string()).or_insert(evidence);
    }

    fn edge_count(&self) -> usize {
        self.edges.values().map(BTreeMap::len).sum()
    }

    fn successors(&self, node: &str) -> impl Iterator<Item = &String> {
        self.edges.get(node).into_iter().flat_map(BTreeMap::keys)
    }

    /// One shortest cycle through each module that is on a cycle and on
    /// none reported before it, as paths `[a, b, .., a]`.
    fn cycles(&self) -> Vec<Vec<String>> {
        let mut covered: BTreeSet<String> = BTreeSet::new();
        let mut cycles = Vec::new();
        for node in self.edges.keys() {
            if covered.contains(node) {
                continue;
            }
            if let Some(cycle) = self.shortest_cycle(node) {
                covered.extend(cycle.iter().cloned());
                cycles.push(cycle);
            }
        }
        cycles
    }

    /// Breadth-first from `start` back to itself.
    fn shortest_cycle(&self, start: &String) -> Option<Vec<String>> {
        let mut came_from: BTreeMap<&String, &String> = BTreeMap::new();
        let mut queue: VecDeque<&String> = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            for next in self.successors(node) {
                if next == start {
                    let mut path = vec![start.clone(), node.clone()];
                    let mut at = node;
                    while at != start {
                        at = came_from[at];
                        path.push(at.clone());
                    }
                    path.reverse();
                    return Some(path);
                }
                if !came_from.contains_key(next) {
                    came_from.insert(next, node);
                    queue.push_back(next);
                }
            }
        }
        None
    }

    /// `label: a -> b -> a` and where each step is used (files under `base`).
    fn describe(&self, label: &str, base: &Path, cycle: &[String]) -> String {
        let mut text = format!("{label}: {}\n", cycle.join(" -> "));
        for step in cycle.windows(2) {
            let (file, line) = &self.edges[&step[0]][&step[1]];
            let at = base.join(file);
            let at = at.display();
            writeln!(text, "    {} -> {}  at {at}:{line}", step[0], step[1]).expect("a String");
        }
        text
    }
}

/// The dependency graphs of one crate, keyed by parent module (the crate
/// root is the empty path): a reference from module `p::a::..` to
/// `p::b::..` is an edge `a -> b` in the graph of `p`, provided `p::b` is a
/// module (a file) and not an item of `p`.
fn graphs(files: &[(PathBuf, String)]) -> BTreeMap<Vec<String>, Graph> {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(f, _)| module_of(f)).collect();
    let mut scans = Vec::new();
    let mut test_modules = Vec::new();
    for (file, text) in files {
        let scan = scan(&tokens(text), &module_of(file));
        test_modules.extend(scan.test_modules.iter().cloned());
        scans.push((file, scan));
    }
    let mut graphs: BTreeMap<Vec<String>, Graph> = BTreeMap::new();
    for (file, scan) in scans {
        for r in &scan.refs {
            let in_tests = r.from.iter().any(|m| m == "tests");
            if in_tests || test_modules.iter().any(|t| r.from.starts_with(t)) {
                continue;
            }
            let shared = r.from.iter().zip(&r.to).take_while(|(a, b)| a == b).count();
            let sibling = r.to.get(..=shared).filter(|m| modules.contains(*m));
            if let (Some(from), Some(to)) = (r.from.get(shared), sibling) {
                let graph = graphs.entry(r.from[..shared].to_vec()).or_default();
                graph.add(from, &to[shared], (file.clone(), r.line));
            }
        }
    }
    graphs
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

/// The tokens of `text` with their line numbers: identifiers (keywords
/// included), `::` and single punctuation characters; comments, literals
/// and numbers leave nothing behind.
fn tokens(text: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = text.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        let start = i;
        match c[i] {
            '/' if at(i + 1) == '/' => i = skip_line(&c, i),
            '/' if at(i + 1) == '*' => i = skip_block_comment(&c, i),
            '"' => i = skip_string(&c, i),
            '\'' if at(i + 1) == '\\' => i = skip_string(&c, i),
            '\'' if at(i + 2) == '\'' => i += 3,
            ':' if at(i + 1) == ':' => {
                out.push((Tok::Sep, line));
                i += 2;
            }
            ch if ch.is_alphabetic() || ch == '_' => {
                while at(i).is_alphanumeric() || at(i) == '_' {
                    i += 1;
                }
                let word: String = c[start..i].iter().collect();
                match raw_string_end(&c, &word, i) {
                    Some(end) => i = end,
                    None if word == "r" && at(i) == '#' => i += 1, // a raw identifier follows
                    None => out.push((Tok::Ident(word), line)),
                }
            }
            ch if ch.is_ascii_digit() => {
                while at(i).is_alphanumeric() || at(i) == '_' {
                    i += 1;
                }
            }
            ch => {
                if !ch.is_whitespace() && ch != '\'' {
                    out.push((Tok::Punct(ch), line));
                }
                i += 1;
            }
        }
        line += c[start..i].iter().filter(|&&ch| ch == '\n').count();
    }
    out
}

fn skip_line(c: &[char], i: usize) -> usize {
    c[i..]
        .iter()
        .position(|&ch| ch == '\n')
        .map_or(c.len(), |n| i + n)
}

/// Past the end of a (nested) block comment starting at `i`.
fn skip_block_comment(c: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < c.len() {
        match (c[i], c.get(i + 1)) {
            ('/', Some('*')) => (depth, i) = (depth + 1, i + 2),
            ('*', Some('/')) => (depth, i) = (depth - 1, i + 2),
            _ => i += 1,
        }
        if depth == 0 {
            return i;
        }
    }
    c.len()
}

/// Past the closing quote of the string or char literal opened at `i`.
fn skip_string(c: &[char], i: usize) -> usize {
    let quote = c[i];
    let mut j = i + 1;
    while j < c.len() && c[j] != quote {
        j += if c[j] == '\\' { 2 } else { 1 };
    }
    j + 1
}

/// If `word` (just read, ending before `i`) is the `r`/`br` prefix of a raw
/// string, the index past that string's end.
fn raw_string_end(c: &[char], word: &str, i: usize) -> Option<usize> {
    if word != "r" && word != "br" {
        return None;
    }
    let hashes = c[i..].iter().take_while(|&&ch| ch == '#').count();
    if c.get(i + hashes) != Some(&'"') {
        return None;
    }
    let closing: Vec<char> = std::iter::once('"')
        .chain(std::iter::repeat_n('#', hashes))
        .collect();
    let body = i + hashes + 1;
    let end = c[body..]
        .windows(closing.len())
        .position(|w| w == closing.as_slice());
    Some(end.map_or(c.len(), |n| body + n + closing.len()))
}

/// A path named in a file, resolved from the crate root.
struct Ref {
    from: Vec<String>,
    to: Vec<String>,
    line: usize,
}

#[derive(Default)]
struct Scan {
    refs: Vec<Ref>,
    /// File modules declared `#[cfg(test)] mod x;`: test code too.
    test_modules: Vec<Vec<String>>,
}

/// The `crate::`, `super::` and `self::` paths of a file holding `module`.
fn scan(t: &[(Tok, usize)], module: &[String]) -> Scan {
    let mut scan = Scan::default();
    // Inline modules open at this point, with the brace depth they were declared at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let here = |inline: &[(String, usize)]| -> Vec<String> {
        let inline = inline.iter().map(|m| m.0.clone());
        module.iter().cloned().chain(inline).collect()
    };
    let mut i = 0;
    while i < t.len() {
        if is_cfg_test(t, i) {
            i = skip_test_item(t, i + 7, &here(&inline), &mut scan.test_modules);
            continue;
        }
        match (
            &t[i].0,
            t.get(i + 1).map(|x| &x.0),
            t.get(i + 2).map(|x| &x.0),
        ) {
            (Tok::Ident(m), Some(Tok::Ident(name)), Some(Tok::Punct('{'))) if m == "mod" => {
                if name == "tests" {
                    i = skip_item(t, i);
                    continue;
                }
                inline.push((name.clone(), depth));
                i += 2;
            }
            (Tok::Punct('{'), _, _) => {
                depth += 1;
                i += 1;
            }
            (Tok::Punct('}'), _, _) => {
                depth -= 1;
                if inline.last().is_some_and(|m| m.1 == depth) {
                    inline.pop();
                }
                i += 1;
            }
            (Tok::Ident(word), Some(Tok::Sep), _) if starts_path(t, i, word) => {
                let (paths, next) = path(t, i);
                let from = here(&inline);
                for p in paths {
                    if let Some(to) = resolve(&p, &from) {
                        let line = t[i].1;
                        scan.refs.push(Ref {
                            from: from.clone(),
                            to,
                            line,
                        });
                    }
                }
                i = next;
            }
            _ => i += 1,
        }
    }
    scan
}

/// `crate`, `super` or `self` beginning a path (not `pub(in crate::x)`).
fn starts_path(t: &[(Tok, usize)], i: usize, word: &str) -> bool {
    let before = i.checked_sub(1).map(|b| &t[b].0);
    matches!(word, "crate" | "super" | "self")
        && before != Some(&Tok::Sep)
        && before != Some(&Tok::Ident("in".into()))
}

fn is_cfg_test(t: &[(Tok, usize)], i: usize) -> bool {
    let want = ["#", "[", "cfg", "(", "test", ")", "]"];
    t.len() >= i + want.len()
        && t[i..i + want.len()]
            .iter()
            .zip(want)
            .all(|((tok, _), w)| match tok {
                Tok::Ident(s) => s == w,
                Tok::Punct(p) => w.len() == 1 && w.starts_with(*p),
                Tok::Sep => false,
            })
}

/// Skips the item after a `#[cfg(test)]` (further attributes included),
/// noting it when it is a file module (`mod x;`).
fn skip_test_item(
    t: &[(Tok, usize)],
    mut i: usize,
    here: &[String],
    tests: &mut Vec<Vec<String>>,
) -> usize {
    while t.get(i).map(|x| &x.0) == Some(&Tok::Punct('#')) {
        i = skip_group(t, i + 1);
    }
    let head: Vec<&Tok> = t[i..]
        .iter()
        .map(|x| &x.0)
        .take_while(|&x| *x != Tok::Punct(';') && *x != Tok::Punct('{'))
        .collect();
    let ends_with_semicolon = t.get(i + head.len()).map(|x| &x.0) == Some(&Tok::Punct(';'));
    if let [.., Tok::Ident(m), Tok::Ident(name)] = head.as_slice() {
        if m == "mod" && ends_with_semicolon {
            tests.push(here.iter().cloned().chain([name.clone()]).collect());
        }
    }
    skip_item(t, i)
}

/// Past the bracketed group opened at `i`.
fn skip_group(t: &[(Tok, usize)], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < t.len() {
        match t[i].0 {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Past the item starting at `i`: its `;`, or the brace closing its body.
fn skip_item(t: &[(Tok, usize)], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < t.len() {
        match t[i].0 {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']') => depth = depth.saturating_sub(1),
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            Tok::Punct(';') if depth == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// The path(s) starting at `i` (several for a `use` group) and the index
/// after them. A `*` segment stands for a glob.
fn path(t: &[(Tok, usize)], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut segments = Vec::new();
    if let Tok::Ident(first) = &t[i].0 {
        segments.push(first.clone());
        i += 1;
    }
    while t.get(i).map(|x| &x.0) == Some(&Tok::Sep) {
        match t.get(i + 1).map(|x| &x.0) {
            Some(Tok::Ident(s)) => segments.push(s.clone()),
            Some(Tok::Punct('*')) => {
                segments.push("*".into());
                return (vec![segments], i + 2);
            }
            Some(Tok::Punct('{')) => {
                let (members, next) = group(t, i + 2);
                let paths = members
                    .into_iter()
                    .map(|m| [segments.clone(), m].concat())
                    .collect();
                return (paths, next);
            }
            _ => break, // e.g. a turbofish `::<`
        }
        i += 2;
    }
    (vec![segments], i)
}

/// The members of a `use` group whose `{` precedes `i`, relative to the
/// group's prefix (`self` is the prefix itself), and the index after `}`.
fn group(t: &[(Tok, usize)], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut members = Vec::new();
    while i < t.len() {
        match &t[i].0 {
            Tok::Punct('}') => return (members, i + 1),
            Tok::Punct('{') => {
                let (inner, next) = group(t, i + 1);
                members.extend(inner);
                i = next;
            }
            Tok::Ident(s) if s == "self" => {
                members.push(Vec::new());
                i += 1;
            }
            Tok::Ident(s) if s == "as" => i += 2,
            Tok::Ident(_) => {
                let (paths, next) = path(t, i);
                members.extend(paths);
                i = next;
            }
            _ => i += 1,
        }
    }
    (members, i)
}

/// `path` as a path from the crate root, seen from `module`.
fn resolve(path: &[String], module: &[String]) -> Option<Vec<String>> {
    match path.first().map(String::as_str) {
        Some("crate") => Some(path[1..].to_vec()),
        Some("self") => Some([module, &path[1..]].concat()),
        Some("super") => {
            let ups = path.iter().take_while(|s| *s == "super").count();
            let base = module.get(..module.len().checked_sub(ups)?)?;
            Some([base, &path[ups..]].concat())
        }
        _ => None,
    }
}

/// Tests of the checker itself: it must see the cycles it is there to find.
mod checker {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::default();
        for (from, to) in edges {
            g.add(from, to, (PathBuf::from(format!("{from}.rs")), 1));
        }
        g
    }

    fn names(paths: &[&str]) -> Vec<String> {
        paths.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_the_cycles_of_a_graph_with_cycles() {
        let g = graph(&[
            ("a", "b"),
            ("b", "c"),
            ("c", "a"),
            ("c", "d"),
            ("d", "e"),
            ("e", "d"),
        ]);
        assert_eq!(
            g.cycles(),
            vec![names(&["a", "b", "c", "a"]), names(&["d", "e", "d"])]
        );
        assert_eq!(
            g.describe("k", Path::new("k/src"), &g.cycles()[1]),
            "k: d -> e -> d\n    d -> e  at k/src/d.rs:1\n    e -> d  at k/src/e.rs:1\n"
        );
    }

    #[test]
    fn finds_no_cycle_in_an_acyclic_graph() {
        let g = graph(&[("a", "b"), ("b", "c"), ("a", "c"), ("d", "a")]);
        assert!(g.cycles().is_empty());
    }

    #[test]
    fn maps_files_to_modules() {
        assert_eq!(module_of(Path::new("lib.rs")), names(&[]));
        assert_eq!(module_of(Path::new("main.rs")), names(&[]));
        assert_eq!(module_of(Path::new("cluster/mod.rs")), names(&["cluster"]));
        assert_eq!(
            module_of(Path::new("cluster/live.rs")),
            names(&["cluster", "live"])
        );
        assert_eq!(
            module_of(Path::new("cluster/main.rs")),
            names(&["cluster", "main"])
        );
    }

    #[test]
    fn reads_paths_and_skips_comments_literals_and_tests() {
        let text = r##"
            use crate::{a, b::{self, c::D as E}, f::*};
            use super::sibling::Thing;
            pub(crate) fn g<'a>(x: &'a str) -> char {
                // crate::commented
                /* crate::blocked /* crate::nested */ */
                let _ = ("crate::quoted", r#"crate::raw"#, '"', b'"');
                self::child::h::<u8>(crate::called::i());
                '{'
            }
            mod inner { use super::super::up; }
            #[cfg(test)]
            fn helper(x: [u8; 2]) -> u8 { crate::test_only::f(x) }
            #[cfg(test)]
            #[allow(unused)]
            mod more_tests;
            mod tests { use crate::from_tests; }
            use crate::last;
        "##;
        let scan = scan(&tokens(text), &names(&["x", "y"]));
        assert_eq!(scan.test_modules, vec![names(&["x", "y", "more_tests"])]);
        let refs: Vec<(String, usize)> = scan
            .refs
            .iter()
            .map(|r| (r.to.join("::"), r.line))
            .collect();
        let expected = [
            ("a", 2),
            ("b", 2),
            ("b::c::D", 2),
            ("f::*", 2),
            ("x::sibling::Thing", 3),
            ("x::y::child::h", 8),
            ("called::i", 8),
            ("x::up", 11),
            ("last", 18),
        ];
        let expected: Vec<(String, usize)> =
            expected.iter().map(|(p, l)| (p.to_string(), *l)).collect();
        assert_eq!(refs, expected);
    }

    #[test]
    fn builds_graphs_per_parent_from_files() {
        let files: Vec<(PathBuf, String)> = [
            ("lib.rs", "mod a; mod b; mod c; pub use a::X;"),
            ("a.rs", "use crate::b::Y; pub struct X;"),
            ("b.rs", "pub struct Y; fn f() -> super::a::X { crate::X }"),
            ("c/mod.rs", "mod d; mod e; #[cfg(test)] mod tests;"),
            ("c/d.rs", "use super::e::Z; use crate::{a, c::e};"),
            ("c/e.rs", "pub struct Z; use super::*;"),
            ("c/tests.rs", "use super::d; use crate::c;"),
        ]
        .iter()
        .map(|(f, text)| (PathBuf::from(f), text.to_string()))
        .collect();
        let graphs = graphs(&files);
        let edges = |parent: &[&str]| -> Vec<(String, String)> {
            let g = &graphs[&names(parent)];
            g.edges
                .iter()
                .flat_map(|(f, ts)| ts.keys().map(|t| (f.clone(), t.clone())))
                .collect()
        };
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(edges(&[]), pairs(&[("a", "b"), ("b", "a"), ("c", "a")]));
        assert_eq!(edges(&["c"]), pairs(&[("d", "e")]));
        assert_eq!(graphs[&names(&[])].cycles(), vec![names(&["a", "b", "a"])]);
        assert!(graphs[&names(&["c"])].cycles().is_empty());
    }
}
