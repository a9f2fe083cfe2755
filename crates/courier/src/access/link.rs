//! Signed login-page links: `/ui/accounts/{id}/login?expires=…&sig=…`.
//!
//! A person opens the login page in a browser, which cannot send a bearer
//! header; a URL ends up in browser history, proxy logs and screenshots. So
//! the link carries no API token: it carries an expiry (a few minutes away)
//! and an HMAC-SHA256, under a server key, of the purpose (`login-page`),
//! the account id and that expiry. It opens that account's login page (and
//! the page's own requests) until it expires, and nothing else.
//!
//! The key is 32 random bytes in `api_link_keys`, made by the first replica
//! that needs it, so every replica accepts every other's links. Deleting the
//! row and restarting the replicas invalidates all outstanding links.

use std::fmt;

use base64::Engine as _;
use chrono::{DateTime, TimeZone as _, Utc};
use hmac::{Hmac, KeyInit as _, Mac as _};
use rand::RngCore as _;
use sha2::Sha256;
use sqlx::PgPool;
use uuid::Uuid;

/// What a login link may be used for; part of what is signed, so a
/// signature made for another purpose never opens the login page.
pub const PURPOSE: &str = "login-page";

/// The server key that signs login links.
#[derive(Clone)]
pub struct LinkKey([u8; 32]);

impl fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkKey([redacted])")
    }
}

/// Why a link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Missing or malformed parameters, a signature that does not match
    /// (tampered, made for another account, another purpose or another key).
    #[error("the login link is not valid")]
    Invalid,
    /// A genuine link, past its expiry.
    #[error("the login link has expired")]
    Expired,
}

/// A signed link to one account's login page.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginLink {
    /// The account whose login page it opens.
    pub account_id: Uuid,
    /// When it stops working (whole seconds).
    pub expires_at: DateTime<Utc>,
    sig: String,
}

impl fmt::Debug for LoginLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginLink")
            .field("account_id", &self.account_id)
            .field("expires_at", &self.expires_at)
            .field("sig", &"[redacted]")
            .finish()
    }
}

impl LoginLink {
    /// `expires=…&sig=…`: the query every page URL carries.
    pub fn query(&self) -> String {
        format!("expires={}&sig={}", self.expires_at.timestamp(), self.sig)
    }

    /// The page's path and query, relative to the API's base URL.
    pub fn path(&self) -> String {
        format!("/ui/accounts/{}/login?{}", self.account_id, self.query())
    }

    /// The signature (a credential until `expires_at`: never log it).
    pub fn signature(&self) -> &str {
        &self.sig
    }
}

impl LinkKey {
    /// A key from its bytes (tests; production reads [`LinkKey::load_or_create`]).
    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// The cluster's key, made on first use. Every replica reads the same row.
    pub async fn load_or_create(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let mut fresh = [0u8; 32];
        rand::rng().fill_bytes(&mut fresh);
        sqlx::query(
            "INSERT INTO api_link_keys (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&fresh[..])
        .execute(pool)
        .await?;
        let key: Vec<u8> = sqlx::query_scalar("SELECT key FROM api_link_keys WHERE id = 1")
            .fetch_one(pool)
            .await?;
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| sqlx::Error::Protocol("api_link_keys.key is not 32 bytes".into()))?;
        Ok(Self(key))
    }

    fn mac(&self, account: Uuid, expires: i64) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(format!("{PURPOSE}\n{account}\n{expires}").as_bytes());
        mac
    }

    /// A link to `account`'s login page, valid until `expires_at` (rounded
    /// up to the second).
    pub fn sign(&self, account: Uuid, expires_at: DateTime<Utc>) -> LoginLink {
        let expires = expires_at.timestamp() + i64::from(expires_at.timestamp_subsec_nanos() > 0);
        let tag = self.mac(account, expires).finalize().into_bytes();
        LoginLink {
            account_id: account,
            expires_at: Utc.timestamp_opt(expires, 0).single().unwrap_or(expires_at),
            sig: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag),
        }
    }

    /// Checks a link's parameters for `account` at `now`: the signature
    /// first (in constant time), then the expiry, so "expired" is only ever
    /// said of a genuine link.
    pub fn verify(
        &self,
        account: Uuid,
        expires: Option<i64>,
        sig: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), LinkError> {
        let (Some(expires), Some(sig)) = (expires, sig) else {
            return Err(LinkError::Invalid);
        };
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| LinkError::Invalid)?;
        self.mac(account, expires)
            .verify_slice(&sig)
            .map_err(|_| LinkError::Invalid)?;
        if now.timestamp() >= expires {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(link: &LoginLink) -> (i64, String) {
        (link.expires_at.timestamp(), link.signature().to_string())
    }

    #[test]
    fn a_link_opens_its_account_until_it_expires_and_nothing_else() {
        let key = LinkKey::from_bytes([7; 32]);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let now = Utc::now();
        let link = key.sign(a, now + chrono::Duration::minutes(10));
        let (exp, sig) = parts(&link);
        assert_eq!(key.verify(a, Some(exp), Some(&sig), now), Ok(()));
        // Another account, a later expiry, a flipped character, another key.
        assert_eq!(
            key.verify(b, Some(exp), Some(&sig), now),
            Err(LinkError::Invalid)
        );
        assert_eq!(
            key.verify(a, Some(exp + 3600), Some(&sig), now),
            Err(LinkError::Invalid)
        );
        let mut tampered = sig.clone().into_bytes();
        tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            key.verify(a, Some(exp), Some(&tampered), now),
            Err(LinkError::Invalid)
        );
        assert_eq!(
            LinkKey::from_bytes([8; 32]).verify(a, Some(exp), Some(&sig), now),
            Err(LinkError::Invalid)
        );
        assert_eq!(
            key.verify(a, None, Some(&sig), now),
            Err(LinkError::Invalid)
        );
        assert_eq!(key.verify(a, Some(exp), None, now), Err(LinkError::Invalid));
        assert_eq!(
            key.verify(a, Some(exp), Some("!!"), now),
            Err(LinkError::Invalid)
        );
        // At and after the expiry.
        assert_eq!(
            key.verify(a, Some(exp), Some(&sig), link.expires_at),
            Err(LinkError::Expired)
        );
        assert!(link
            .path()
            .starts_with(&format!("/ui/accounts/{a}/login?expires={exp}&sig=")));
        assert!(!format!("{link:?}").contains(&sig));
    }
}
