//! The bridge to WhatsApp Web's modules: `bridge.js`, evaluated once per page
//! load with the names of `config/wa-web.toml`, then called function by
//! function through WebDriver's execute-async. Every call has a deadline in
//! the page and another around the WebDriver command, so a script that never
//! settles comes back as [`PageError::Timeout`], and one that throws as
//! [`PageError::Script`] with the page's message.

use super::*;

/// The in-page bridge, installed with the names as its argument.
pub(crate) const BRIDGE_JS: &str = include_str!("bridge.js");

/// Calls a bridge function; the callback is execute-async's last argument.
const RUN_JS: &str = "var done = arguments[arguments.length - 1]; var c = window.__courier; \
    if (!c) { done({ absent: true }); return; } \
    c.run(arguments[0], arguments[1], arguments[2]).then(done, function (e) { done({ err: String(e) }); });";

/// The connection as WhatsApp Web's socket model reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WaState {
    /// `Socket.state` (`CONNECTED`, `UNPAIRED`, `CONFLICT`, …).
    pub state: String,
    /// The app state has synced (`change:hasSynced`).
    pub synced: bool,
    /// The own id: phone-number id, else `@lid`.
    pub me: Option<String>,
    /// `state` is the connected state.
    pub connected: bool,
    /// `state` is the conflict state.
    pub conflict: bool,
    /// `state` is a blocked state.
    pub blocked: bool,
    /// The logout command was seen since the bridge was installed.
    pub logout: bool,
}

/// A group chat with its member count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    /// `…@g.us`.
    pub id: String,
    /// Its title.
    pub name: String,
    /// Members after a metadata refresh.
    pub members: usize,
}

#[derive(Deserialize)]
struct RawOutgoing {
    data_id: String,
    text: Option<String>,
    ack: Option<i64>,
    media: bool,
    link_preview: bool,
    t: Option<i64>,
}

impl From<RawOutgoing> for OutgoingMessage {
    fn from(r: RawOutgoing) -> Self {
        OutgoingMessage {
            data_id: r.data_id,
            text: r.text,
            ack: r.ack.and_then(AckLevel::from_code),
            media: r.media,
            link_preview: r.link_preview,
            t: r.t,
        }
    }
}

/// The longest one bridge call may take.
const MAX_CALL: Duration = Duration::from_secs(25);

/// Whether a WebDriver error says the document went away during a script.
fn navigated_away(e: &fantoccini::error::CmdError) -> bool {
    let s = e.to_string();
    s.contains("unloaded") || s.contains("script timeout")
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, v: Value) -> Result<T, PageError> {
    serde_json::from_value(v).map_err(|e| PageError::Script {
        what: what.to_string(),
        message: format!("unexpected answer: {e}"),
    })
}

impl WhatsAppPage {
    /// Installs the bridge in the current page load (a no-op when present).
    async fn install_bridge(&self) -> Result<(), PageError> {
        let v = self
            .js(
                "bridge_install",
                BRIDGE_JS,
                vec![self.names_json.as_ref().clone()],
            )
            .await?;
        if let Some(m) = v["missing"].as_str() {
            return Err(PageError::Unsupported(m.to_string()));
        }
        if v["installed"].as_bool() == Some(true) {
            return Ok(());
        }
        Err(PageError::NotReady(
            "WhatsApp Web's modules are not loaded yet".into(),
        ))
    }

    /// Runs bridge function `func` with `args` under `within` (in the page
    /// and around the WebDriver command), installing the bridge first when
    /// this page load has none.
    pub(crate) async fn bridge_within(
        &self,
        func: &'static str,
        args: Value,
        within: Duration,
    ) -> Result<Value, PageError> {
        // WebDriver's own script timeout is 30 s by default: stay under it,
        // so a long call ends with our deadline, not the driver's.
        let within = within.min(MAX_CALL);
        let deadline = json!(within.as_millis() as u64);
        for _ in 0..2 {
            let started = Instant::now();
            let r = tokio::time::timeout(
                within + Duration::from_secs(1),
                self.client
                    .execute_async(RUN_JS, vec![json!(func), args.clone(), deadline.clone()]),
            )
            .await;
            metrics::histogram!(crate::metrics::BROWSER_COMMAND_SECONDS, "command" => func)
                .record(started.elapsed().as_secs_f64());
            let v = match r {
                // The page went away under the call (a navigation or reload:
                // a logout, a ban screen, WhatsApp reloading itself).
                Ok(Err(e)) if navigated_away(&e) => {
                    return Err(PageError::NotReady(format!(
                        "the page navigated during `{func}`: {e}"
                    )))
                }
                Ok(r) => r.map_err(|e| self.cmd_error(e))?,
                Err(_) => {
                    return Err(PageError::Timeout {
                        what: format!("page call `{func}`"),
                        after: within,
                    })
                }
            };
            if v["absent"].as_bool() == Some(true) {
                self.install_bridge().await?;
                continue;
            }
            if let Some(m) = v["missing"].as_str() {
                return Err(PageError::Unsupported(m.to_string()));
            }
            if let Some(err) = v["err"].as_str() {
                if v["code"].as_str() == Some("not_on_whatsapp") {
                    return Err(PageError::NotOnWhatsApp(
                        args["target"].as_str().unwrap_or(err).to_string(),
                    ));
                }
                if v["code"].as_str() == Some("no_such_chat") {
                    return Err(PageError::NoSuchChat(
                        args["target"]
                            .as_str()
                            .or(args["groupId"].as_str())
                            .unwrap_or(err)
                            .to_string(),
                    ));
                }
                if err.contains("timed out in the page") {
                    return Err(PageError::Timeout {
                        what: format!("page call `{func}`: {err}"),
                        after: within,
                    });
                }
                return Err(PageError::Script {
                    what: func.to_string(),
                    message: err.to_string(),
                });
            }
            return Ok(v["ok"].clone());
        }
        Err(PageError::NotReady(
            "the bridge did not stay installed (the page reloaded)".into(),
        ))
    }

    /// [`Self::bridge_within`] under the command timeout.
    pub(crate) async fn bridge(&self, func: &'static str, args: Value) -> Result<Value, PageError> {
        self.bridge_within(func, args, self.timeout).await
    }

    /// The connection state, sync and own id from the modules.
    pub async fn wa_state(&self) -> Result<WaState, PageError> {
        let v = self.bridge("state", json!({})).await?;
        let state = v["state"].as_str().unwrap_or_default().to_string();
        let is = |k: &str| v[k].as_str() == Some(state.as_str());
        let any = |k: &str| {
            v[k].as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(state.as_str())))
        };
        Ok(WaState {
            connected: is("connected"),
            conflict: is("conflict"),
            blocked: any("blocked"),
            synced: v["synced"].as_bool().unwrap_or(false),
            me: v["me"].as_str().map(str::to_string),
            logout: v["logout"].as_bool().unwrap_or(false),
            state,
        })
    }

    /// Acks buffered in the page since the last drain (from `change:ack`),
    /// as `(message id, level code)`, and how many the bounded buffer dropped
    /// (a catch-up from the message models covers those).
    pub async fn drain_acks(&self) -> Result<(Vec<(String, i64)>, u64), PageError> {
        let v = self.bridge("drain", json!({})).await?;
        let acks: Vec<(String, i64)> = decode("drain", v["acks"].clone())?;
        Ok((acks, v["lost"].as_u64().unwrap_or(0)))
    }

    /// The current ack code of each message id, from the message models
    /// (`None`: the page does not hold the message).
    pub async fn acks_of(&self, ids: &[String]) -> Result<Vec<Option<i64>>, PageError> {
        let v = self.bridge("acks_of", json!({ "ids": ids })).await?;
        decode("acks_of", v)
    }

    pub(crate) fn outgoing_from(v: Value) -> Result<Vec<OutgoingMessage>, PageError> {
        let raw: Vec<RawOutgoing> = decode("recent", v)?;
        Ok(raw.into_iter().map(OutgoingMessage::from).collect())
    }
}
