//! Who may call the API, and for what.
//!
//! - [`token`]: named API tokens, stored as the SHA-256 of a random secret,
//!   each with scopes (`read`, `enqueue`, `admin`), optionally one account, an
//!   expiry and a last-used time. Several can be live at once, so a token is
//!   rotated without downtime. The configured `api.token` is the bootstrap
//!   (break-glass) admin credential, held in memory as its hash only.
//! - [`link`]: short-lived signed links to one account's login page, so a
//!   person can open it in a browser without any API token in a URL.
//!
//! The HTTP layer (`api::auth`) decides which scope each route needs; this
//! module knows nothing of routes. It owns (writes) `api_tokens` and
//! `api_link_keys`.

pub mod link;
pub mod token;

pub use link::{LinkError, LinkKey, LoginLink};
pub use token::{ApiToken, CreatedToken, NewToken, Principal, Scope, TokenError};
