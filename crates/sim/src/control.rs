//! A typed client for the simulator's control API, for the demo and
//! end-to-end tests: seed accounts, contacts and groups, play the phone's
//! scan, set faults and ack timing, and read back what reached "WhatsApp".

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::model::MessageView;

/// Errors from control calls.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request failed in transport.
    #[error("simulator control call failed")]
    Http(#[from] reqwest::Error),
    /// The simulator answered with an error.
    #[error("simulator refused {call}: {status} {code}: {message}")]
    Refused {
        /// The call, e.g. `POST /_control/accounts/a1/scan`.
        call: String,
        /// HTTP status.
        status: u16,
        /// The error code (`stale_token`, `unknown_account`, …).
        code: String,
        /// The message.
        message: String,
    },
}

/// A message read back, with the account that sent it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Delivered {
    /// The sending account's id.
    pub account: String,
    /// The message.
    #[serde(flatten)]
    pub message: MessageView,
}

/// What `GET …/messages` returns.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ReadBack {
    /// Messages that reached WhatsApp.
    pub messages: Vec<Delivered>,
    /// Sends refused (quota).
    pub refused: Vec<Delivered>,
}

/// The control API of one simulator.
#[derive(Debug, Clone)]
pub struct SimControl {
    base: String,
    http: reqwest::Client,
}

impl SimControl {
    /// A client for the simulator at `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, ControlError> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        let status = r.status();
        if !status.is_success() {
            let v: Value = r.json().await.unwrap_or(Value::Null);
            return Err(ControlError::Refused {
                call: format!("{method} {path}"),
                status: status.as_u16(),
                code: v["error"].as_str().unwrap_or("unknown").to_string(),
                message: v["message"].as_str().unwrap_or_default().to_string(),
            });
        }
        Ok(r.json().await?)
    }

    /// Forgets everything.
    pub async fn reset(&self) -> Result<(), ControlError> {
        self.call::<Value>(reqwest::Method::POST, "/_control/reset", None)
            .await
            .map(drop)
    }

    /// Creates an account (optionally with its phone, which a scan must then match).
    pub async fn create_account(
        &self,
        id: &str,
        phone: Option<&str>,
    ) -> Result<Value, ControlError> {
        self.call(
            reqwest::Method::POST,
            "/_control/accounts",
            Some(json!({ "id": id, "phone": phone })),
        )
        .await
    }

    /// The account's state.
    pub async fn account(&self, id: &str) -> Result<Value, ControlError> {
        self.call(
            reqwest::Method::GET,
            &format!("/_control/accounts/{id}"),
            None,
        )
        .await
    }

    /// The QR token on screen now for the account.
    pub async fn qr(&self, id: &str) -> Result<String, ControlError> {
        let v: Value = self
            .call(
                reqwest::Method::GET,
                &format!("/_control/accounts/{id}/qr"),
                None,
            )
            .await?;
        Ok(v["token"].as_str().unwrap_or_default().to_string())
    }

    /// Plays the phone scanning `token`.
    pub async fn scan(&self, id: &str, token: &str, phone: &str) -> Result<Value, ControlError> {
        self.call(
            reqwest::Method::POST,
            &format!("/_control/accounts/{id}/scan"),
            Some(json!({ "token": token, "phone": phone })),
        )
        .await
    }

    /// Waits (up to `timeout`) for a page of the account to show a QR, then scans it.
    pub async fn scan_when_shown(
        &self,
        id: &str,
        phone: &str,
        timeout: Duration,
    ) -> Result<Value, ControlError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.qr(id).await {
                Ok(token) => return self.scan(id, &token, phone).await,
                Err(ControlError::Refused { code, .. })
                    if code == "stale_token" && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Revokes the account's session.
    pub async fn logout(&self, id: &str) -> Result<Value, ControlError> {
        self.call(
            reqwest::Method::POST,
            &format!("/_control/accounts/{id}/logout"),
            None,
        )
        .await
    }

    /// Sets faults (any subset of the fault fields, see docs/simulator.md).
    pub async fn faults(&self, id: &str, faults: Value) -> Result<Value, ControlError> {
        self.call(
            reqwest::Method::PUT,
            &format!("/_control/accounts/{id}/faults"),
            Some(faults),
        )
        .await
    }

    /// Sets ack timing for messages sent from now on.
    pub async fn ack_timing(&self, id: &str, timing: Value) -> Result<Value, ControlError> {
        self.call(
            reqwest::Method::PUT,
            &format!("/_control/accounts/{id}/ack-timing"),
            Some(timing),
        )
        .await
    }

    /// Adds a contact to the given accounts' chat lists.
    pub async fn add_contact(
        &self,
        phone: &str,
        name: Option<&str>,
        accounts: &[&str],
    ) -> Result<String, ControlError> {
        let v: Value = self
            .call(
                reqwest::Method::POST,
                "/_control/contacts",
                Some(json!({ "phone": phone, "name": name, "accounts": accounts })),
            )
            .await?;
        Ok(v["id"].as_str().unwrap_or_default().to_string())
    }

    /// Marks a number as not registered on WhatsApp: the page's exists query
    /// says so, and sends to it are refused.
    pub async fn not_on_whatsapp(&self, phone: &str) -> Result<(), ControlError> {
        let _: Value = self
            .call(
                reqwest::Method::POST,
                "/_control/contacts",
                Some(json!({ "phone": phone, "on_whatsapp": false })),
            )
            .await?;
        Ok(())
    }

    /// Creates a group with participants (JSON objects, see docs) and member accounts.
    pub async fn create_group(
        &self,
        name: &str,
        participants: Vec<Value>,
        accounts: &[&str],
    ) -> Result<String, ControlError> {
        let v: Value = self
            .call(
                reqwest::Method::POST,
                "/_control/groups",
                Some(json!({ "name": name, "participants": participants, "accounts": accounts })),
            )
            .await?;
        Ok(v["id"].as_str().unwrap_or_default().to_string())
    }

    /// Everything the account sent that reached WhatsApp, and what was refused.
    pub async fn messages(&self, id: &str) -> Result<ReadBack, ControlError> {
        self.call(
            reqwest::Method::GET,
            &format!("/_control/accounts/{id}/messages"),
            None,
        )
        .await
    }

    /// The same over every account.
    pub async fn all_messages(&self) -> Result<ReadBack, ControlError> {
        self.call(reqwest::Method::GET, "/_control/messages", None)
            .await
    }
}
