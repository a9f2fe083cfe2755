//! WebDriver supervision and one Chromium session per leased account.
//!
//! [`WebDriverHub`] is either a local chromedriver that Courier starts on a
//! free loopback port and restarts with backoff when it dies (killing the
//! orphaned Chromium of the dead one), or a configured remote endpoint such
//! as a Selenium Grid. [`BrowserPool`] keeps one [`WhatsAppPage`] per account
//! this process holds the lease of, on that account's own profile directory
//! (`<profiles_dir>/<account id>`, mode 0700). A session that died with its
//! browser or chromedriver is reopened on the same profile; that is an
//! infrastructure fault and never touches the account's health.
//!
//! Many accounts per worker: at most `browser.max_open` sessions are open at
//! once (each holds a permit of a fair semaphore). A session no job used for
//! `browser.idle_close_after` is closed cleanly (hibernated: the login stays
//! in the profile and the snapshot) when the [`IdlePolicy`] agrees (the
//! worker's: no work due soon, no ack expected), and an account that needs a
//! browser while all are open takes the least recently used idle one at
//! once, or waits its turn, first come first served.
//!
//! With a remote endpoint (`browser.webdriver_url`) nothing here touches a
//! disk the browser shares: a session gets no profile directory, and the
//! WhatsApp Web session moves through the page instead. It is exported by
//! script from a connected, synced page into the encrypted snapshot
//! ([`SessionGuard::snapshot`]), again before an idle session closes when
//! none was stored since it was last used ([`BrowserPool::hibernate`]), and
//! imported into the fresh browser before the app starts
//! ([`BrowserPool::session`]), so a node that died costs no QR: the next
//! session, on any node, comes up from the snapshot.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::driver::{self, DriverError, DriverOptions};
use super::hub::WebDriverHub;
use super::page::{Exported, Imported, MediaOptions, PageError, WhatsAppPage};
use super::selectors::Selectors;
use super::snapshot::{self, Snapshot, SnapshotError, SnapshotKey};
use super::waweb::WaWeb;
use crate::config::BrowserSettings;
use crate::queue::Lease;

/// Errors of the browser layer.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// chromedriver or the session could not start.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A page command failed.
    #[error(transparent)]
    Page(#[from] PageError),
    /// Snapshot trouble.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The profile directory could not be prepared.
    #[error("profile directory {path}")]
    Profile {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A query failed.
    #[error("browser query")]
    Db(#[from] sqlx::Error),
    /// The media settings are invalid (`browser.media_allow_cidrs`).
    #[error(transparent)]
    Media(#[from] crate::media::MediaError),
    /// The pool is shutting down.
    #[error("the browser pool is shut down")]
    ShutDown,
}

/// An open session.
#[derive(Debug)]
struct Open {
    page: WhatsAppPage,
    generation: u64,
    opened: Instant,
    /// One of the `browser.max_open` permits, given back when the session closes.
    _permit: OwnedSemaphorePermit,
}

#[derive(Debug)]
struct Slot {
    open: Arc<tokio::sync::Mutex<Option<Open>>>,
    last_used: Mutex<Instant>,
    /// The session was closed while idle (hibernated or taken for another
    /// account): the next open is a reopen.
    hibernated: AtomicBool,
}

/// Which idle sessions may close: given the accounts whose session no job
/// has used for `browser.idle_close_after`, the ones to close now. The
/// worker's policy keeps an account with work due soon or acks expected.
/// Without one, every such session closes.
pub trait IdlePolicy: Send + Sync + std::fmt::Debug {
    /// The accounts of `idle` whose session may close.
    fn closable<'a>(&'a self, idle: &'a [Uuid]) -> BoxFuture<'a, Vec<Uuid>>;
}

/// One Chromium session per leased account.
#[derive(Debug)]
pub struct BrowserPool {
    hub: WebDriverHub,
    db: PgPool,
    settings: BrowserSettings,
    sel: Arc<Selectors>,
    names: Arc<WaWeb>,
    key: Option<SnapshotKey>,
    fetcher: crate::media::MediaFetcher,
    slots: Mutex<HashMap<Uuid, Arc<Slot>>>,
    /// `browser.max_open` permits; tokio's semaphore serves waiters in order.
    permits: Arc<Semaphore>,
    /// Opens waiting for a permit.
    waiting: AtomicUsize,
    idle_policy: OnceLock<Arc<dyn IdlePolicy>>,
    /// When this process last stored each account's snapshot.
    snapshotted: Mutex<HashMap<Uuid, Instant>>,
    stop: CancellationToken,
}

/// A locked session of one account. Derefs to the [`WhatsAppPage`].
#[derive(Debug)]
pub struct SessionGuard {
    pool: Arc<BrowserPool>,
    account: Uuid,
    guard: tokio::sync::OwnedMutexGuard<Option<Open>>,
    fresh: bool,
    reopened: bool,
}

impl std::ops::Deref for SessionGuard {
    type Target = WhatsAppPage;
    fn deref(&self) -> &WhatsAppPage {
        &self
            .guard
            .as_ref()
            .expect("a guard always holds an open session")
            .page
    }
}

impl SessionGuard {
    /// Whether this guard opened the session (the page was just loaded).
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Whether this guard reopened a session this pool had closed while idle
    /// (hibernated, or its browser given to another account).
    pub fn is_reopen(&self) -> bool {
        self.reopened
    }

    /// Closes the current session and opens a new one on the same profile
    /// (after a crash). Counts a Chromium restart; health is not touched.
    pub async fn restart(&mut self) -> Result<(), BrowserError> {
        if let Some(old) = self.guard.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), old.page.close()).await;
        }
        metrics::counter!(crate::metrics::BROWSER_RESTARTS, "component" => "chromium").increment(1);
        tracing::warn!(account_id = %self.account, "browser session lost; reopening it");
        *self.guard = Some(self.pool.open(self.account).await?);
        self.fresh = true;
        Ok(())
    }

    /// Stores the session's snapshot in Postgres; returns its sealed size.
    /// No-op without a session key.
    ///
    /// A local browser's session is closed cleanly (flushing the profile),
    /// its session files are packed, and it is reopened, whatever the
    /// outcome. A remote browser's page exports its origin's storage by
    /// script, only while WhatsApp Web reports the session connected and
    /// synced ([`SnapshotError::NotConnected`] otherwise); it stays open.
    /// Either is refused over `browser.snapshot_max_bytes`
    /// ([`SnapshotError::TooLarge`]). Every failure counts in
    /// `courier_session_snapshot_failures_total`.
    pub async fn snapshot(&mut self) -> Result<Option<usize>, BrowserError> {
        let Some(key) = self.pool.key.clone() else {
            return Ok(None);
        };
        let r = if self.pool.hub.is_remote() {
            self.pool.export_snapshot(self.account, self, &key).await
        } else {
            self.profile_snapshot(&key).await
        };
        self.pool.snapshot_outcome(self.account, &r);
        r.map(Some)
    }

    /// A remote browser's session changes while it runs (WhatsApp Web
    /// rotates keys) and lives nowhere else: its snapshot is taken again
    /// when this process stored none for the account within `max_age`. A
    /// local browser's profile keeps the session: no-op.
    pub async fn refresh_snapshot(
        &mut self,
        max_age: Duration,
    ) -> Result<Option<usize>, BrowserError> {
        if !self.pool.hub.is_remote() {
            return Ok(None);
        }
        let recent = self
            .pool
            .snapshotted
            .lock()
            .expect("snapshot times")
            .get(&self.account)
            .is_some_and(|t| t.elapsed() < max_age);
        if recent {
            return Ok(None);
        }
        self.snapshot().await
    }

    async fn profile_snapshot(&mut self, key: &SnapshotKey) -> Result<usize, BrowserError> {
        if let Some(old) = self.guard.take() {
            if let Err(e) = old.page.close().await {
                tracing::debug!(account_id = %self.account, error = %crate::error::chain(&e),
                    "closing the session before its snapshot failed");
            }
        }
        let profile = self.pool.profile_dir(self.account);
        let saved = snapshot::save(
            &self.pool.db,
            key,
            self.account,
            &profile,
            self.pool.settings.snapshot_max_bytes,
        )
        .await;
        // The session is kept whatever became of the snapshot.
        *self.guard = Some(self.pool.open(self.account).await?);
        self.fresh = true;
        Ok(saved?)
    }
}

impl BrowserPool {
    /// Starts the pool: a local chromedriver (or the configured remote
    /// endpoint), the profiles directory, and the idle-session reaper.
    pub async fn start(
        db: PgPool,
        settings: &BrowserSettings,
        selectors: Selectors,
    ) -> Result<Arc<Self>, BrowserError> {
        Self::start_with_names(db, settings, selectors, WaWeb::builtin()).await
    }

    /// [`Self::start`] with the module names of a `config/wa-web.toml`.
    pub async fn start_with_names(
        db: PgPool,
        settings: &BrowserSettings,
        selectors: Selectors,
        names: WaWeb,
    ) -> Result<Arc<Self>, BrowserError> {
        let options = DriverOptions {
            chromedriver: settings.chromedriver.clone(),
            chromium: settings.chromium.clone(),
            headless: settings.headless,
            session_timeout: settings.starting_deadline,
            extra_args: driver::with_user_agent(
                &driver::with_process_model(&settings.extra_args, settings.single_process),
                &settings.user_agent,
            ),
            ..DriverOptions::default()
        };
        let hub = match &settings.webdriver_url {
            // `browser.chromium` is a path on the node when set; unset, the
            // node's WebDriver finds its own browser.
            Some(url) => WebDriverHub::remote(url, settings.chromium.clone(), options),
            None => WebDriverHub::local(options, settings.restart_backoff).await?,
        };
        let key = match &settings.session_key {
            Some(k) => Some(SnapshotKey::parse(k.expose())?),
            None => None,
        };
        if settings.webdriver_url.is_none() {
            snapshot::create_private_dir(&settings.profiles_dir).map_err(|source| {
                BrowserError::Profile {
                    path: settings.profiles_dir.clone(),
                    source,
                }
            })?;
        }
        let fetcher = crate::media::MediaFetcher::from_settings(settings)?;
        let pool = Arc::new(Self {
            hub,
            db,
            settings: settings.clone(),
            sel: Arc::new(selectors),
            names: Arc::new(names),
            key,
            fetcher,
            slots: Mutex::default(),
            permits: Arc::new(Semaphore::new(settings.max_open.max(1))),
            waiting: AtomicUsize::new(0),
            idle_policy: OnceLock::new(),
            snapshotted: Mutex::default(),
            stop: CancellationToken::new(),
        });
        pool.update_gauge();
        tokio::spawn(reap_idle(Arc::downgrade(&pool), pool.stop.clone()));
        Ok(pool)
    }

    /// The WebDriver hub (tests kill its chromedriver).
    pub fn hub(&self) -> &WebDriverHub {
        &self.hub
    }

    /// The settings.
    pub fn settings(&self) -> &BrowserSettings {
        &self.settings
    }

    /// The database pool.
    pub fn db(&self) -> &PgPool {
        &self.db
    }

    /// The account's profile directory.
    pub fn profile_dir(&self, account: Uuid) -> PathBuf {
        self.settings.profiles_dir.join(account.to_string())
    }

    /// The account's WhatsApp Web URL.
    pub fn page_url(&self, account: Uuid) -> String {
        self.settings
            .page_url
            .replace("{account}", &account.to_string())
    }

    /// Accounts this pool has a session slot for (open, in use or hibernated).
    pub fn open_accounts(&self) -> Vec<Uuid> {
        self.slots.lock().expect("slots").keys().copied().collect()
    }

    /// Sets which idle sessions may close (once; later calls are ignored).
    pub fn set_idle_policy(&self, policy: Arc<dyn IdlePolicy>) {
        let _ = self.idle_policy.set(policy);
    }

    /// Whether the account's session is open and free right now. A session
    /// of a dead local chromedriver counts as closed, and so does one that
    /// someone holds at this instant.
    pub fn is_open(&self, account: Uuid) -> bool {
        let Some(slot) = self.slots.lock().expect("slots").get(&account).cloned() else {
            return false;
        };
        let open = match slot.open.try_lock() {
            Ok(g) => g
                .as_ref()
                .is_some_and(|o| self.hub.is_remote() || o.generation == self.hub.generation()),
            // Someone holds it (the ack watcher, a close): not known to be
            // open; `session` waits for it and opens only if needed.
            Err(_) => false,
        };
        open
    }

    /// Sessions open now (busy or idle), and opens waiting for a browser.
    pub fn open_count(&self) -> (usize, usize) {
        (
            self.settings.max_open.max(1) - self.permits.available_permits(),
            self.waiting.load(Ordering::Relaxed),
        )
    }

    /// The account's session, opened (and navigated) if needed. The caller
    /// must hold the account's lease; only one guard per account exists at a
    /// time. A session left over from a dead chromedriver is reopened.
    pub async fn session(self: &Arc<Self>, lease: &Lease) -> Result<SessionGuard, BrowserError> {
        if self.stop.is_cancelled() {
            return Err(BrowserError::ShutDown);
        }
        let slot = {
            let mut slots = self.slots.lock().expect("slots");
            slots
                .entry(lease.account_id)
                .or_insert_with(|| {
                    Arc::new(Slot {
                        open: Arc::default(),
                        last_used: Mutex::new(Instant::now()),
                        hibernated: AtomicBool::new(false),
                    })
                })
                .clone()
        };
        *slot.last_used.lock().expect("slot time") = Instant::now();
        let mut guard = slot.open.clone().lock_owned().await;
        let mut fresh = false;
        let stale = guard.as_ref().is_some_and(|o| {
            (!self.hub.is_remote() && o.generation != self.hub.generation()) || o.page.is_lost()
        });
        if stale {
            // Its chromedriver (or remote node) died: the session is gone with
            // it. A remote one is asked to end anyway (a grid keeps a session
            // whose connection only broke until its own timeout).
            if let Some(old) = guard.take() {
                if self.hub.is_remote() {
                    tokio::spawn(async move {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), old.page.close()).await;
                    });
                }
            }
            metrics::counter!(crate::metrics::BROWSER_RESTARTS, "component" => "chromium")
                .increment(1);
            tracing::warn!(account_id = %lease.account_id, "session belonged to a dead chromedriver; reopening");
        }
        let recycle = self.settings.recycle_after;
        let aged = guard
            .as_ref()
            .is_some_and(|o| !recycle.is_zero() && o.opened.elapsed() >= recycle);
        if aged {
            // A WhatsApp Web tab grows for as long as it lives (the one-hour
            // soak measured ~130 MiB/h per session); reopening it on the same
            // profile, between jobs, bounds that. No QR: the profile keeps
            // the login.
            if let Some(old) = guard.take() {
                tracing::info!(account_id = %lease.account_id, age_s = old.opened.elapsed().as_secs(),
                    "recycling a long-lived browser session (browser.recycle_after)");
                match tokio::time::timeout(self.settings.command_timeout, old.page.close()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(account_id = %lease.account_id, error = %crate::error::chain(&e), "closing an aged session failed")
                    }
                    Err(_) => {
                        tracing::debug!(account_id = %lease.account_id, "closing an aged session timed out")
                    }
                }
            }
        }
        let mut reopened = false;
        if guard.is_none() {
            *guard = Some(self.open(lease.account_id).await?);
            fresh = true;
            reopened = slot.hibernated.swap(false, Ordering::Relaxed);
        }
        *slot.last_used.lock().expect("slot time") = Instant::now();
        Ok(SessionGuard {
            pool: self.clone(),
            account: lease.account_id,
            guard,
            fresh,
            reopened,
        })
    }

    /// The account's open session if no one is using it right now: never
    /// opens, navigates or waits (the ack watcher drains idle pages with it).
    pub fn try_idle_session(self: &Arc<Self>, account: Uuid) -> Option<SessionGuard> {
        if self.stop.is_cancelled() {
            return None;
        }
        let slot = self.slots.lock().expect("slots").get(&account)?.clone();
        let guard = slot.open.clone().try_lock_owned().ok()?;
        let usable = guard.as_ref().is_some_and(|o| {
            (self.hub.is_remote() || o.generation == self.hub.generation()) && !o.page.is_lost()
        });
        usable.then(|| SessionGuard {
            pool: self.clone(),
            account,
            guard,
            fresh: false,
            reopened: false,
        })
    }

    /// Cancelled when the pool shuts down.
    pub(crate) fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Opens Chromium on the account's profile and navigates to WhatsApp
    /// Web. An empty profile first gets the account's snapshot: profile files
    /// are restored before Chromium starts; an export from a page is imported
    /// through the page before the app starts. A remote browser has no
    /// profile on this machine: it always starts empty, and only a page
    /// export can bring its session.
    async fn open(&self, account: Uuid) -> Result<Open, BrowserError> {
        let remote = self.hub.is_remote();
        let profile = self.profile_dir(account);
        let mut import = None;
        if remote {
            if let Some(key) = &self.key {
                match snapshot::load(&self.db, key, account).await? {
                    Some(Snapshot::Storage(dump)) => import = Some(dump),
                    Some(Snapshot::Files(_)) => return Err(SnapshotError::FilesOnRemote.into()),
                    None => {}
                }
            }
        } else {
            let perr = |source| BrowserError::Profile {
                path: profile.clone(),
                source,
            };
            snapshot::create_private_dir(&profile).map_err(perr)?;
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&profile, std::fs::Permissions::from_mode(0o700))
                    .map_err(perr)?;
            }
            clear_stale_lock(&profile).await;
            repair_profile(&profile);
            if let Some(key) = &self.key {
                if snapshot::profile_is_empty(&profile) {
                    match snapshot::load(&self.db, key, account).await? {
                        Some(Snapshot::Files(files)) => {
                            snapshot::restore_files(&profile, &files)?;
                            tracing::info!(account_id = %account, "restored the session snapshot into an empty profile");
                        }
                        Some(Snapshot::Storage(dump)) => import = Some(dump),
                        None => {}
                    }
                }
            }
        }
        let permit = self.browser_permit(account).await?;
        let started = Instant::now();
        let (client, generation) = self.hub.open(&profile).await?;
        metrics::histogram!(crate::metrics::BROWSER_COMMAND_SECONDS, "command" => "new_session")
            .record(started.elapsed().as_secs_f64());
        let page = WhatsAppPage::new(
            client,
            self.sel.clone(),
            self.names.clone(),
            self.page_url(account),
            self.settings.command_timeout,
            MediaOptions {
                dir: self.settings.media_dir.clone(),
                fetcher: self.fetcher.clone(),
            },
        );
        if let Some(dump) = import {
            match page.import_storage(&dump).await {
                Ok(Imported::Done {
                    databases,
                    records,
                    keys,
                }) => {
                    tracing::info!(account_id = %account, databases, records, keys,
                        "imported the session snapshot into the browser before starting WhatsApp Web");
                }
                failed => {
                    // A session on a grid is not given back by dropping it.
                    let _ = page.clone().close().await;
                    return Err(match failed {
                        Ok(Imported::NotEmpty(what)) => SnapshotError::OriginNotEmpty(what).into(),
                        Err(e) => e.into(),
                        Ok(Imported::Done { .. }) => unreachable!("matched above"),
                    });
                }
            }
        }
        if let Err(e) = page.open().await {
            let _ = page.clone().close().await;
            return Err(e.into());
        }
        if !remote {
            crate::account::session::record_storage_path(
                &self.db,
                account,
                &profile.to_string_lossy(),
            )
            .await?;
        }
        self.update_gauge();
        Ok(Open {
            page,
            generation,
            opened: Instant::now(),
            _permit: permit,
        })
    }

    /// One of the `browser.max_open` permits. When all are taken, the least
    /// recently used idle session is closed for it (its login stays in the
    /// profile), and the open waits its turn: the semaphore hands permits out
    /// in the order they were asked for, so no account starves.
    async fn browser_permit(&self, account: Uuid) -> Result<OwnedSemaphorePermit, BrowserError> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.update_gauge();
        let started = Instant::now();
        let acquire = self.permits.clone().acquire_owned();
        tokio::pin!(acquire);
        // Polled once first: in line before any permit is freed below.
        let got = match acquire.as_mut().now_or_never() {
            Some(p) => p.map_err(|_| BrowserError::ShutDown),
            None => loop {
                self.evict_lru(account).await;
                tokio::select! {
                    p = &mut acquire => break p.map_err(|_| BrowserError::ShutDown),
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = self.stop.cancelled() => break Err(BrowserError::ShutDown),
                }
            },
        };
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        self.update_gauge();
        tracing::debug!(account_id = %account, waited_ms = started.elapsed().as_millis() as u64,
            "waited for a browser (browser.max_open)");
        got
    }

    /// Exports a remote page's session (its origin's storage, by script) into
    /// the account's snapshot; returns its sealed size. Only while WhatsApp
    /// Web reports the session connected and synced, before and after the
    /// export is read ([`SnapshotError::NotConnected`] otherwise), and never
    /// over `browser.snapshot_max_bytes` ([`SnapshotError::TooLarge`]).
    async fn export_snapshot(
        &self,
        account: Uuid,
        page: &WhatsAppPage,
        key: &SnapshotKey,
    ) -> Result<usize, BrowserError> {
        let max = self.settings.snapshot_max_bytes;
        let connected = |w: &super::page::WaState| {
            (w.connected && w.synced)
                .then_some(())
                .ok_or_else(|| SnapshotError::NotConnected {
                    state: w.state.clone(),
                    synced: w.synced,
                })
        };
        // `NotReady`: the modules are not even loaded (the page is starting).
        let state = match page.wa_state().await {
            Err(PageError::NotReady(_)) => {
                return Err(SnapshotError::NotConnected {
                    state: "not loaded".into(),
                    synced: false,
                }
                .into())
            }
            other => other?,
        };
        connected(&state)?;
        let dump = match page.export_storage(max).await? {
            Exported::Dump(d) => d,
            Exported::TooLarge(counted) => {
                return Err(SnapshotError::TooLarge {
                    bytes: counted,
                    max,
                }
                .into())
            }
        };
        // Still the same connected session once the export is read.
        connected(&page.wa_state().await?)?;
        Ok(snapshot::save_storage(&self.db, key, account, &dump, max).await?)
    }

    /// Records how a snapshot of the account went: when it was stored, or
    /// the failure logged and counted in
    /// `courier_session_snapshot_failures_total{reason}`.
    fn snapshot_outcome(&self, account: Uuid, r: &Result<usize, BrowserError>) {
        match r {
            Ok(size) => {
                self.snapshotted
                    .lock()
                    .expect("snapshot times")
                    .insert(account, Instant::now());
                tracing::info!(account_id = %account, bytes = size, "session snapshot stored")
            }
            Err(e) => {
                let reason = match e {
                    BrowserError::Snapshot(SnapshotError::TooLarge { .. }) => "too_large",
                    BrowserError::Snapshot(SnapshotError::NotConnected { .. }) => "not_connected",
                    _ => "error",
                };
                metrics::counter!(crate::metrics::SNAPSHOT_FAILURES, "reason" => reason)
                    .increment(1);
                tracing::warn!(account_id = %account, reason, error = %crate::error::chain(e),
                    "session snapshot not stored");
            }
        }
    }

    /// Whether this process stored the account's snapshot after `since`.
    fn snapshotted_since(&self, account: Uuid, since: Instant) -> bool {
        self.snapshotted
            .lock()
            .expect("snapshot times")
            .get(&account)
            .is_some_and(|t| *t >= since)
    }

    /// A remote session lives only in its page and the snapshot, and changes
    /// while it runs (WhatsApp Web rotates keys): before it closes while
    /// idle, its state is exported when this process stored no snapshot of
    /// the account since the session was last used (`last_used`). Bounded by
    /// `browser.command_timeout`; a failure is logged and counted like every
    /// snapshot's, and the close goes on. A page without a login on it (a
    /// QR, logged out, never loaded) has nothing to keep: skipped, not
    /// counted. A local session is flushed to its profile by the close.
    async fn snapshot_before_close(&self, account: Uuid, page: &WhatsAppPage, last_used: Instant) {
        let Some(key) = self.key.as_ref() else {
            return;
        };
        if !self.hub.is_remote() || page.is_lost() || self.snapshotted_since(account, last_used) {
            return;
        }
        let export = async {
            match page.wa_state().await {
                Err(PageError::NotReady(_)) => return None,
                Ok(w) if !w.connected && w.me.is_none() => return None,
                _ => {}
            }
            Some(self.export_snapshot(account, page, key).await)
        };
        let limit = self.settings.command_timeout;
        let r = match tokio::time::timeout(limit, export).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::debug!(account_id = %account, "no login on the page; nothing to snapshot before closing it");
                return;
            }
            Err(_) => Err(PageError::Timeout {
                what: "the session snapshot before closing an idle session".into(),
                after: limit,
            }
            .into()),
        };
        self.snapshot_outcome(account, &r);
    }

    /// Closes the least recently used idle session (not `except`'s) for an
    /// account that waits for a browser.
    async fn evict_lru(&self, except: Uuid) {
        let candidates: Vec<(Uuid, Instant)> = {
            let slots = self.slots.lock().expect("slots");
            slots
                .iter()
                .filter(|(a, s)| {
                    **a != except && s.open.try_lock().map(|g| g.is_some()).unwrap_or(false)
                })
                .map(|(a, s)| (*a, *s.last_used.lock().expect("slot time")))
                .collect()
        };
        let mut candidates = candidates;
        candidates.sort_by_key(|(_, t)| *t);
        for (account, _) in candidates {
            if self
                .hibernate(
                    account,
                    "browser.max_open: another account needs the browser",
                )
                .await
            {
                return;
            }
        }
    }

    /// Closes the account's session cleanly if no one is using it, keeping
    /// its slot: the next [`Self::session`] reopens it on the same profile
    /// (a remote one, from the snapshot it exports first when a job used it
    /// since the last one). Returns whether a session was closed.
    pub async fn hibernate(&self, account: Uuid, why: &str) -> bool {
        let Some(slot) = self.slots.lock().expect("slots").get(&account).cloned() else {
            return false;
        };
        let Ok(mut g) = slot.open.clone().try_lock_owned() else {
            return false;
        };
        let Some(o) = g.take() else {
            return false;
        };
        slot.hibernated.store(true, Ordering::Relaxed);
        let last_used = *slot.last_used.lock().expect("slot time");
        self.snapshot_before_close(account, &o.page, last_used)
            .await;
        match tokio::time::timeout(self.settings.command_timeout, o.page.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(account_id = %account, error = %crate::error::chain(&e), "closing an idle session failed")
            }
            Err(_) => tracing::debug!(account_id = %account, "closing an idle session timed out"),
        }
        // The Chromium is gone: its permit goes to the next in line.
        drop(o._permit);
        drop(g);
        tracing::info!(account_id = %account, reason = why, "browser session closed (hibernated); the login stays in the profile");
        metrics::counter!(crate::metrics::BROWSER_HIBERNATIONS).increment(1);
        self.update_gauge();
        true
    }

    /// Sessions by state: `busy` (a job holds it), `open` (idle, browser up),
    /// `closed` (the account's slot has no browser right now).
    fn update_gauge(&self) {
        let (mut busy, mut open, mut closed) = (0u32, 0u32, 0u32);
        for slot in self.slots.lock().expect("slots").values() {
            match slot.open.try_lock() {
                Err(_) => busy += 1,
                Ok(g) if g.is_some() => open += 1,
                Ok(_) => closed += 1,
            }
        }
        for (state, n) in [("busy", busy), ("open", open), ("closed", closed)] {
            metrics::gauge!(crate::metrics::BROWSER_SESSIONS, "state" => state).set(f64::from(n));
        }
        let (open_now, waiting) = self.open_count();
        metrics::gauge!(crate::metrics::BROWSER_OPEN).set(open_now as f64);
        metrics::gauge!(crate::metrics::BROWSER_MAX_OPEN).set(self.settings.max_open as f64);
        metrics::gauge!(crate::metrics::BROWSER_WAITING).set(waiting as f64);
    }

    /// Closes the account's session cleanly (the profile is flushed).
    pub async fn close(&self, account: Uuid) {
        self.close_slot(account, false).await
    }

    /// [`Self::close`]; with `keep`, a remote session a job used since its
    /// last snapshot exports one first ([`Self::snapshot_before_close`]).
    async fn close_slot(&self, account: Uuid, keep: bool) {
        let slot = self.slots.lock().expect("slots").remove(&account);
        if let Some(slot) = slot {
            let mut g = slot.open.lock().await;
            if let Some(o) = g.take() {
                if keep {
                    let last_used = *slot.last_used.lock().expect("slot time");
                    self.snapshot_before_close(account, &o.page, last_used)
                        .await;
                }
                if let Err(e) = o.page.close().await {
                    tracing::debug!(account_id = %account, error = %crate::error::chain(&e), "closing a session failed");
                }
            }
        }
        self.update_gauge();
    }

    /// Forgets the account's browser profile: closes its session, then
    /// deletes the profile directory (the next session starts empty and
    /// needs a QR). A profile already gone is fine.
    pub async fn delete_profile(&self, account: Uuid) -> Result<(), BrowserError> {
        self.close(account).await;
        let profile = self.profile_dir(account);
        match tokio::fs::remove_dir_all(&profile).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(BrowserError::Profile {
                path: profile,
                source,
            }),
        }
    }

    /// Closes every session cleanly and stops chromedriver. A remote
    /// session's state lives only in its page: one a job used since its
    /// last snapshot exports a fresh one first, so a deploy or a stopped
    /// worker loses nothing of it (all at once, each bounded by
    /// `browser.command_timeout`).
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let accounts = self.open_accounts();
        futures::future::join_all(accounts.into_iter().map(|a| self.close_slot(a, true))).await;
        self.hub.shutdown().await;
    }

    /// Simulates a crash of this process's browsers (tests): kills the local
    /// chromedriver's whole process group without closing anything.
    pub fn crash(&self) {
        self.stop.cancel();
        self.hub.inner.stop.cancel();
        if let Some(pid) = self.hub.driver_pid() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Closes (hibernates) sessions no job has used for `idle_close_after`,
/// those the idle policy lets go (every such one without a policy).
async fn reap_idle(pool: std::sync::Weak<BrowserPool>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let Some(pool) = pool.upgrade() else { return };
        let idle: Vec<Uuid> = {
            let slots = pool.slots.lock().expect("slots");
            slots
                .iter()
                .filter(|(_, s)| {
                    s.last_used.lock().expect("slot time").elapsed()
                        >= pool.settings.idle_close_after
                        && s.open.try_lock().map(|g| g.is_some()).unwrap_or(false)
                })
                .map(|(a, _)| *a)
                .collect()
        };
        if idle.is_empty() {
            continue;
        }
        let closable = match pool.idle_policy.get() {
            Some(p) => p.closable(&idle).await,
            None => idle,
        };
        for account in closable {
            pool.hibernate(account, "idle (browser.idle_close_after)")
                .await;
        }
    }
}

/// Frees a profile held by a Chromium that outlived its worker or its
/// chromedriver: kills the process named in `SingletonLock` when it is a
/// Chromium on this profile, then removes the lock files. Safe because only
/// the account's lease holder opens its profile.
async fn clear_stale_lock(profile: &Path) {
    let lock = profile.join("SingletonLock");
    let Ok(target) = std::fs::read_link(&lock) else {
        return;
    };
    let target = target.to_string_lossy().into_owned();
    if let Some(pid) = target
        .rsplit('-')
        .next()
        .and_then(|p| p.parse::<i32>().ok())
    {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let needle = format!("--user-data-dir={}", profile.display());
        let ours = String::from_utf8_lossy(&cmdline)
            .split('\0')
            .any(|a| a == needle);
        if ours {
            tracing::warn!(pid, profile = %profile.display(), "killing a stale Chromium that holds the profile");
            let p = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline
                && std::fs::read(format!("/proc/{pid}/stat"))
                    .map(|s| !String::from_utf8_lossy(&s).contains(") Z "))
                    .unwrap_or(false)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            metrics::counter!(crate::metrics::BROWSER_RESTARTS, "component" => "stale_chromium")
                .increment(1);
        }
    }
    for f in ["SingletonLock", "SingletonCookie", "SingletonSocket"] {
        let _ = std::fs::remove_file(profile.join(f));
    }
}

/// Removes JSON profile files a killed Chromium left truncated. chromedriver
/// merges its preferences into them and refuses to start a session on a file
/// it cannot parse; Chromium recreates them, and the session itself lives in
/// Local Storage and IndexedDB, which are untouched.
fn repair_profile(profile: &Path) {
    for f in [
        "Local State",
        "Default/Preferences",
        "Default/Secure Preferences",
    ] {
        let path = profile.join(f);
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        if serde_json::from_slice::<serde_json::Value>(&text).is_err() {
            tracing::warn!(file = %path.display(), "removing a truncated profile file left by a killed Chromium");
            let _ = std::fs::remove_file(&path);
        }
    }
}
