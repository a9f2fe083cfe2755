//! Named API tokens: created, listed and revoked by `courier tokens`, checked
//! on every API request.
//!
//! A token's secret is `courier_` followed by 32 random bytes (base64url).
//! Only its SHA-256 is stored: with 256 bits of entropy there is nothing to
//! brute-force, so a slow password hash would add cost to every request and
//! no protection, and a copy of the table lets no one in. The `courier_`
//! prefix makes a leaked secret recognisable to secret scanners, and lets a
//! string that cannot be a token be refused without a query.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore as _;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// What a token may do. `admin` implies the other two; `read` and `enqueue`
/// are independent (a producer that also watches its jobs has both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every `GET`: accounts, jobs, messages, groups, stats, metrics.
    Read,
    /// Creating work: jobs, messages, retries, group discovery and scrapes,
    /// and cancelling jobs.
    Enqueue,
    /// Everything: account management, log in and out, limits, group
    /// updates, login links.
    Admin,
}

impl Scope {
    /// Every scope, weakest first.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Enqueue, Scope::Admin];

    /// The scope's name, as the CLI, the database and error bodies spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Enqueue => "enqueue",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| TokenError::UnknownScope(s.to_string()))
    }
}

/// Parses a comma-separated scope list (`read,enqueue`): sorted, without
/// repeats, at least one.
pub fn parse_scopes(list: &str) -> Result<Vec<Scope>, TokenError> {
    let mut scopes = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Scope::from_str)
        .collect::<Result<Vec<_>, _>>()?;
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        return Err(TokenError::NoScopes);
    }
    Ok(scopes)
}

/// Every token secret starts with this.
pub const SECRET_PREFIX: &str = "courier_";

/// How much of a secret is stored in clear and shown by `courier tokens
/// list`: the prefix and 6 characters (36 bits), enough to tell tokens apart
/// and far too little to guess the rest.
const SHOWN_LEN: usize = SECRET_PREFIX.len() + 6;

/// How often `last_used_at` is written at most, per token: about once a
/// minute, not on every request.
pub const LAST_USED_EVERY: Duration = Duration::from_secs(60);

/// The longest `--expires-in` accepted (use `never` for no expiry).
const MAX_LIFETIME: Duration = Duration::from_secs(10 * 366 * 86_400);

/// SHA-256 of a presented secret: what is stored and looked up.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Constant-time equality of two hashes.
fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The configured `api.token`: the bootstrap / break-glass admin
/// credential. Only its hash is kept.
#[derive(Clone)]
pub struct Bootstrap([u8; 32]);

impl Bootstrap {
    /// Hashes `secret`; the caller drops the clear text.
    pub fn new(secret: &str) -> Self {
        Self(hash(secret))
    }

    /// Whether a presented secret's hash is this token's (constant time).
    pub fn matches(&self, presented: &[u8; 32]) -> bool {
        same_hash(&self.0, presented)
    }
}

impl fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bootstrap([redacted])")
    }
}

/// Who is calling, once a token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's id (`None`: the bootstrap token).
    pub token_id: Option<Uuid>,
    /// The token's name (`bootstrap` for `api.token`); logged, never the secret.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// The one account it may touch (`None`: all).
    pub account_id: Option<Uuid>,
}

impl Principal {
    /// The bootstrap token: admin on every account.
    pub fn bootstrap() -> Self {
        Self {
            token_id: None,
            name: "bootstrap".into(),
            scopes: vec![Scope::Admin],
            account_id: None,
        }
    }

    /// Whether the token may do what `needed` allows (`admin` implies all).
    pub fn grants(&self, needed: Scope) -> bool {
        self.scopes.contains(&needed) || self.scopes.contains(&Scope::Admin)
    }
}

/// What `courier tokens create` asks for.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// 1 to 64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit;
    /// unique among tokens not revoked.
    pub name: String,
    /// At least one.
    pub scopes: Vec<Scope>,
    /// Restrict the token to this account.
    pub account_id: Option<Uuid>,
    /// When it stops working (`None`: never).
    pub expires_at: Option<DateTime<Utc>>,
}

/// A stored token, without its secret.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ApiToken {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// The first characters of the secret (`courier_Ab3dE9`).
    pub prefix: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// The one account it may touch.
    pub account_id: Option<Uuid>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last used (to about a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiToken {
    /// `revoked`, `expired` or `active` at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// A token just created: the only moment its secret exists outside the
/// caller's hands.
pub struct CreatedToken {
    /// The stored token.
    pub token: ApiToken,
    /// The secret, to show once.
    pub secret: String,
}

impl fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token", &self.token)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// What managing tokens can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A scope that does not exist.
    #[error("unknown scope `{0}`: the scopes are read, enqueue and admin")]
    UnknownScope(String),
    /// An empty scope list.
    #[error("at least one scope is needed (read, enqueue, admin)")]
    NoScopes,
    /// A name that breaks the naming rule.
    #[error(
        "invalid token name `{0}`: 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or digit"
    )]
    InvalidName(String),
    /// A live token already has this name.
    #[error("a token named `{0}` already exists (revoke it first, or pick another name)")]
    DuplicateName(String),
    /// `--account` names no account.
    #[error("no account {0}")]
    NoSuchAccount(Uuid),
    /// `--expires-in` could not be read.
    #[error("invalid expiry `{0}`: a duration such as 30d, 12h or 90m, or `never`")]
    InvalidDuration(String),
    /// `--expires-in` too long.
    #[error("expiry `{0}` is too far away: at most 10 years (or `never`)")]
    TooLong(String),
    /// Revoking a token that does not exist (or is already revoked, by name).
    #[error("no active token named or with id `{0}`")]
    NotFound(String),
    /// Revoking, by id, a token already revoked.
    #[error("token `{name}` ({id}) was already revoked at {at}")]
    AlreadyRevoked {
        /// Its name.
        name: String,
        /// Its id.
        id: Uuid,
        /// When.
        at: DateTime<Utc>,
    },
    /// The database failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

/// Parses `--expires-in`: a duration (`30d`, `12h`, `90m`, `1y`) or `never`.
pub fn parse_expires_in(s: &str) -> Result<Option<Duration>, TokenError> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let d = humantime::parse_duration(s).map_err(|_| TokenError::InvalidDuration(s.into()))?;
    if d.is_zero() {
        return Err(TokenError::InvalidDuration(s.into()));
    }
    if d > MAX_LIFETIME {
        return Err(TokenError::TooLong(s.into()));
    }
    Ok(Some(d))
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

const COLUMNS: &str =
    "id, name, prefix, scopes, account_id, created_at, expires_at, last_used_at, revoked_at";

/// Creates a token and returns it with its secret (shown once, stored
/// hashed).
pub async fn create(pool: &PgPool, new: NewToken) -> Result<CreatedToken, TokenError> {
    if !valid_name(&new.name) {
        return Err(TokenError::InvalidName(new.name));
    }
    if new.scopes.is_empty() {
        return Err(TokenError::NoScopes);
    }
    let secret = new_secret();
    let scopes: Vec<&str> = new.scopes.iter().map(|s| s.as_str()).collect();
    let token: ApiToken = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_tokens (name, prefix, secret_hash, scopes, account_id, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    )))
    .bind(&new.name)
    .bind(&secret[..SHOWN_LEN])
    .bind(&hash(&secret)[..])
    .bind(&scopes)
    .bind(new.account_id)
    .bind(new.expires_at)
    .fetch_one(pool)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.constraint() == Some("api_tokens_live_name_key") => {
            TokenError::DuplicateName(new.name.clone())
        }
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23503") => {
            TokenError::NoSuchAccount(new.account_id.unwrap_or_default())
        }
        _ => TokenError::Db(e),
    })?;
    Ok(CreatedToken { token, secret })
}

/// Every token, oldest first (revoked and expired ones included).
pub async fn list(pool: &PgPool) -> Result<Vec<ApiToken>, TokenError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_tokens ORDER BY created_at, id"
    )))
    .fetch_all(pool)
    .await?)
}

/// Revokes the live token named `name_or_id` (or with that id): from the
/// next request on it gets 401, on every replica.
pub async fn revoke(pool: &PgPool, name_or_id: &str) -> Result<ApiToken, TokenError> {
    let id = Uuid::parse_str(name_or_id).ok();
    let revoked: Option<ApiToken> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE api_tokens SET revoked_at = now() \
         WHERE revoked_at IS NULL AND (id = $1 OR ($1::uuid IS NULL AND name = $2)) \
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(name_or_id)
    .fetch_optional(pool)
    .await?;
    if let Some(t) = revoked {
        return Ok(t);
    }
    if let Some(id) = id {
        let old: Option<(String, Option<DateTime<Utc>>)> =
            sqlx::query_as("SELECT name, revoked_at FROM api_tokens WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
        if let Some((name, Some(at))) = old {
            return Err(TokenError::AlreadyRevoked { name, id, at });
        }
    }
    Err(TokenError::NotFound(name_or_id.to_string()))
}

/// A live token as a request's lookup reads it.
#[derive(sqlx::FromRow)]
struct LiveToken {
    id: Uuid,
    name: String,
    scopes: Vec<String>,
    account_id: Option<Uuid>,
    /// `last_used_at` is older than [`LAST_USED_EVERY`] (or unset).
    stale: bool,
}

/// The live (not revoked, not expired) token whose secret hashes to
/// `hashed`, as a principal; `None` if there is none. Writes `last_used_at`
/// when it is more than [`LAST_USED_EVERY`] old.
pub async fn authenticate(
    pool: &PgPool,
    secret: &str,
    hashed: &[u8; 32],
) -> Result<Option<Principal>, sqlx::Error> {
    if !secret.starts_with(SECRET_PREFIX) {
        return Ok(None);
    }
    let every = LAST_USED_EVERY.as_secs_f64();
    let row: Option<LiveToken> = sqlx::query_as(
        "SELECT id, name, scopes, account_id, \
                (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $2)) AS stale \
         FROM api_tokens \
         WHERE secret_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(&hashed[..])
    .bind(every)
    .fetch_optional(pool)
    .await?;
    let Some(LiveToken {
        id,
        name,
        scopes,
        account_id,
        stale,
    }) = row
    else {
        return Ok(None);
    };
    if stale {
        // The same condition again: replicas racing write once between them.
        sqlx::query(
            "UPDATE api_tokens SET last_used_at = now() WHERE id = $1 \
             AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $2))",
        )
        .bind(id)
        .bind(every)
        .execute(pool)
        .await?;
    }
    Ok(Some(Principal {
        token_id: Some(id),
        name,
        // The CHECK keeps the column to known words.
        scopes: scopes.iter().filter_map(|s| s.parse().ok()).collect(),
        account_id,
    }))
}

fn when(t: Option<DateTime<Utc>>, none: &str) -> String {
    t.map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| none.to_string())
}

/// What `courier tokens create` prints: the secret, once, and what it grants.
pub fn render_created(c: &CreatedToken) -> String {
    let t = &c.token;
    format!(
        "id        {}\nname      {}\nscopes    {}\naccount   {}\nexpires   {}\nsecret    {}\n\n\
         The secret is shown once and stored only as a hash: keep it now.\n\
         Use it as `Authorization: Bearer <secret>`.\n",
        t.id,
        t.name,
        t.scopes.join(","),
        t.account_id.map_or("(all)".to_string(), |a| a.to_string()),
        when(t.expires_at, "never"),
        c.secret,
    )
}

/// What `courier tokens list` prints: one row per token, never a secret.
pub fn render_list(tokens: &[ApiToken], now: DateTime<Utc>) -> String {
    if tokens.is_empty() {
        return "no API tokens (create one with `courier tokens create`)\n".into();
    }
    let header = [
        "ID",
        "PREFIX",
        "NAME",
        "SCOPES",
        "ACCOUNT",
        "EXPIRES",
        "LAST USED",
        "STATE",
    ];
    let rows: Vec<[String; 8]> = tokens
        .iter()
        .map(|t| {
            [
                t.id.to_string(),
                t.prefix.clone(),
                t.name.clone(),
                t.scopes.join(","),
                t.account_id.map_or("(all)".to_string(), |a| a.to_string()),
                when(t.expires_at, "never"),
                when(t.last_used_at, "never"),
                match (t.state(now), t.revoked_at) {
                    ("revoked", Some(at)) => format!("revoked {}", when(Some(at), "")),
                    (s, _) => s.to_string(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(&header);
    for r in &rows {
        out.push_str(&line(&r.each_ref().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_from_a_comma_list_and_unknown_ones_are_named() {
        assert_eq!(
            parse_scopes("enqueue, read,read").unwrap(),
            vec![Scope::Read, Scope::Enqueue]
        );
        let e = parse_scopes("read,write").unwrap_err();
        assert!(e.to_string().contains("unknown scope `write`"), "{e}");
        assert!(matches!(parse_scopes(" , "), Err(TokenError::NoScopes)));
    }

    #[test]
    fn admin_implies_the_others_and_nothing_else_does() {
        let p = |scopes: Vec<Scope>| Principal {
            scopes,
            ..Principal::bootstrap()
        };
        for s in Scope::ALL {
            assert!(p(vec![Scope::Admin]).grants(s));
        }
        assert!(!p(vec![Scope::Read]).grants(Scope::Enqueue));
        assert!(!p(vec![Scope::Enqueue]).grants(Scope::Read));
        assert!(!p(vec![Scope::Read, Scope::Enqueue]).grants(Scope::Admin));
    }

    #[test]
    fn expiries_parse_with_clear_refusals() {
        assert_eq!(
            parse_expires_in("30d").unwrap(),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(parse_expires_in("never").unwrap(), None);
        for bad in ["", "0s", "soon", "-3d", "30 dayz"] {
            let e = parse_expires_in(bad).unwrap_err();
            assert!(e.to_string().contains("invalid expiry"), "{bad}: {e}");
        }
        assert!(matches!(
            parse_expires_in("11y"),
            Err(TokenError::TooLong(_))
        ));
    }

    #[test]
    fn secrets_are_long_random_and_recognisable() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX) && a.len() == SECRET_PREFIX.len() + 43);
        assert!(a[SECRET_PREFIX.len()..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        assert!(Bootstrap::new(&a).matches(&hash(&a)));
        assert!(!Bootstrap::new(&a).matches(&hash(&b)));
        assert!(!format!("{:?}", Bootstrap::new(&a)).contains(&a[8..]));
    }

    #[test]
    fn names_follow_the_rule() {
        for ok in ["ci", "ci-2026.03", "A_b"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-ci", "ci token", "é", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
