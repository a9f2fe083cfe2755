//! Where WebDriver sessions come from: a supervised local chromedriver
//! (restarted with backoff when it dies, each start a new generation) or a
//! remote WebDriver endpoint such as a Selenium Grid.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::driver::{self, ChromeDriver, DriverError, DriverOptions};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    url: String,
    generation: u64,
}

#[derive(Debug)]
pub(super) struct HubInner {
    remote: bool,
    /// The Chromium binary on the browser's machine; `None` (remote, not
    /// configured): the node's WebDriver finds its own.
    chromium: Option<PathBuf>,
    options: DriverOptions,
    current: watch::Sender<Option<Endpoint>>,
    pid: Mutex<Option<u32>>,
    pub(super) stop: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Where WebDriver sessions come from: a supervised local chromedriver or a
/// remote endpoint.
#[derive(Debug, Clone)]
pub struct WebDriverHub {
    pub(super) inner: Arc<HubInner>,
}

impl WebDriverHub {
    /// Uses a remote WebDriver endpoint (e.g. a Selenium Grid). Nothing of
    /// the worker's disk reaches the node: sessions get no profile directory
    /// (the node's WebDriver makes a temporary one) and the Chromium binary
    /// is named only when `chromium` is configured (a path on the node).
    pub fn remote(url: &str, chromium: Option<PathBuf>, options: DriverOptions) -> Self {
        let (current, _) = watch::channel(Some(Endpoint {
            url: url.trim_end_matches('/').to_string(),
            generation: 0,
        }));
        Self {
            inner: Arc::new(HubInner {
                remote: true,
                chromium,
                options,
                current,
                pid: Mutex::new(None),
                stop: CancellationToken::new(),
                task: Mutex::new(None),
            }),
        }
    }

    /// Starts chromedriver on a free loopback port and supervises it: when it
    /// dies, its process group (the orphaned Chromium) is killed and a new one
    /// is started after `backoff` (doubling to 10 s while starts fail).
    pub async fn local(options: DriverOptions, backoff: Duration) -> Result<Self, DriverError> {
        let first = ChromeDriver::start(options.clone()).await?;
        let (current, _) = watch::channel(Some(Endpoint {
            url: first.url(),
            generation: 1,
        }));
        let inner = Arc::new(HubInner {
            remote: false,
            chromium: Some(first.chromium().to_path_buf()),
            options,
            current,
            pid: Mutex::new(first.pid()),
            stop: CancellationToken::new(),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(supervise(inner.clone(), first, backoff));
        *inner.task.lock().expect("hub task") = Some(task);
        Ok(Self { inner })
    }

    /// The local chromedriver's process id (None when remote or restarting).
    pub fn driver_pid(&self) -> Option<u32> {
        *self.inner.pid.lock().expect("hub pid")
    }

    /// Whether sessions go to a remote endpoint.
    pub fn is_remote(&self) -> bool {
        self.inner.remote
    }

    async fn endpoint(&self) -> Result<Endpoint, DriverError> {
        let mut rx = self.inner.current.subscribe();
        let wait = self.inner.options.startup_timeout * 3;
        let got = tokio::time::timeout(wait, rx.wait_for(|e| e.is_some())).await;
        match got {
            Ok(Ok(e)) => Ok(e.clone().expect("checked")),
            _ => Err(DriverError::NotReady {
                port: 0,
                waited: wait,
            }),
        }
    }

    /// The current chromedriver generation (bumped on each restart).
    pub(super) fn generation(&self) -> u64 {
        self.inner
            .current
            .borrow()
            .as_ref()
            .map(|e| e.generation)
            .unwrap_or(0)
    }

    /// Opens a Chromium session on `profile` (a remote session gets none);
    /// returns it with the driver generation.
    pub async fn open(&self, profile: &Path) -> Result<(fantoccini::Client, u64), DriverError> {
        let ep = self.endpoint().await?;
        let args = driver::chromium_args(
            (!self.inner.remote).then_some(profile),
            self.inner.options.headless,
            &self.inner.options.extra_args,
        );
        let waited = self.inner.options.session_timeout;
        let client = tokio::time::timeout(
            waited,
            driver::connect(
                &ep.url,
                driver::capabilities(self.inner.chromium.as_deref(), args),
            ),
        )
        .await
        .map_err(|_| DriverError::SessionTimeout {
            url: ep.url.clone(),
            waited,
        })??;
        Ok((client, ep.generation))
    }

    /// Stops supervising and kills the local chromedriver (and its Chromium).
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        let task = self.inner.task.lock().expect("hub task").take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

async fn supervise(inner: Arc<HubInner>, mut driver: ChromeDriver, backoff: Duration) {
    let mut generation = 1;
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => {
                drop(driver);
                inner.current.send_replace(None);
                return;
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        if !driver.has_exited() {
            continue;
        }
        let old = driver.pid();
        tracing::warn!(pid = ?old, "chromedriver exited; restarting it");
        inner.current.send_replace(None);
        *inner.pid.lock().expect("hub pid") = None;
        // Its Chromium processes are orphans in its process group: kill them
        // so the profiles they hold are free for the new sessions.
        if let Some(pid) = old {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        drop(driver);
        metrics::counter!(crate::metrics::BROWSER_RESTARTS, "component" => "chromedriver")
            .increment(1);
        let mut delay = backoff;
        driver = loop {
            tokio::select! {
                _ = inner.stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            match ChromeDriver::start(inner.options.clone()).await {
                Ok(d) => break d,
                Err(e) => {
                    tracing::error!(error = %crate::error::chain(&e), retry_in = ?delay * 2,
                        "chromedriver restart failed");
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        };
        generation += 1;
        *inner.pid.lock().expect("hub pid") = driver.pid();
        tracing::info!(url = %driver.url(), generation, "chromedriver restarted");
        inner.current.send_replace(Some(Endpoint {
            url: driver.url(),
            generation,
        }));
    }
}
