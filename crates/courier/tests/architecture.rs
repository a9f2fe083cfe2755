//! The module rules of `../shared/STRUCTURE.md`, enforced by reading the
//! product crate's `use` statements (and, for rule 6, its SQL).
//!
//! Crate boundaries (rule 7) are the compiler's: this crate's manifest has no
//! path to the simulator, the test kit or the lab. Everything else is here:
//! each check names the offending file, line and statement.
//!
//! 1. Nothing imports the command line, and no module uses `app` (only the
//!    binary, the test kit and the lab do).
//! 2. The queue imports no message, browser, worker, scheduler, maintenance,
//!    directory or API code: what the domain adds to a claim comes in through
//!    `queue::Policy`.
//! 3. The browser adapter knows no job handler and no queue internals (it may
//!    name a `queue::Lease`, the fencing token every write carries).
//! 4. `worker/` is the one place that joins the browser and the handler trait
//!    (`app.rs`, which wires the roles, hands the worker's registry over).
//! 5. `config` imports only leaf modules (modules that import nothing of this
//!    crate).
//! 6. Each table has one module that writes it.
//!
//! And: no import cycle among the crate's files, as `use` statements show
//! (`pub use` re-exports are not dependencies of the file's own code).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One `use` of a module of this crate.
#[derive(Debug, Clone)]
struct Import {
    /// The importing file's module path (`["worker", "handlers", "send"]`).
    from: Vec<String>,
    /// The imported module path, resolved to the deepest module that exists.
    to: Vec<String>,
    /// The full path as written, resolved (`crate::queue::handler::Handlers`).
    full: Vec<String>,
    file: String,
    line: usize,
    text: String,
    reexport: bool,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `worker/handlers/send.rs` → `[worker, handlers, send]`; `mod.rs` and
/// `lib.rs` name their directory.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    if last != "mod.rs" && last != "lib.rs" {
        parts.push(last.trim_end_matches(".rs").to_owned());
    }
    parts
}

/// The deepest existing module along `path` (segments after `crate`).
fn resolve(path: &[String]) -> Vec<String> {
    let mut dir = src();
    let mut out = Vec::new();
    for seg in path {
        let file = dir.join(format!("{seg}.rs"));
        let sub = dir.join(seg);
        if file.is_file() || sub.join("mod.rs").is_file() {
            out.push(seg.clone());
            dir = sub;
        } else {
            break;
        }
    }
    out
}

/// Removes comments, keeping line breaks so line numbers stay right.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        let mut cut = line.len();
        for (i, c) in line.char_indices() {
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            }
            if !in_str && c == '/' && prev == '/' {
                cut = i - 1;
                break;
            }
            prev = c;
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    out
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    // `X as Y` names X; drop the alias before the spaces go.
    let words: Vec<&str> = tree.split_whitespace().collect();
    let mut kept = String::new();
    let mut i = 0;
    while i < words.len() {
        if words[i] == "as" && i + 1 < words.len() {
            // The alias may carry the separator that follows it (`Y,` or `Y}`).
            kept.extend(words[i + 1].chars().filter(|c| matches!(c, ',' | '}')));
            i += 2;
        } else {
            kept.push_str(words[i]);
            i += 1;
        }
    }
    let tree = kept;
    fn go(prefix: &str, rest: &str, out: &mut Vec<String>) {
        if let Some(open) = rest.find('{') {
            let head = &rest[..open];
            let inner = &rest[open + 1..rest.rfind('}').unwrap()];
            let mut depth = 0;
            let mut start = 0;
            let mut items = Vec::new();
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&inner[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            items.push(&inner[start..]);
            for item in items.into_iter().filter(|s| !s.is_empty()) {
                go(&format!("{prefix}{head}"), item, out);
            }
        } else {
            let p = format!("{prefix}{rest}");
            out.push(p.trim_end_matches("::self").to_owned());
        }
    }
    let mut out = Vec::new();
    go("", &tree, &mut out);
    out
}

fn imports() -> Vec<Import> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = strip_comments(&std::fs::read_to_string(&file).unwrap());
        let from = module_of(&file);
        let rel = file.strip_prefix(src()).unwrap().display().to_string();
        let mut rest = text.as_str();
        let mut offset = 0;
        while let Some(pos) = find_use(rest) {
            let start = offset + pos;
            let end = text[start..].find(';').map(|e| start + e).unwrap();
            let stmt = text[start..end].trim();
            let line = text[..start].matches('\n').count() + 1;
            let reexport = stmt.starts_with("pub");
            // An indented `use` sits in an inline module (`mod tests { use
            // super::*; }`), one level below the file's module.
            let nested = !text[..start].ends_with('\n') && start != 0;
            let tree = stmt[stmt.find("use ").unwrap() + 4..].trim();
            for path in expand(tree) {
                let segs: Vec<String> = path.split("::").map(str::to_owned).collect();
                let abs: Option<Vec<String>> = match segs.first().map(String::as_str) {
                    Some("crate") => Some(segs[1..].to_vec()),
                    Some("super") => {
                        let mut base = from.clone();
                        if nested {
                            base.push("(inline)".to_owned());
                        }
                        let mut i = 0;
                        while segs.get(i).map(String::as_str) == Some("super") {
                            base.pop();
                            i += 1;
                        }
                        base.extend(segs[i..].iter().cloned());
                        Some(base)
                    }
                    Some("self") => {
                        let mut base = from.clone();
                        base.extend(segs[1..].iter().cloned());
                        Some(base)
                    }
                    _ => None,
                };
                if let Some(full) = abs {
                    let to = resolve(&full);
                    out.push(Import {
                        from: from.clone(),
                        to,
                        full,
                        file: rel.clone(),
                        line,
                        text: stmt.split_whitespace().collect::<Vec<_>>().join(" "),
                        reexport,
                    });
                }
            }
            offset = end + 1;
            rest = &text[offset..];
        }
        // Paths written inline (`crate::error::chain(&e)`) are dependencies
        // too: this crate names most of its neighbours that way.
        for (line_no, line) in text.lines().enumerate() {
            let t = line.trim_start();
            if t.starts_with("use ")
                || t.starts_with("pub use ")
                || t.starts_with("pub(crate) use ")
            {
                continue;
            }
            for (at, _) in line.match_indices("crate::") {
                let before = line[..at].chars().last();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let path: String = line[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let segs: Vec<String> = path
                    .trim_end_matches(':')
                    .split("::")
                    .skip(1)
                    .map(str::to_owned)
                    .collect();
                out.push(Import {
                    from: from.clone(),
                    to: resolve(&segs),
                    full: segs,
                    file: rel.clone(),
                    line: line_no + 1,
                    text: line.trim().to_owned(),
                    reexport: false,
                });
            }
        }
    }
    out
}

/// The next `use` statement at the start of a line (after `pub`, `pub(crate)`).
fn find_use(text: &str) -> Option<usize> {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let t2 = t
            .strip_prefix("pub(crate) ")
            .or_else(|| t.strip_prefix("pub(super) "))
            .or_else(|| t.strip_prefix("pub "))
            .unwrap_or(t);
        if t2.starts_with("use ") {
            return Some(at + (line.len() - t.len()));
        }
        at += line.len();
    }
    None
}

fn under(m: &[String], prefix: &str) -> bool {
    let p: Vec<&str> = prefix.split("::").collect();
    m.len() >= p.len() && m.iter().zip(&p).all(|(a, b)| a == b)
}

fn fail(rule: &str, bad: &[&Import]) {
    if bad.is_empty() {
        return;
    }
    let lines: Vec<String> = bad
        .iter()
        .map(|i| format!("  {}:{}: {}", i.file, i.line, i.text))
        .collect();
    panic!("{rule}:\n{}", lines.join("\n"));
}

#[test]
fn the_parser_sees_every_kind_of_use_statement() {
    assert_eq!(
        expand("crate::{a::{B, C as D}, e, f::self}"),
        vec!["crate::a::B", "crate::a::C", "crate::e", "crate::f"]
    );
    let all = imports();
    assert!(all.len() > 200, "only {} imports read", all.len());
    // A known import, to prove paths resolve to files.
    assert!(all
        .iter()
        .any(|i| i.file == "worker/handlers/send.rs" && i.to == ["message", "status"]));
}

#[test]
fn nothing_imports_the_command_line_or_the_app_wiring() {
    let all = imports();
    let bad: Vec<&Import> = all
        .iter()
        .filter(|i| {
            i.full.first().is_some_and(|s| s == "cli")
                || (under(&i.to, "app") && !under(&i.from, "app"))
        })
        .collect();
    fail("rule 1: only the binary, the test kit and the lab use `app`; nothing imports the command line", &bad);
}

#[test]
fn the_queue_imports_no_domain_above_it() {
    let all = imports();
    let banned = [
        "message",
        "browser",
        "worker",
        "scheduler",
        "maintenance",
        "directory",
        "api",
        "app",
    ];
    let bad: Vec<&Import> = all
        .iter()
        .filter(|i| under(&i.from, "queue") && banned.iter().any(|b| under(&i.to, b)))
        .collect();
    fail("rule 2: the queue imports no message, browser, worker, scheduler, maintenance, directory or API code (use queue::Policy)", &bad);
}

#[test]
fn the_browser_adapter_knows_no_handler_and_no_queue_internals() {
    let all = imports();
    let bad: Vec<&Import> = all
        .iter()
        .filter(|i| under(&i.from, "browser"))
        .filter(|i| {
            [
                "worker",
                "maintenance",
                "scheduler",
                "api",
                "app",
                "message",
                "directory",
            ]
            .iter()
            .any(|b| under(&i.to, b))
                || (under(&i.to, "queue")
                    && i.full != ["queue", "Lease"]
                    && i.full != ["queue", "lease", "Lease"])
        })
        .collect();
    fail("rule 3: the browser adapter knows no job handler and no queue internals (only queue::Lease)", &bad);
}

#[test]
fn only_the_worker_joins_the_browser_and_the_handler_trait() {
    let all = imports();
    let bad: Vec<&Import> = all
        .iter()
        .filter(|i| under(&i.to, "queue::handler"))
        .filter(|i| !under(&i.from, "worker") && !under(&i.from, "queue") && !under(&i.from, "app"))
        .collect();
    fail("rule 4: job handlers live in worker/ (only worker/, the queue and app name queue::handler)", &bad);
    let mut by_file: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for i in &all {
        let e = by_file.entry(i.file.as_str()).or_default();
        e.0 |= under(&i.to, "browser") && !under(&i.from, "browser");
        e.1 |= under(&i.to, "queue::handler");
    }
    let joined: Vec<&str> = by_file
        .iter()
        .filter(|(f, (b, h))| *b && *h && !f.starts_with("worker/") && **f != "app.rs")
        .map(|(f, _)| *f)
        .collect();
    assert!(
        joined.is_empty(),
        "rule 4: only worker/ joins the browser and the handler trait; also: {joined:?}"
    );
}

#[test]
fn config_imports_only_leaf_modules() {
    let all = imports();
    let leaf = |m: &[String]| {
        !all.iter()
            .any(|i| i.from.as_slice() == m && !i.to.is_empty() && i.to != i.from && !i.reexport)
    };
    let bad: Vec<&Import> = all
        .iter()
        .filter(|i| i.from == ["config"] && !i.to.is_empty() && i.to != i.from && !leaf(&i.to))
        .collect();
    fail(
        "rule 5: config imports only leaf modules (modules that import nothing of this crate)",
        &bad,
    );
}

#[test]
fn no_import_cycle_among_the_crates_files() {
    let all = imports();
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for i in all
        .iter()
        .filter(|i| !i.reexport && i.to != i.from && !i.to.is_empty())
    {
        // A file's own submodules (`use self::x`, or a parent naming a child)
        // are part of it: only edges that leave the file's subtree count.
        if i.to.starts_with(&i.from) {
            continue;
        }
        graph
            .entry(i.from.clone())
            .or_default()
            .insert(i.to.clone());
    }
    // Depth-first search for a back edge; report the cycle with its edges.
    fn visit(
        n: &Vec<String>,
        g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        state.insert(n.clone(), 1);
        stack.push(n.clone());
        for m in g.get(n).into_iter().flatten() {
            match state.get(m).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == m).unwrap();
                    return Some(stack[at..].to_vec());
                }
                0 => {
                    if let Some(c) = visit(m, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n).copied().unwrap_or(0) == 0 {
            if let Some(cycle) = visit(n, &graph, &mut state, &mut Vec::new()) {
                let mut lines = Vec::new();
                for (k, a) in cycle.iter().enumerate() {
                    let b = &cycle[(k + 1) % cycle.len()];
                    let i = all
                        .iter()
                        .find(|i| &i.from == a && &i.to == b && !i.reexport)
                        .unwrap();
                    lines.push(format!("  {}:{}: {}", i.file, i.line, i.text));
                }
                panic!("import cycle among files:\n{}", lines.join("\n"));
            }
        }
    }
}

/// Which module owns the writes to each table (rule 6).
const OWNERS: &[(&str, &[&str])] = &[
    ("mkt_wap_accounts", &["account"]),
    ("mkt_wap_session_imports", &["account"]),
    ("mkt_wap_messages", &["message"]),
    ("mkt_wap_message_events", &["message"]),
    ("mkt_wap_groups", &["directory"]),
    ("mkt_wap_contacts", &["directory"]),
    ("mkt_wap_group_members", &["directory"]),
    ("mkt_wap_account_groups", &["directory"]),
    ("queue_jobs", &["queue"]),
    ("account_leases", &["queue"]),
    ("account_sends", &["queue"]),
    ("queue_lanes", &["queue"]),
    ("webhook_subscriptions", &["webhook"]),
    ("webhook_deliveries", &["webhook"]),
    // Inserted only by the triggers of migration 0018; pruned by `events`.
    ("courier_events", &["events"]),
    ("mkt_con_schedule", &["scheduler"]),
    ("scheduler_tasks", &["maintenance"]),
    ("api_tokens", &["access"]),
    ("api_link_keys", &["access"]),
];

/// Writes that stand outside their table's owner, each with its reason.
/// Every entry is debt; the test fails when one is no longer needed, so the
/// list only shrinks.
const KNOWN_OUTSIDE_WRITES: &[(&str, &str, &str)] = &[];

#[test]
fn each_table_has_one_module_that_writes_it() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut bad = Vec::new();
    let mut used = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let module = module_of(file);
        let rel = file.strip_prefix(src()).unwrap().display().to_string();
        let lower = text.to_lowercase();
        for (table, owners) in OWNERS {
            let writes = ["insert into ", "update ", "delete from "].iter().any(|w| {
                lower.match_indices(w).any(|(at, _)| {
                    let after = &lower[at + w.len()..];
                    let name: String = after
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    name == *table
                })
            });
            if writes && !owners.iter().any(|o| under(&module, o)) {
                if KNOWN_OUTSIDE_WRITES
                    .iter()
                    .any(|(f, t, _)| *f == rel && t == table)
                {
                    used.insert((rel.clone(), table.to_string()));
                } else {
                    bad.push(format!(
                        "  {rel} writes {table} (owner: {})",
                        owners.join(", ")
                    ));
                }
            }
        }
    }
    let stale: Vec<String> = KNOWN_OUTSIDE_WRITES
        .iter()
        .filter(|(f, t, _)| !used.contains(&(f.to_string(), t.to_string())))
        .map(|(f, t, _)| format!("  {f} no longer writes {t}: remove it from KNOWN_OUTSIDE_WRITES"))
        .collect();
    bad.extend(stale);
    assert!(
        bad.is_empty(),
        "rule 6: each table has one module that writes it:\n{}",
        bad.join("\n")
    );
}

/// An error's `Display` says what failed, not why: its source is printed by
/// `error::chain`, once. A variant whose message also formats its `#[from]`
/// / `#[source]` field (or a field named `source`) would print it twice.
#[test]
fn no_error_message_repeats_its_source() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut bad = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let rel = file.strip_prefix(src()).unwrap().display().to_string();
        for (at, _) in text.match_indices("#[error(\"") {
            let msg_start = at + "#[error(\"".len();
            let Some(msg_len) = text[msg_start..].find("\")]") else {
                continue;
            };
            let msg = &text[msg_start..msg_start + msg_len];
            // The variant: up to the next attribute or the end of the enum.
            let rest = &text[msg_start + msg_len..];
            let end = rest[3..]
                .find("#[error")
                .map(|e| e + 3)
                .unwrap_or(rest.len())
                .min(rest.find("\n}").unwrap_or(rest.len()));
            let variant = &rest[..end];
            let tuple_source = variant.contains("(#[from]") || variant.contains("(#[source]");
            let named_source = variant.contains("source:") || variant.contains("#[source]");
            if (tuple_source && msg.contains("{0}")) || (named_source && msg.contains("{source}")) {
                let line = text[..at].matches('\n').count() + 1;
                bad.push(format!("  {rel}:{line}: #[error(\"{msg}\")]"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "error messages that repeat their source (error::chain prints it):\n{}",
        bad.join("\n")
    );
}

/// Rule 7 is the compiler's, as long as the manifest says so: the product
/// crate names none of the simulator, the test kit or the lab, in any
/// dependency table.
#[test]
fn the_product_crate_depends_on_no_lab_crate() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    for name in [
        "courier-sim",
        "courier-testkit",
        "courier-lab",
        "courier-cli",
    ] {
        assert!(
            !manifest.lines().any(|l| l.trim_start().starts_with(name)),
            "crates/courier/Cargo.toml depends on {name}"
        );
    }
}
