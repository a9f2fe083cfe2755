//! The session through the page, for a browser whose disk is not the
//! worker's (`browser.webdriver_url`): the WhatsApp Web origin's IndexedDB
//! databases and localStorage exported by script (`storage.js`) as JSON, and
//! imported by it into an empty browser on a page of the origin that does not
//! start the app ([`BLANK_PATH`]), before the app is opened. The pool decides
//! when (only from a connected, synced session; only into an empty browser)
//! and seals the JSON into the snapshot.

use super::*;

/// The export/import script.
const STORAGE_JS: &str = include_str!("storage.js");

/// A path of the WhatsApp Web origin that serves no app: the import runs
/// there, so the app's first load finds the session already in storage. (On
/// an empty profile no service worker is registered yet to serve the app in
/// its place.)
pub const BLANK_PATH: &str = "/robots.txt";

/// WebDriver's own script timeout is 30 s: stay under it.
const STORAGE_CALL: Duration = Duration::from_secs(28);

/// What an export gave.
#[derive(Debug)]
pub enum Exported {
    /// The origin's storage as JSON.
    Dump(Vec<u8>),
    /// The page stopped counting past the limit (bytes counted so far).
    TooLarge(u64),
}

/// What an import did.
#[derive(Debug, PartialEq, Eq)]
pub enum Imported {
    /// Written: IndexedDB databases, their records, localStorage keys.
    Done {
        /// IndexedDB databases created.
        databases: u64,
        /// Records written into them.
        records: u64,
        /// localStorage keys set.
        keys: u64,
    },
    /// The origin already held storage; nothing was written.
    NotEmpty(String),
}

impl WhatsAppPage {
    async fn storage_call(&self, what: &'static str, args: Vec<Value>) -> Result<Value, PageError> {
        let started = Instant::now();
        let r =
            tokio::time::timeout(STORAGE_CALL, self.client.execute_async(STORAGE_JS, args)).await;
        metrics::histogram!(crate::metrics::BROWSER_COMMAND_SECONDS, "command" => what)
            .record(started.elapsed().as_secs_f64());
        let v = match r {
            Ok(r) => r.map_err(|e| self.cmd_error(e))?,
            Err(_) => {
                return Err(PageError::Timeout {
                    what: what.to_string(),
                    after: STORAGE_CALL,
                })
            }
        };
        if let Some(err) = v["err"].as_str() {
            return Err(PageError::Script {
                what: what.to_string(),
                message: err.to_string(),
            });
        }
        Ok(v)
    }

    /// Exports the page origin's IndexedDB databases and localStorage as
    /// JSON, stopping past `max` bytes. The caller checks first that the
    /// session is connected and synced.
    pub async fn export_storage(&self, max: u64) -> Result<Exported, PageError> {
        let v = self
            .storage_call("storage_export", vec![json!("export"), json!(max)])
            .await?;
        if let Some(n) = v["tooLarge"].as_u64() {
            return Ok(Exported::TooLarge(n));
        }
        let dump = serde_json::to_vec(&v["ok"]).map_err(|e| PageError::Script {
            what: "storage_export".into(),
            message: format!("unexpected answer: {e}"),
        })?;
        Ok(Exported::Dump(dump))
    }

    /// The URL of [`BLANK_PATH`] on the WhatsApp Web origin.
    pub fn blank_url(&self) -> Result<String, PageError> {
        let mut u = url::Url::parse(&self.url)
            .map_err(|e| PageError::WebDriver(format!("page URL {}: {e}", self.url)))?;
        u.set_path(BLANK_PATH);
        u.set_query(None);
        u.set_fragment(None);
        Ok(u.to_string())
    }

    /// Writes an exported storage into this (empty) browser: opens
    /// [`BLANK_PATH`] on the origin, waits for it, and imports. Call
    /// [`WhatsAppPage::open`] afterwards to start the app on it.
    pub async fn import_storage(&self, dump: &[u8]) -> Result<Imported, PageError> {
        let dump: Value = serde_json::from_slice(dump).map_err(|e| PageError::Script {
            what: "storage_import".into(),
            message: format!("the snapshot is not JSON: {e}"),
        })?;
        let blank = self.blank_url()?;
        let origin = url::Url::parse(&blank)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        self.cmd("goto", self.client.goto(&blank)).await?;
        let started = Instant::now();
        loop {
            let here = self
                .js(
                    "where",
                    "return [location.origin, location.pathname, document.readyState];",
                    vec![],
                )
                .await?;
            if here[0] == json!(origin)
                && here[1] == json!(BLANK_PATH)
                && here[2].as_str().is_some_and(|s| s != "loading")
            {
                break;
            }
            if started.elapsed() >= self.timeout {
                return Err(PageError::Timeout {
                    what: format!("opening {blank} to import the session (at {here})"),
                    after: self.timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let v = self
            .storage_call("storage_import", vec![json!("import"), dump])
            .await?;
        if let Some(what) = v["notEmpty"].as_str() {
            return Ok(Imported::NotEmpty(what.to_string()));
        }
        let n = |k: &str| v["ok"][k].as_u64().unwrap_or(0);
        Ok(Imported::Done {
            databases: n("databases"),
            records: n("records"),
            keys: n("keys"),
        })
    }
}
