//! Reading through the modules: the chats and groups with their ids, a
//! group's members (metadata refreshed, admin flags, `@lid` members mapped
//! to a phone number when their contact carries one), opening a chat without
//! navigation, and a chat's outgoing messages with their acks.

use super::*;

impl WhatsAppPage {
    /// Every chat (`Chat` collection), with its id and title.
    pub async fn chat_list(&self) -> Result<Vec<ChatSummary>, PageError> {
        self.ensure_ready().await?;
        let v = self.bridge("chats", json!({})).await?;
        serde_json::from_value(v).map_err(|e| PageError::WebDriver(e.to_string()))
    }

    /// Every group chat with its member count, after refreshing each
    /// group's metadata.
    pub async fn groups(&self) -> Result<Vec<GroupSummary>, PageError> {
        self.ensure_ready().await?;
        let v = self
            .bridge_within("groups", json!({}), self.timeout * 4)
            .await?;
        serde_json::from_value(v).map_err(|e| PageError::WebDriver(e.to_string()))
    }

    /// Finds a chat, or creates the latest chat with that id, without a page
    /// navigation. A group the account is not in is [`PageError::NoSuchChat`].
    pub async fn open_chat(&self, chat: &str) -> Result<(), PageError> {
        self.ensure_ready().await?;
        self.bridge("open", json!({ "target": chat })).await?;
        Ok(())
    }

    /// Logs this device out of WhatsApp (WhatsApp Web's own logout: the
    /// phone's linked-devices list drops it). The page may reload during the
    /// call, so an error here is not final: look at the screen afterwards.
    pub async fn logout(&self) -> Result<(), PageError> {
        self.bridge("logout", json!({})).await?;
        Ok(())
    }

    /// Whether a phone number (digits) is registered on WhatsApp.
    pub async fn exists(&self, digits: &str) -> Result<bool, PageError> {
        let v = self
            .bridge("exists", json!({ "number": format!("{digits}@c.us") }))
            .await?;
        Ok(v.as_bool().unwrap_or(false))
    }

    /// For the retry path: the last `limit` outgoing messages in `chat`
    /// (oldest first) from the message models, so a retry can tell whether
    /// an earlier attempt already reached WhatsApp.
    pub async fn recent_outgoing(
        &self,
        chat: &str,
        limit: usize,
    ) -> Result<Vec<OutgoingMessage>, PageError> {
        self.ensure_ready().await?;
        let v = self
            .bridge("recent", json!({ "target": chat, "limit": limit }))
            .await?;
        Self::outgoing_from(v)
    }

    /// The ack level of one message, from its model.
    pub async fn ack(&self, data_id: &str) -> Result<Option<AckLevel>, PageError> {
        let v = self.acks_of(&[data_id.to_string()]).await?;
        Ok(v.into_iter().next().flatten().and_then(AckLevel::from_code))
    }

    /// Every member of a group, after refreshing its metadata.
    pub async fn participants(&self, group: &str) -> Result<Vec<Participant>, PageError> {
        self.ensure_ready().await?;
        let v = self
            .bridge_within(
                "participants",
                json!({ "groupId": group }),
                self.timeout * 4,
            )
            .await?;
        serde_json::from_value(v).map_err(|e| PageError::WebDriver(e.to_string()))
    }
}
