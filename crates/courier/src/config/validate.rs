//! The cross-field and range rules of [`Settings`]: every bad value is refused
//! at start with its key named.

use std::time::Duration;

use super::{ConfigError, Settings};

impl Settings {
    /// Why one long function: it is the list of rules, one per key, read top
    /// to bottom; split by section, a key's rule would be harder to find.
    /// Cross-field and range rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_string(),
            })
        };
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        if self.database.connect_timeout.is_zero() {
            return invalid("database.connect_timeout", "must be longer than 0s");
        }
        if let Some(url) = &self.database.url {
            let u = url.expose();
            if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) {
                return invalid(
                    "database.url",
                    "must start with postgres:// or postgresql://",
                );
            }
        }
        if self.embedded.data_dir.as_os_str().is_empty() {
            return invalid("embedded.data_dir", "must not be empty");
        }
        if !is_identifier(&self.embedded.database) {
            return invalid(
                "embedded.database",
                "must be a plain identifier (letters, digits, underscore)",
            );
        }
        if let Some(token) = &self.api.token {
            if token.expose().len() < 16 {
                return invalid("api.token", "must be at least 16 characters");
            }
        }
        if let Err(e) = crate::media::address::AddressPolicy::new(&self.webhooks.allow_cidrs) {
            return invalid("webhooks.allow_cidrs", &e.to_string());
        }
        for (key, d) in [
            ("webhooks.timeout", self.webhooks.timeout),
            ("webhooks.backoff_base", self.webhooks.backoff_base),
            ("webhooks.horizon", self.webhooks.horizon),
            ("webhooks.heartbeat", self.webhooks.heartbeat),
            ("webhooks.poll_interval", self.webhooks.poll_interval),
            ("webhooks.events_retain", self.webhooks.events_retain),
            ("webhooks.retain_delivered", self.webhooks.retain_delivered),
            ("webhooks.retain_dead", self.webhooks.retain_dead),
        ] {
            if d.is_zero() {
                return invalid(key, "must be more than zero");
            }
        }
        if self.webhooks.backoff_max < self.webhooks.backoff_base {
            return invalid(
                "webhooks.backoff_max",
                "must be at least webhooks.backoff_base",
            );
        }
        if !(1..=100_000).contains(&self.webhooks.prune_batch) {
            return invalid("webhooks.prune_batch", "must be between 1 and 100000");
        }
        if self.webhooks.rotation_overlap > Duration::from_secs(7 * 86_400) {
            return invalid("webhooks.rotation_overlap", "must be at most 7d");
        }
        if self.webhooks.max_response_bytes == 0 {
            return invalid("webhooks.max_response_bytes", "must be at least 1");
        }
        if self.api.login_link_ttl.is_zero()
            || self.api.login_link_ttl > Duration::from_secs(86_400)
        {
            return invalid("api.login_link_ttl", "must be between 1s and 24h");
        }
        if let Some(u) = &self.api.public_url {
            let ok = url::Url::parse(u).is_ok_and(|p| {
                matches!(p.scheme(), "http" | "https")
                    && p.host().is_some()
                    && p.query().is_none()
                    && p.fragment().is_none()
            });
            if !ok {
                return invalid(
                    "api.public_url",
                    "must be an http(s) URL without query or fragment, such as https://courier.example.com",
                );
            }
        }
        for o in &self.api.cors_origins {
            if crate::config::parse_origin(o).is_none() {
                return Err(ConfigError::Invalid {
                    key: "api.cors_origins",
                    problem: format!(
                        "`{o}` is not an origin: expected scheme://host[:port] with http or https \
                         and nothing after it, such as https://admin.example.com"
                    ),
                });
            }
        }
        if self.delivery.max_attempts < 1 {
            return invalid("delivery.max_attempts", "must be at least 1");
        }
        if self.queue.capacity == 0 {
            return invalid("queue.capacity", "must be at least 1");
        }
        if self.queue.heartbeat_interval * 2 > self.queue.lease_ttl {
            return invalid(
                "queue.heartbeat_interval",
                "must be at most half of queue.lease_ttl",
            );
        }
        if self.queue.max_rescues < 1 {
            return invalid("queue.max_rescues", "must be at least 1");
        }
        if !matches!(
            self.queue.handler.as_str(),
            "browser" | "noop-record" | "noop"
        ) {
            return invalid("queue.handler", "must be one of browser, noop-record, noop");
        }
        if let Some(key) = &self.browser.session_key {
            if crate::browser::snapshot::SnapshotKey::parse(key.expose()).is_err() {
                return invalid(
                    "browser.session_key",
                    "must be 32 bytes written as 64 hex characters",
                );
            }
        }
        if let Some(url) = &self.browser.webdriver_url {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return invalid("browser.webdriver_url", "must be an http(s) URL");
            }
            if self.browser.session_key.is_none() {
                return invalid(
                    "browser.session_key",
                    "must be set when browser.webdriver_url is: a remote browser keeps no \
                     profile on the worker, so the session lives only in the encrypted snapshot",
                );
            }
        }
        if self.browser.snapshot_max_bytes == 0 {
            return invalid("browser.snapshot_max_bytes", "must be at least 1");
        }
        if !self.browser.page_url.starts_with("http://")
            && !self.browser.page_url.starts_with("https://")
        {
            return invalid("browser.page_url", "must be an http(s) URL");
        }
        if self.browser.max_open == 0 {
            return invalid("browser.max_open", "must be at least 1");
        }
        if self.browser.idle_close_after.is_zero() {
            return invalid("browser.idle_close_after", "must be longer than 0s");
        }
        if self.browser.unavailable_retry.is_zero() {
            return invalid("browser.unavailable_retry", "must be longer than 0s");
        }
        if self.browser.command_timeout.is_zero() {
            return invalid("browser.command_timeout", "must be longer than 0s");
        }
        if self.browser.media_timeout.is_zero() {
            return invalid("browser.media_timeout", "must be longer than 0s");
        }
        if self.browser.media_max_bytes == 0 {
            return invalid("browser.media_max_bytes", "must be at least 1");
        }
        if let Err(e) = crate::media::address::AddressPolicy::new(&self.browser.media_allow_cidrs) {
            return invalid("browser.media_allow_cidrs", &e.to_string());
        }
        if let Err(e) = self.budget.quiet_hours() {
            return invalid("budget.quiet_hours", &e);
        }
        if !(0..=100).contains(&self.health.caution)
            || !(0..=100).contains(&self.health.pause_below)
            || self.health.pause_below > self.health.caution
        {
            return invalid(
                "health.pause_below",
                "thresholds must be 0..=100 with pause_below <= caution",
            );
        }
        if self.scheduler.tick.is_zero() || self.scheduler.leader_retry.is_zero() {
            return invalid(
                "scheduler.tick",
                "scheduler.tick and scheduler.leader_retry must be longer than 0s",
            );
        }
        if self.scheduler.batch_size == 0 {
            return invalid("scheduler.batch_size", "must be at least 1");
        }
        for (key, d) in [
            (
                "scheduler.health_check_interval",
                self.scheduler.health_check_interval,
            ),
            (
                "scheduler.discover_interval",
                self.scheduler.discover_interval,
            ),
            ("scheduler.sweep_interval", self.scheduler.sweep_interval),
            ("scheduler.reap_interval", self.scheduler.reap_interval),
            ("scheduler.prune_interval", self.scheduler.prune_interval),
            (
                "scheduler.reassign_interval",
                self.scheduler.reassign_interval,
            ),
        ] {
            if d < Duration::from_secs(1) {
                return invalid(key, "must be at least 1s");
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return invalid("log.level", "is not a valid tracing filter directive");
        }
        Ok(())
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}
