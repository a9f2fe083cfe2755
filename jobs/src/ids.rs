//! Domain identifiers parsed once at the edge: phone numbers, chat ids and
//! message bodies.

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// An E.164 phone number, stored as its digits without `+` (WhatsApp's own form).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses `+44 7700 900123`, `447700900123`, `(44) 7700-900123`…: digits with
    /// optional `+`, spaces, dashes, dots and parentheses; 7 to 15 digits, no
    /// leading zero (E.164 has no trunk prefix).
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let err = |d: &str| ValidationError::new("phone_number", d.to_string());
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(err("is empty"));
        }
        let body = trimmed.strip_prefix('+').unwrap_or(trimmed);
        let mut digits = String::with_capacity(body.len());
        for c in body.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(err(&format!("`{input}` contains `{c}`; expected digits"))),
            }
        }
        if !(7..=15).contains(&digits.len()) {
            return Err(err(&format!(
                "`{input}` has {} digits; E.164 numbers have 7 to 15",
                digits.len()
            )));
        }
        if digits.starts_with('0') {
            return Err(err(&format!(
                "`{input}` starts with 0; give the country code (E.164)"
            )));
        }
        Ok(Self(digits))
    }

    /// The digits, without `+`.
    pub fn digits(&self) -> &str {
        &self.0
    }

    /// `+<digits>`.
    pub fn e164(&self) -> String {
        format!("+{}", self.0)
    }

    /// The individual chat id, `<digits>@c.us`.
    pub fn chat_id(&self) -> ChatId {
        ChatId {
            user: self.0.clone(),
            kind: ChatKind::Contact,
        }
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<PhoneNumber> for String {
    fn from(p: PhoneNumber) -> String {
        p.0
    }
}

impl std::fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "+{}", self.0)
    }
}

/// What a chat id points at, by its server suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatKind {
    /// `@c.us`: a person, by phone number.
    Contact,
    /// `@g.us`: a group.
    Group,
    /// `@lid`: a person by linked id, phone hidden.
    Lid,
}

impl ChatKind {
    /// The suffix after `@`.
    pub fn server(self) -> &'static str {
        match self {
            ChatKind::Contact => "c.us",
            ChatKind::Group => "g.us",
            ChatKind::Lid => "lid",
        }
    }
}

/// A WhatsApp chat id: `<digits>@c.us`, `<digits>[-<digits>]@g.us` or `<digits>@lid`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChatId {
    user: String,
    kind: ChatKind,
}

impl ChatId {
    /// Parses a chat id.
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let err = |d: String| ValidationError::new("chat_id", d);
        let (user, server) = input.trim().split_once('@').ok_or_else(|| {
            err(format!(
                "`{input}` has no `@`; expected <digits>@c.us, <id>@g.us or <digits>@lid"
            ))
        })?;
        let kind = match server {
            "c.us" => ChatKind::Contact,
            "g.us" => ChatKind::Group,
            "lid" => ChatKind::Lid,
            other => {
                return Err(err(format!(
                    "unknown server `@{other}`; expected @c.us, @g.us or @lid"
                )))
            }
        };
        let ok = match kind {
            ChatKind::Contact => {
                PhoneNumber::parse(user).is_ok() && user.bytes().all(|b| b.is_ascii_digit())
            }
            ChatKind::Lid => {
                (1..=20).contains(&user.len()) && user.bytes().all(|b| b.is_ascii_digit())
            }
            ChatKind::Group => {
                (5..=40).contains(&user.len())
                    && user.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                    && !user.starts_with('-')
                    && !user.ends_with('-')
                    && !user.contains("--")
            }
        };
        if !ok {
            return Err(err(format!("`{input}` is not a valid @{server} id")));
        }
        Ok(Self {
            user: user.to_string(),
            kind,
        })
    }

    /// The part before `@`.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// What the id points at.
    pub fn kind(&self) -> ChatKind {
        self.kind
    }

    /// True for `@g.us`.
    pub fn is_group(&self) -> bool {
        self.kind == ChatKind::Group
    }
}

impl std::fmt::Display for ChatId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.user, self.kind.server())
    }
}

impl TryFrom<String> for ChatId {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ChatId> for String {
    fn from(c: ChatId) -> String {
        c.to_string()
    }
}

/// A text body or caption: non-blank, at most WhatsApp's 65,536 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageBody(String);

impl MessageBody {
    /// WhatsApp's cap on a text message, in characters.
    pub const MAX_CHARS: usize = 65_536;

    /// Parses a body.
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        if input.trim().is_empty() {
            return Err(ValidationError::new("body", "is empty"));
        }
        let n = input.chars().count();
        if n > Self::MAX_CHARS {
            return Err(ValidationError::new(
                "body",
                format!(
                    "has {n} characters; WhatsApp allows at most {}",
                    Self::MAX_CHARS
                ),
            ));
        }
        Ok(Self(input.to_string()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MessageBody {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<MessageBody> for String {
    fn from(b: MessageBody) -> String {
        b.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn phone_numbers_normalise_to_digits() {
        assert_eq!(
            PhoneNumber::parse("+44 7700 900123").unwrap().digits(),
            "447700900123"
        );
        assert_eq!(
            PhoneNumber::parse("(91) 98765-43210").unwrap().digits(),
            "919876543210"
        );
        assert_eq!(
            PhoneNumber::parse("919876543210").unwrap().e164(),
            "+919876543210"
        );
    }

    #[test]
    fn bad_phone_numbers_say_why() {
        for (input, needle) in [
            ("", "empty"),
            ("+44 abc", "contains `a`"),
            ("12345", "7 to 15"),
            ("1234567890123456", "7 to 15"),
            ("07700900123", "starts with 0"),
        ] {
            let e = PhoneNumber::parse(input).unwrap_err();
            assert_eq!(e.field, "phone_number");
            assert!(e.detail.contains(needle), "{input}: {}", e.detail);
        }
    }

    #[test]
    fn chat_ids_parse_by_server() {
        assert_eq!(
            ChatId::parse("447700900123@c.us").unwrap().kind(),
            ChatKind::Contact
        );
        assert!(ChatId::parse("120363012345678901@g.us").unwrap().is_group());
        assert!(ChatId::parse("447700900123-1612345678@g.us")
            .unwrap()
            .is_group());
        assert_eq!(
            ChatId::parse("123456789012345@lid").unwrap().kind(),
            ChatKind::Lid
        );
        for bad in [
            "447700900123",
            "abc@c.us",
            "447700900123@s.whatsapp.net",
            "-1@g.us",
            "@g.us",
        ] {
            assert!(ChatId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bodies_are_capped_at_whatsapps_limit() {
        assert!(MessageBody::parse("   ").is_err());
        assert!(MessageBody::parse(&"x".repeat(65_536)).is_ok());
        let e = MessageBody::parse(&"x".repeat(65_537)).unwrap_err();
        assert!(e.detail.contains("65536"));
    }

    proptest! {
        #[test]
        fn phone_parse_never_panics_and_round_trips(s in "\\PC{0,30}") {
            if let Ok(p) = PhoneNumber::parse(&s) {
                prop_assert_eq!(PhoneNumber::parse(&p.e164()).unwrap(), p.clone());
                prop_assert_eq!(ChatId::parse(&p.chat_id().to_string()).unwrap(), p.chat_id());
            }
        }

        #[test]
        fn chat_id_parse_never_panics_and_round_trips(s in "\\PC{0,40}") {
            if let Ok(c) = ChatId::parse(&s) {
                prop_assert_eq!(ChatId::parse(&c.to_string()).unwrap(), c);
            }
        }
    }
}
