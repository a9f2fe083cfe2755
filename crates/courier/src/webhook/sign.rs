//! Standard Webhooks signatures (<https://www.standardwebhooks.com>), pure.
//!
//! A secret is `whsec_` + base64 of 32 random bytes. A message is signed as
//! `v1,` + base64(HMAC-SHA256(secret bytes, "{webhook-id}.{webhook-timestamp}.{body}")),
//! sent in the `webhook-signature` header beside `webhook-id` and
//! `webhook-timestamp` (Unix seconds). Any of the specification's libraries
//! verifies it (the tests check with the `standardwebhooks` Python package).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The prefix of a subscription secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new random secret, `whsec_<base64 of 32 bytes>`.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{SECRET_PREFIX}{}", B64.encode(bytes))
}

/// The key bytes of a `whsec_…` secret (`None` when it is not one).
fn key_of(secret: &str) -> Option<Vec<u8>> {
    B64.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()
}

/// The `webhook-signature` value for one message.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    // A stored secret always decodes (we made it); an unreadable one signs
    // with its raw bytes rather than panicking, and no receiver accepts it.
    let key = key_of(secret).unwrap_or_else(|| secret.as_bytes().to_vec());
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` value signed with each of `secrets`, in order,
/// space-separated (a receiver accepts the request if any one verifies).
pub fn signatures(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| sign(s, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_whsec_and_32_random_bytes() {
        let a = new_secret();
        assert!(a.starts_with("whsec_"));
        assert_eq!(key_of(&a).unwrap().len(), 32);
        assert_ne!(a, new_secret());
    }

    /// The example of the Standard Webhooks specification's reference
    /// libraries (secret, id, timestamp, payload and signature).
    #[test]
    fn signs_the_specification_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let sig = sign(
            secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn several_secrets_sign_space_separated_in_order() {
        let (a, b) = (new_secret(), new_secret());
        let both = signatures(&[&a, &b], "evt_1", 1, b"{}");
        assert_eq!(
            both,
            format!(
                "{} {}",
                sign(&a, "evt_1", 1, b"{}"),
                sign(&b, "evt_1", 1, b"{}")
            )
        );
        assert_eq!(
            signatures(&[&a], "evt_1", 1, b"{}"),
            sign(&a, "evt_1", 1, b"{}")
        );
    }
}
