//! WhatsApp Web's module contract, `config/wa-web.toml`, as a type.
//!
//! The page driver calls WhatsApp Web's own modules through the page's loader
//! (`window.require(NAME)`), as the maintained clients do. Every module,
//! member, event and state name it uses comes from this file, each with where
//! it was seen, so a new WhatsApp Web build is a configuration edit. The
//! simulator serves the same names from the same file and no others.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The built-in copy of `config/wa-web.toml`.
pub const DEFAULT_WA_WEB_TOML: &str = include_str!("../../../../config/wa-web.toml");

/// Errors loading the contract. Each names the entry at fault.
#[derive(Debug, thiserror::Error)]
pub enum WaWebError {
    /// The file could not be read.
    #[error("cannot read the WhatsApp Web names file {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not match the schema (unknown or missing keys are refused).
    #[error("invalid WhatsApp Web names file")]
    Parse(#[from] toml::de::Error),
    /// An entry is malformed or has no source.
    #[error("WhatsApp Web names file: `{entry}`: {problem}")]
    Invalid {
        /// `section.key`.
        entry: String,
        /// What is wrong.
        problem: String,
    },
}

/// The WhatsApp Web build the names were taken from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// The WhatsApp Web version, e.g. `2.3000.1017054665`.
    pub whatsapp_web: String,
    /// Which client the names were read from, e.g. `whatsapp-web.js 1.34.6`.
    pub taken_from: String,
}

/// One module given to `window.require`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Module {
    /// The name `window.require` takes.
    pub module: String,
    /// The property of the module object that is used, when not the module itself.
    #[serde(default)]
    pub export: Option<String>,
    /// Where the name was seen.
    pub seen: String,
}

/// A member, event or state name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Name {
    /// The page's name; the key when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// What it belongs to (a module key, a model, a result).
    #[serde(default)]
    pub of: Option<String>,
    /// Where the name was seen.
    pub seen: String,
}

/// The whole contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaWeb {
    /// The build.
    pub build: Build,
    /// Modules by the key scripts use.
    pub modules: BTreeMap<String, Module>,
    /// Methods and properties by key.
    pub members: BTreeMap<String, Name>,
    /// Events by key.
    pub events: BTreeMap<String, Name>,
    /// `Socket.state` values by key.
    pub states: BTreeMap<String, Name>,
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == '$')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == '$')
}

impl WaWeb {
    /// Parses and checks a names file: every entry needs a source, and keys
    /// are identifiers (scripts name them).
    pub fn parse(text: &str) -> Result<Self, WaWebError> {
        let w: WaWeb = toml::from_str(text)?;
        w.check()?;
        Ok(w)
    }

    fn check(&self) -> Result<(), WaWebError> {
        let bad = |entry: String, problem: &str| WaWebError::Invalid {
            entry,
            problem: problem.into(),
        };
        if self.build.whatsapp_web.trim().is_empty() {
            return Err(bad("build.whatsapp_web".into(), "must name the build"));
        }
        for (k, m) in &self.modules {
            let entry = format!("modules.{k}");
            if !is_ident(k) {
                return Err(bad(entry, "the key must be an identifier"));
            }
            if m.seen.trim().is_empty() {
                return Err(bad(entry, "says nowhere where the name was seen"));
            }
            if m.module.trim().is_empty() || m.export.as_deref().is_some_and(|e| !is_ident(e)) {
                return Err(bad(entry, "needs a module name (and an identifier export)"));
            }
        }
        for (section, names) in [
            ("members", &self.members),
            ("events", &self.events),
            ("states", &self.states),
        ] {
            for (k, n) in names {
                let entry = format!("{section}.{k}");
                if !is_ident(k) {
                    return Err(bad(entry, "the key must be an identifier"));
                }
                if n.seen.trim().is_empty() {
                    return Err(bad(entry, "says nowhere where the name was seen"));
                }
                if section == "events" && n.name.is_none() {
                    return Err(bad(entry, "an event needs its `name`"));
                }
            }
        }
        Ok(())
    }

    /// Loads `path`, or the built-in copy when `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, WaWebError> {
        match path {
            None => Ok(Self::builtin()),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| WaWebError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                Self::parse(&text)
            }
        }
    }

    /// `config/wa-web.toml` under `COURIER_CONFIG_DIR` (default `config`),
    /// or the built-in copy when that file does not exist.
    pub fn load_default() -> Result<Self, WaWebError> {
        let dir = std::env::var_os("COURIER_CONFIG_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from("config"));
        let file = dir.join("wa-web.toml");
        Self::load(file.is_file().then_some(file.as_path()))
    }

    /// The built-in contract.
    pub fn builtin() -> Self {
        // The embedded file is checked by a unit test, so this cannot fail at run time.
        Self::parse(DEFAULT_WA_WEB_TOML).expect("built-in config/wa-web.toml is valid")
    }

    /// The page's name of a member key.
    pub fn member(&self, key: &str) -> Option<&str> {
        self.members
            .get_key_value(key)
            .map(|(k, n)| n.name.as_deref().unwrap_or(k))
    }

    /// Whether a module name (as given to `window.require`) is in the file.
    pub fn has_module_name(&self, name: &str) -> bool {
        self.modules.values().any(|m| m.module == name)
    }

    /// The names as the in-page scripts take them:
    /// `{mod: {Key: {module, export}}, m: {key: name}, ev: {…}, st: {…}}`.
    pub fn names_json(&self) -> Value {
        let plain = |names: &BTreeMap<String, Name>| -> Value {
            names
                .iter()
                .map(|(k, n)| (k.clone(), json!(n.name.as_deref().unwrap_or(k))))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        json!({
            "build": self.build.whatsapp_web,
            "mod": self.modules.iter().map(|(k, m)| (k.clone(), json!({ "module": m.module, "export": m.export })))
                .collect::<serde_json::Map<_, _>>(),
            "m": plain(&self.members),
            "ev": plain(&self.events),
            "st": plain(&self.states),
        })
    }
}

/// The name keys a script references through the helpers `mod('K')`,
/// `get(x, 'K')`, `call(x, 'K'`, `on(x, 'K'`, `st('K')`, by section
/// (`modules`, `members`, `events`, `states`). Tests check them against the
/// file, for the driver's scripts and the simulator's.
pub fn referenced_keys(script: &str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let patterns: [(&str, &'static str, bool); 6] = [
        ("mod('", "modules", false),
        ("define('", "modules", false),
        ("st('", "states", false),
        ("get(", "members", true),
        ("call(", "members", true),
        ("on(", "events", true),
    ];
    for (open, section, second_arg) in patterns {
        let mut rest = script;
        while let Some(i) = rest.find(open) {
            // Only whole helper names (`get(` but not `target(`).
            let before = rest[..i].chars().next_back();
            rest = &rest[i + open.len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                continue;
            }
            let arg = if second_arg {
                // Skip the first argument (balanced parentheses), then `, '`.
                let mut depth = 0i32;
                let mut end = None;
                for (j, ch) in rest.char_indices() {
                    match ch {
                        '(' | '[' => depth += 1,
                        ')' | ']' => {
                            if depth == 0 {
                                break;
                            }
                            depth -= 1
                        }
                        ',' if depth == 0 => {
                            end = Some(j);
                            break;
                        }
                        _ => {}
                    }
                }
                let Some(end) = end else { continue };
                let after = rest[end + 1..].trim_start();
                match after.strip_prefix('\'') {
                    Some(a) => a,
                    None => continue,
                }
            } else {
                rest
            };
            if let Some(close) = arg.find('\'') {
                out.push((section, arg[..close].to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_names_file_parses_and_every_entry_has_a_source() {
        let w = WaWeb::builtin();
        assert_eq!(w.build.whatsapp_web, "2.3000.1017054665");
        assert_eq!(w.modules["Socket"].module, "WAWebSocketModel");
        assert_eq!(w.member("getModelsArray"), Some("getModelsArray"));
        assert_eq!(w.names_json()["ev"]["change_ack"], "change:ack");
        assert!(w.has_module_name("WAWebCollections"));
    }

    #[test]
    fn a_name_without_a_source_is_refused_with_its_entry() {
        let text = DEFAULT_WA_WEB_TOML.replace(
            "[members.ref]\nof = \"Conn\"\nseen = \"contract: Conn.ref, raising change:ref when it rotates\"",
            "[members.ref]\nof = \"Conn\"\nseen = \"\"",
        );
        assert_ne!(text, DEFAULT_WA_WEB_TOML, "the fixture edit applies");
        let e = WaWeb::parse(&text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "WhatsApp Web names file: `members.ref`: says nowhere where the name was seen"
        );
        let e = WaWeb::parse("[build]\nwhatsapp_web = \"x\"\ntaken_from = \"y\"\nfoo = 1\n")
            .unwrap_err();
        assert!(e.to_string().contains("invalid"), "{e}");
    }

    #[test]
    fn referenced_keys_finds_each_helper_use() {
        let keys = referenced_keys(
            "const S = mod('Socket'); get(S, 'state'); call(get(C, 'Chat'), 'get', id); \
             on(S, 'change_state', f); st('CONNECTED'); target(x, 'nope');",
        );
        assert_eq!(
            keys,
            vec![
                ("modules", "Socket".to_string()),
                ("states", "CONNECTED".to_string()),
                ("members", "state".to_string()),
                ("members", "Chat".to_string()),
                ("members", "get".to_string()),
                ("events", "change_state".to_string()),
            ]
        );
    }
}
