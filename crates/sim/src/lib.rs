//! `courier sim`: a local WhatsApp Web stand-in for tests and the demo.
//!
//! It serves a page that speaks WhatsApp Web's module contract from
//! `config/wa-web.toml` (`window.require(NAME)` returns the socket, the
//! collections of chats, messages, contacts and group metadata, the send,
//! exists and media actions, with their events), keeps a DOM that follows
//! `config/selectors.toml` (QR login with rotating refs, loading, chat list,
//! compose box, acks, group info, faults), and a JSON control API under `/_control` that seeds accounts,
//! chats and groups, plays the phone's scan, sets ack timing and faults, and
//! reads back every message that reached "WhatsApp". State is in memory.
//!
//! A page knows its account from the URL: `http://127.0.0.1:<port>/?account=<id>`
//! (also `/send?account=<id>&phone=<digits>`, which opens that contact's chat,
//! like the real `/send?phone=`). See `docs/simulator.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), courier_sim::StartError> {
//! use courier_sim::{SimConfig, Simulator};
//! let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), SimConfig::default()).await?;
//! println!("open {}", sim.page_url("acc1"));
//! sim.shutdown();
//! # Ok(()) }
//! ```

pub mod cli;
pub mod control;
mod http;
pub mod model;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use control::SimControl;
use courier::browser::selectors::Selectors;
use courier::browser::waweb::WaWeb;
pub use model::{AckTiming, Faults, SimError};

/// Timing of the simulated page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimConfig {
    /// How long the first QR ref lives (real: about 60 s).
    pub first_ref: Duration,
    /// How long each later ref lives (real: about 20 s).
    pub next_ref: Duration,
    /// How many refs are shown before the reload button (WAHA: the first plus 6).
    pub max_refs: u32,
    /// The loading screen after a scan or on a restored session.
    pub loading: Duration,
    /// Default ack timing for new accounts.
    pub ack: AckTiming,
    /// The longest a page's long-poll is held open.
    pub poll_timeout: Duration,
    /// Which markup the main screen uses.
    pub dom: DomVariant,
}

/// The main screen's markup. The driver reads no chat, message or group
/// markup (it uses the modules), so the whole flow passes on either; the
/// alternate one proves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DomVariant {
    /// The markup of `config/selectors.toml` (chat rows carry their id).
    #[default]
    Standard,
    /// Other markup: chat rows in reverse order, no ids on rows or
    /// messages, other class names.
    Alternate,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            first_ref: Duration::from_secs(60),
            next_ref: Duration::from_secs(20),
            max_refs: 7,
            loading: Duration::from_secs(3),
            ack: AckTiming::default(),
            poll_timeout: Duration::from_secs(25),
            dom: DomVariant::Standard,
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The control API must not be reachable from other machines.
    #[error("refusing to listen on {0}: the simulator binds loopback addresses only")]
    NotLoopback(SocketAddr),
    /// Binding failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A configuration value is out of range.
    #[error("invalid simulator setting `{0}`")]
    Invalid(&'static str),
}

/// Shared state behind every handler.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) world: Mutex<model::World>,
    /// Bumped on every change, so long-polls wake.
    pub(crate) changes: tokio::sync::watch::Sender<u64>,
    pub(crate) selectors: Selectors,
    pub(crate) names: WaWeb,
    pub(crate) poll_timeout: Duration,
    pub(crate) dom: DomVariant,
}

impl Shared {
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// A running simulator. Dropping it stops the server.
#[derive(Debug)]
pub struct Simulator {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Simulator {
    /// Binds `addr` (loopback only; port 0 picks a free port) and serves.
    pub async fn start(addr: SocketAddr, config: SimConfig) -> Result<Self, StartError> {
        Self::start_with(addr, config, Selectors::builtin()).await
    }

    /// As [`Simulator::start`], with an explicit DOM contract.
    pub async fn start_with(
        addr: SocketAddr,
        config: SimConfig,
        selectors: Selectors,
    ) -> Result<Self, StartError> {
        Self::start_with_names(addr, config, selectors, WaWeb::builtin()).await
    }

    /// As [`Simulator::start_with`], with an explicit module contract: the
    /// page serves exactly the modules that file names.
    pub async fn start_with_names(
        addr: SocketAddr,
        config: SimConfig,
        selectors: Selectors,
        names: WaWeb,
    ) -> Result<Self, StartError> {
        if !addr.ip().is_loopback() {
            return Err(StartError::NotLoopback(addr));
        }
        if config.max_refs == 0 {
            return Err(StartError::Invalid("max_refs"));
        }
        if config.first_ref.is_zero() || config.next_ref.is_zero() {
            return Err(StartError::Invalid("ref interval"));
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let shared = Arc::new(Shared {
            world: Mutex::new(model::World::new(config)),
            changes: tokio::sync::watch::Sender::new(0),
            selectors,
            names,
            poll_timeout: config.poll_timeout,
            dom: config.dom,
        });
        let app = http::router(shared);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %courier::error::chain(&e), "simulator server stopped");
            }
        });
        tracing::info!(%addr, "WhatsApp Web simulator listening");
        Ok(Self { addr, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The page for one account: `http://<addr>/?account=<id>`.
    pub fn page_url(&self, account: &str) -> String {
        format!("http://{}/?account={}", self.addr, account)
    }

    /// A client for this simulator's control API.
    pub fn control(&self) -> SimControl {
        SimControl::new(self.url())
    }

    /// Stops serving (open long-polls are dropped).
    pub fn shutdown(self) {
        self.task.abort();
    }

    /// Serves until the task ends (for `courier sim`).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
