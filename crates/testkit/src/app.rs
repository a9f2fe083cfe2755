//! `spawn_app()`: Courier's HTTP API on a database of the test's own, on
//! 127.0.0.1 port 0, with a client that knows the bearer token — the one
//! start-up every API test shares (zero2prod's `spawn_app`).
//!
//! The [`TestAppBuilder`] adds what some tests need on top: their own token
//! or [`Settings`], an existing database, the WhatsApp Web simulator and an
//! in-process browser worker (as `courier run` would start the worker next
//! to the API).
//!
//! ```no_run
//! # async fn example() {
//! let app = courier_testkit::spawn_app().await;
//! let (status, accounts) = app.get("/v1/accounts").await;
//! assert!(status.is_success(), "{accounts}");
//! # }
//! ```

use std::net::SocketAddr;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use courier::config::{Secret, Settings};
use courier::queue::runtime::RuntimeError;
use courier_sim::{SimConfig, SimControl, Simulator};

use crate::{fresh_database, InProcessWorker, TestDb};

/// The bearer token [`spawn_app`] serves with (at least 16 characters, as
/// `api.token` requires).
pub const TEST_TOKEN: &str = "test-token-0123456789";

/// The API on a fresh database with [`TEST_TOKEN`] and default settings.
/// Panics if anything fails to start.
pub async fn spawn_app() -> TestApp {
    TestApp::builder().spawn().await
}

type SettingsTweak = Box<dyn FnOnce(&mut Settings) + Send>;

/// What to start besides the API; [`TestAppBuilder::spawn`] starts it.
#[must_use = "nothing starts until `spawn`"]
pub struct TestAppBuilder {
    token: String,
    database: Option<TestDb>,
    simulator: Option<SimConfig>,
    worker: bool,
    tweak: Option<SettingsTweak>,
    http: Option<reqwest::Client>,
}

impl std::fmt::Debug for TestAppBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestAppBuilder")
            .field("database", &self.database.as_ref().map(|d| &d.name))
            .field("simulator", &self.simulator)
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

impl TestAppBuilder {
    /// Serves with `token` instead of [`TEST_TOKEN`] (tests that look for
    /// the token in logs or bodies use a distinctive one).
    pub fn token(mut self, token: &str) -> Self {
        self.token = token.to_string();
        self
    }

    /// Serves `db` instead of a fresh database (a test that set up its own
    /// database and needs the API part-way through).
    pub fn database(mut self, db: TestDb) -> Self {
        self.database = Some(db);
        self
    }

    /// Starts the WhatsApp Web simulator with `config`, and points the
    /// browser settings at it (see [`TestAppBuilder::settings`]).
    pub fn simulator(mut self, config: SimConfig) -> Self {
        self.simulator = Some(config);
        self
    }

    /// Starts an in-process queue worker with the browser handlers
    /// ([`InProcessWorker`]) on the same database and settings.
    pub fn worker(mut self) -> Self {
        self.worker = true;
        self
    }

    /// Changes the settings the API (and the worker) run with. Before
    /// `tweak` runs they are [`Settings::defaults`] with `api.token` set;
    /// with a simulator, `browser.page_url` points at it, the profile and
    /// media directories are in [`TestApp::dir`] and `browser.session_key`
    /// is random; with a worker, `queue.handler` is `browser`. The result
    /// must pass [`Settings::validate`].
    pub fn settings(mut self, tweak: impl FnOnce(&mut Settings) + Send + 'static) -> Self {
        self.tweak = Some(Box::new(tweak));
        self
    }

    /// Uses `client` for [`TestApp::http`] (for example one without
    /// keep-alive).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Starts everything: simulator, API, then worker. Panics if a part
    /// fails to start.
    pub async fn spawn(self) -> TestApp {
        let db = match self.database {
            Some(db) => db,
            None => fresh_database().await.expect("a fresh test database"),
        };
        let dir = tempfile::tempdir().expect("a scratch directory");
        let sim = match self.simulator {
            Some(config) => Some(
                Simulator::start(([127, 0, 0, 1], 0).into(), config)
                    .await
                    .expect("the simulator starts"),
            ),
            None => None,
        };

        let mut settings = Settings::defaults();
        settings.api.token = Some(Secret::new(self.token.clone()));
        if let Some(sim) = &sim {
            let b = &mut settings.browser;
            b.page_url = format!("{}/?account={{account}}", sim.url());
            b.profiles_dir = dir.path().join("profiles");
            b.media_dir = dir.path().join("media");
            b.session_key = Some(Secret::new(
                courier::browser::SnapshotKey::random().to_hex(),
            ));
        }
        if self.worker {
            settings.queue.handler = "browser".into();
        }
        if let Some(tweak) = self.tweak {
            tweak(&mut settings);
        }
        if let Err(e) = settings.validate() {
            panic!("the test app's settings are invalid: {e}");
        }

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the API");
        let address = listener.local_addr().expect("the API's address");
        let state = courier::api::AppState::new(db.pool.clone(), &self.token)
            .with_settings(settings.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        // Stops on `shutdown`, or when the TestApp is dropped (the sender
        // goes away with it).
        let api = tokio::spawn(courier::api::serve(listener, state, async move {
            let _ = stopped.await;
        }));

        let worker = if self.worker {
            Some(
                InProcessWorker::start(&db.pool, &settings)
                    .await
                    .expect("the in-process browser worker starts"),
            )
        } else {
            None
        };

        TestApp {
            address,
            base: format!("http://{address}"),
            token: self.token,
            db,
            http: self.http.unwrap_or_default(),
            settings,
            dir,
            sim,
            worker,
            api_stop: Some(stop),
            api: Some(api),
        }
    }
}

/// A running API (and whatever else the builder asked for).
///
/// Dropping it stops the API (gracefully, unawaited), the worker's runtime
/// and the simulator; [`TestApp::shutdown`] stops them and waits.
pub struct TestApp {
    /// Where the API listens (127.0.0.1, a free port).
    pub address: SocketAddr,
    /// `http://<address>`.
    pub base: String,
    /// The bearer token the API accepts.
    pub token: String,
    /// The database it serves.
    pub db: TestDb,
    /// A client for the tests' requests ([`TestApp::request`] adds the token).
    pub http: reqwest::Client,
    /// The settings the API and the worker run with.
    pub settings: Settings,
    /// A scratch directory that lives as long as the app (browser profiles
    /// and media when a simulator runs, screenshots, anything else).
    pub dir: tempfile::TempDir,
    sim: Option<Simulator>,
    worker: Option<InProcessWorker>,
    api_stop: Option<oneshot::Sender<()>>,
    api: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp")
            .field("base", &self.base)
            .field("database", &self.db.name)
            .field("simulator", &self.sim.as_ref().map(Simulator::url))
            .field("worker", &self.worker.is_some())
            .finish_non_exhaustive()
    }
}

impl TestApp {
    /// What to start besides the API, with [`TEST_TOKEN`] and a fresh
    /// database unless told otherwise.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            token: TEST_TOKEN.to_string(),
            database: None,
            simulator: None,
            worker: false,
            tweak: None,
            http: None,
        }
    }

    /// The database pool.
    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// The simulator. Panics if the builder did not ask for one.
    pub fn sim(&self) -> &Simulator {
        self.sim
            .as_ref()
            .expect("the test app was built without `.simulator(..)`")
    }

    /// A client for the simulator's control API. Panics without one.
    pub fn sim_control(&self) -> SimControl {
        self.sim().control()
    }

    /// The in-process worker. Panics if the builder did not ask for one.
    pub fn worker(&self) -> &InProcessWorker {
        self.worker
            .as_ref()
            .expect("the test app was built without `.worker()`")
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path` with the bearer token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
    }

    /// Sends `request` and reads the reply: its status and its body as
    /// JSON (a body that is not JSON comes back as a JSON string).
    pub async fn send(&self, request: RequestBuilder) -> (StatusCode, Value) {
        let resp = request.send().await.expect("the request reaches the API");
        let status = resp.status();
        let text = resp.text().await.expect("the response body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `GET path` with the token (see [`TestApp::send`]).
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.request(Method::GET, path)).await
    }

    /// `POST path` with the token and `body` as JSON (see [`TestApp::send`]).
    pub async fn post_json(&self, path: &str, body: impl Serialize) -> (StatusCode, Value) {
        self.send(self.request(Method::POST, path).json(&body))
            .await
    }

    /// `PATCH path` with the token and `body` as JSON (see [`TestApp::send`]).
    pub async fn patch_json(&self, path: &str, body: impl Serialize) -> (StatusCode, Value) {
        self.send(self.request(Method::PATCH, path).json(&body))
            .await
    }

    /// Creates a named API token with `scopes` (`read,enqueue`), optionally
    /// restricted to `account`, that never expires; returns its secret.
    pub async fn create_token(
        &self,
        name: &str,
        scopes: &str,
        account: Option<uuid::Uuid>,
    ) -> String {
        use courier::access::token;
        token::create(
            self.pool(),
            token::NewToken {
                name: name.to_string(),
                scopes: token::parse_scopes(scopes).expect("valid scopes"),
                account_id: account,
                expires_at: None,
            },
        )
        .await
        .expect("the token is created")
        .secret
    }

    /// A signed login-page link for `account`, as `POST
    /// /v1/accounts/{id}/login-link` gives it (absolute URL). Panics unless
    /// the API answers 201.
    pub async fn login_link(&self, account: &str) -> String {
        let (status, link) = self
            .post_json(
                &format!("/v1/accounts/{account}/login-link"),
                serde_json::json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "login-link: {link}");
        link["url"].as_str().expect("a url").to_string()
    }

    /// Stops the worker (in-flight jobs finish, sessions are flushed), then
    /// the API (it drains), then the simulator. Returns the worker runtime's
    /// result; panics if the API server failed.
    pub async fn shutdown(mut self) -> Result<(), RuntimeError> {
        let worker = match self.worker.take() {
            Some(w) => w.stop().await,
            None => Ok(()),
        };
        if let Some(stop) = self.api_stop.take() {
            let _ = stop.send(());
        }
        if let Some(api) = self.api.take() {
            api.await
                .expect("the API task panicked")
                .expect("the API server failed");
        }
        if let Some(sim) = self.sim.take() {
            sim.shutdown();
        }
        worker
    }
}
