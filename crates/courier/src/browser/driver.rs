//! A local chromedriver and the fantoccini sessions opened through it.
//!
//! [`ChromeDriver::start`] runs `chromedriver --port=<free port>` in its own
//! process group, waits until `/status` says ready, and kills the group (so
//! any Chromium it started goes too) when dropped. [`ChromeDriver::session`]
//! opens a headless Chromium on a given profile directory (one per account).
//! [`connect`] works against any WebDriver endpoint (e.g. a Selenium Grid).
//!
//! Sessions use `pageLoadStrategy: "none"`: the first command after a new
//! session otherwise stalls up to 5 s on the initial tab, so callers wait for
//! the elements they need instead.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Map, Value};

/// Errors starting chromedriver or opening a session.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// chromedriver could not be spawned.
    #[error("cannot start {path}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// chromedriver did not report ready in time.
    #[error("chromedriver on port {port} not ready after {waited:?}")]
    NotReady {
        /// Its port.
        port: u16,
        /// How long we waited.
        waited: Duration,
    },
    /// No free port could be found.
    #[error("cannot find a free port")]
    Port(#[source] std::io::Error),
    /// No Chromium binary was found.
    #[error("no Chromium binary found (tried {0})")]
    NoChromium(String),
    /// The WebDriver session could not be created.
    #[error("cannot open a WebDriver session at {url}")]
    Session {
        /// The WebDriver endpoint.
        url: String,
        /// Why.
        #[source]
        source: fantoccini::error::NewSessionError,
    },
    /// The WebDriver endpoint did not answer a new-session request in time
    /// (a Selenium Grid holds requests it has no node for in its queue).
    #[error("no new WebDriver session from {url} within {waited:?}")]
    SessionTimeout {
        /// The WebDriver endpoint.
        url: String,
        /// How long we waited.
        waited: Duration,
    },
    /// TLS setup for the WebDriver connection failed.
    #[error("cannot set up the WebDriver HTTP client")]
    Connector(#[source] std::io::Error),
}

/// Where the binaries are and how to run them.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// The chromedriver binary.
    pub chromedriver: PathBuf,
    /// The Chromium binary; found by [`find_chromium`] when `None`.
    pub chromium: Option<PathBuf>,
    /// How long to wait for chromedriver to answer.
    pub startup_timeout: Duration,
    /// Run headless (`--headless=new`).
    pub headless: bool,
    /// Extra Chromium arguments.
    pub extra_args: Vec<String>,
    /// Longest wait for a new session (`browser.starting_deadline`): a grid
    /// at capacity may hold the request for minutes.
    pub session_timeout: Duration,
}

impl Default for DriverOptions {
    fn default() -> Self {
        Self {
            chromedriver: PathBuf::from("/usr/bin/chromedriver"),
            chromium: None,
            // chromedriver answers in well under a second on an idle host; a
            // loaded one (CI next to other builds) has been seen past 10 s.
            startup_timeout: Duration::from_secs(30),
            headless: true,
            extra_args: Vec::new(),
            session_timeout: Duration::from_secs(60),
        }
    }
}

/// Candidate Chromium binaries, best first (Debian's real binary, then its wrapper).
pub const CHROMIUM_CANDIDATES: &[&str] = &[
    "/usr/lib/chromium/chromium",
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
];

/// The first Chromium binary that exists.
pub fn find_chromium() -> Result<PathBuf, DriverError> {
    CHROMIUM_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| DriverError::NoChromium(CHROMIUM_CANDIDATES.join(", ")))
}

/// The Chromium arguments for a session on `profile`; without one (a remote
/// browser), Chromium runs on the fresh temporary profile its WebDriver
/// makes on its own machine.
pub fn chromium_args(profile: Option<&Path>, headless: bool, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if headless {
        args.insert(0, "--headless=new".into());
    }
    if let Some(profile) = profile {
        args.push(format!("--user-data-dir={}", profile.display()));
    }
    args.extend(extra.iter().cloned());
    args
}

/// `extra` plus `--single-process --no-zygote` when `single` (one process
/// per browser; see `browser.single_process`), unless `extra` names them.
pub fn with_process_model(extra: &[String], single: bool) -> Vec<String> {
    let mut args = extra.to_vec();
    if single {
        for flag in ["--single-process", "--no-zygote"] {
            if !args.iter().any(|a| a == flag) {
                args.push(flag.into());
            }
        }
    }
    args
}

/// `extra` plus `--user-agent=<ua>` (a desktop agent: WhatsApp Web refuses
/// or degrades headless ones), unless `ua` is empty or `extra` sets one.
pub fn with_user_agent(extra: &[String], ua: &str) -> Vec<String> {
    let mut args = extra.to_vec();
    let ua = ua.trim();
    if !ua.is_empty() && !extra.iter().any(|a| a.starts_with("--user-agent")) {
        args.push(format!("--user-agent={ua}"));
    }
    args
}

/// WebDriver capabilities for a Chromium session with `args`. `chromium` is
/// the binary's path on the browser's machine; `None` lets that machine's
/// WebDriver find its own (a Selenium node).
pub fn capabilities(chromium: Option<&Path>, args: Vec<String>) -> Map<String, Value> {
    let mut caps = Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert("pageLoadStrategy".into(), json!("none"));
    let mut options = json!({ "args": args });
    if let Some(binary) = chromium {
        options["binary"] = json!(binary.display().to_string());
    }
    caps.insert("goog:chromeOptions".into(), options);
    caps
}

/// Installs ring as the process's rustls provider unless one is set: both
/// backends are compiled in (via fantoccini and reqwest), so rustls cannot
/// choose by itself and would panic.
pub fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another thread installing one is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Opens a session at any WebDriver endpoint.
pub async fn connect(webdriver: &str, caps: Map<String, Value>) -> Result<Client, DriverError> {
    ensure_crypto_provider();
    let mut builder = ClientBuilder::rustls().map_err(DriverError::Connector)?;
    builder.capabilities(caps);
    builder
        .connect(webdriver)
        .await
        .map_err(|source| DriverError::Session {
            url: webdriver.to_string(),
            source,
        })
}

/// A chromedriver process, killed (with its process group) on drop.
#[derive(Debug)]
pub struct ChromeDriver {
    child: tokio::process::Child,
    port: u16,
    chromium: PathBuf,
    options: DriverOptions,
}

fn free_port() -> Result<u16, DriverError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(DriverError::Port)?;
    Ok(l.local_addr().map_err(DriverError::Port)?.port())
}

impl ChromeDriver {
    /// Starts chromedriver on a free loopback port and waits until it is ready.
    pub async fn start(options: DriverOptions) -> Result<Self, DriverError> {
        let chromium = match &options.chromium {
            Some(p) => p.clone(),
            None => find_chromium()?,
        };
        let port = free_port()?;
        let child = tokio::process::Command::new(&options.chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| DriverError::Spawn {
                path: options.chromedriver.clone(),
                source,
            })?;
        let driver = Self {
            child,
            port,
            chromium,
            options,
        };
        driver.wait_ready().await?;
        Ok(driver)
    }

    async fn wait_ready(&self) -> Result<(), DriverError> {
        let started = Instant::now();
        let http = reqwest::Client::new();
        let url = format!("{}/status", self.url());
        loop {
            if let Ok(r) = http
                .get(&url)
                .timeout(Duration::from_millis(500))
                .send()
                .await
            {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"].as_bool() == Some(true) {
                        return Ok(());
                    }
                }
            }
            if started.elapsed() > self.options.startup_timeout {
                return Err(DriverError::NotReady {
                    port: self.port,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The chromedriver process id (also its process group id).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether chromedriver has exited.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The Chromium binary sessions use.
    pub fn chromium(&self) -> &Path {
        &self.chromium
    }

    /// The WebDriver endpoint, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Opens a headless Chromium on `profile` (created by Chromium if missing).
    /// Close it with `client.close()` so the profile is flushed to disk.
    pub async fn session(&self, profile: &Path) -> Result<Client, DriverError> {
        let args = chromium_args(
            Some(profile),
            self.options.headless,
            &self.options.extra_args,
        );
        connect(&self.url(), capabilities(Some(&self.chromium), args)).await
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // The group holds chromedriver and every Chromium it started.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.start_kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_args_carry_the_profile_and_safety_flags() {
        assert!(!chromium_args(None, true, &[])
            .iter()
            .any(|a| a.starts_with("--user-data-dir")));
        let args = chromium_args(Some(Path::new("/tmp/p1")), true, &[]);
        assert_eq!(args[0], "--headless=new");
        let ua = "Mozilla/5.0 (X11; Linux x86_64) Chrome/136.0.0.0";
        assert_eq!(with_user_agent(&[], ua), vec![format!("--user-agent={ua}")]);
        let own = vec!["--user-agent=mine".to_string()];
        assert_eq!(with_user_agent(&own, ua), own);
        assert!(with_user_agent(&[], " ").is_empty());
        assert!(args.contains(&"--no-sandbox".to_string()));
        assert!(args.contains(&"--user-data-dir=/tmp/p1".to_string()));
        let caps = capabilities(Some(Path::new("/usr/lib/chromium/chromium")), args.clone());
        assert_eq!(caps["pageLoadStrategy"], "none");
        assert_eq!(
            caps["goog:chromeOptions"]["binary"],
            "/usr/lib/chromium/chromium"
        );
        let remote = capabilities(None, args);
        assert!(remote["goog:chromeOptions"].get("binary").is_none());
    }

    #[test]
    fn the_single_process_model_adds_its_flags_once() {
        assert!(with_process_model(&[], false).is_empty());
        assert_eq!(
            with_process_model(&[], true),
            vec!["--single-process".to_string(), "--no-zygote".to_string()]
        );
        let own = vec!["--no-zygote".to_string(), "--lang=en".to_string()];
        assert_eq!(
            with_process_model(&own, true),
            vec![
                "--no-zygote".to_string(),
                "--lang=en".to_string(),
                "--single-process".to_string()
            ]
        );
    }
}
