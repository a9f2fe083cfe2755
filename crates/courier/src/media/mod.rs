//! Media sources made safe to send from a service that drives real accounts.
//!
//! A message's media comes from a path under `browser.media_dir` or from an
//! http(s) URL. Both are hostile input (the API stores whatever a caller
//! sends), so both are checked again at send time, by the worker, against its
//! own configuration:
//!
//! - **Paths** ([`confine`]): relative only, no `..`, and after resolving
//!   symlinks (`canonicalize`) the file must still be inside the canonical
//!   media directory. Chromium is handed the canonical path.
//! - **URLs** ([`MediaFetcher`]): http/https only; every address the host
//!   resolves to is checked by a custom DNS resolver (so DNS rebinding between
//!   a check and the connect cannot reach an internal address), IP-literal
//!   hosts are checked directly, each redirect target is re-checked and the
//!   number of redirects is capped; the body is counted while it streams
//!   (Content-Length is not trusted); the whole download has a timeout.
//!   Private, loopback, link-local, unique-local, shared (CGNAT), multicast,
//!   documentation, reserved and unspecified addresses — v4 and v6, including
//!   v4-mapped/-compatible, NAT64 and 6to4 forms — are refused unless a CIDR
//!   in `browser.media_allow_cidrs` covers them.
//!
//! Every refusal is a [`MediaError`] whose text names the input and the rule;
//! the delivery layer fails the message with it (a permanent error: nothing is
//! sent, nothing is retried).

pub(crate) mod address;

pub use address::{is_public, AddressPolicy, BadCidr};

use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why a media source was refused or could not be staged.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The path is empty.
    #[error("media_path is empty")]
    EmptyPath,
    /// The path is absolute.
    #[error("media_path `{0}` is absolute; give a path relative to browser.media_dir")]
    AbsolutePath(String),
    /// The path climbs out with `..`.
    #[error("media_path `{0}` contains `..`; paths must stay inside browser.media_dir")]
    Traversal(String),
    /// The media directory itself cannot be resolved.
    #[error("browser.media_dir `{dir}` cannot be resolved")]
    MediaDir {
        /// The configured directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file cannot be resolved or read.
    #[error("media_path `{path}` cannot be read")]
    Unreadable {
        /// The path as given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// After following symlinks the file lies outside the media directory.
    #[error("media_path `{path}` resolves to `{}`, outside browser.media_dir (a symlink escaping the directory)", resolved.display())]
    Escapes {
        /// The path as given.
        path: String,
        /// Where it really points.
        resolved: PathBuf,
    },
    /// Not a regular file.
    #[error("media_path `{0}` is not a regular file")]
    NotAFile(String),
    /// Over `browser.media_max_bytes`.
    #[error("{what} is over the {max}-byte cap (browser.media_max_bytes)")]
    TooLarge {
        /// The path or URL.
        what: String,
        /// The cap.
        max: u64,
    },
    /// Not a URL, or no host.
    #[error("media_url `{url}` is not a usable URL: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// Not http or https.
    #[error("media_url `{url}`: scheme `{scheme}` is not allowed; use http or https")]
    Scheme {
        /// The URL.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// The host is, or resolves only to, an address media may not come from.
    #[error("media host `{host}` is {addr}, a private, loopback, link-local or otherwise non-public address; refused (allow it with browser.media_allow_cidrs)")]
    Forbidden {
        /// The host name or literal.
        host: String,
        /// The (first) refused address.
        addr: IpAddr,
    },
    /// DNS gave nothing.
    #[error("media host `{host}` does not resolve: {reason}")]
    Unresolvable {
        /// The host name.
        host: String,
        /// Why.
        reason: String,
    },
    /// More redirects than `browser.media_max_redirects`.
    #[error("media_url `{url}` redirected more than {max} times (browser.media_max_redirects)")]
    TooManyRedirects {
        /// The URL.
        url: String,
        /// The cap.
        max: usize,
    },
    /// The server answered with an error status.
    #[error("media_url `{url}` answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: reqwest::StatusCode,
    },
    /// The download took longer than `browser.media_timeout`.
    #[error("media_url `{url}` timed out after {after:?} (browser.media_timeout)")]
    Timeout {
        /// The URL.
        url: String,
        /// The limit.
        after: Duration,
    },
    /// Any other transport failure.
    #[error("media_url `{url}`: {detail}")]
    Fetch {
        /// The URL.
        url: String,
        /// The cause chain.
        detail: String,
    },
    /// Writing the staged download failed.
    #[error("cannot stage media in `{}`", path.display())]
    Stage {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An allow-list entry is not a CIDR.
    #[error("browser.media_allow_cidrs: `{0}` is not a CIDR (e.g. 10.0.0.0/8 or fd00::/8)")]
    BadCidr(String),
}

/// Checks the shape of a media path without touching the disk: non-empty,
/// relative, and free of `..` (the enqueue-time check; [`confine`] repeats
/// it and adds the symlink check).
pub fn check_relative(relative: &str) -> Result<&Path, MediaError> {
    if relative.trim().is_empty() {
        return Err(MediaError::EmptyPath);
    }
    let path = Path::new(relative);
    for c in path.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => {
                return Err(MediaError::AbsolutePath(relative.to_string()))
            }
            Component::ParentDir => return Err(MediaError::Traversal(relative.to_string())),
            Component::CurDir | Component::Normal(_) => {}
        }
    }
    Ok(path)
}

/// Resolves `relative` inside `media_dir`, refusing absolute paths, `..`,
/// and symlinks that lead outside the directory. Returns the canonical path
/// of a regular file no larger than `max_bytes`.
pub fn confine(media_dir: &Path, relative: &str, max_bytes: u64) -> Result<PathBuf, MediaError> {
    let rel = check_relative(relative)?;
    let root = std::fs::canonicalize(media_dir).map_err(|source| MediaError::MediaDir {
        dir: media_dir.to_path_buf(),
        source,
    })?;
    let resolved =
        std::fs::canonicalize(root.join(rel)).map_err(|source| MediaError::Unreadable {
            path: relative.to_string(),
            source,
        })?;
    if !resolved.starts_with(&root) {
        return Err(MediaError::Escapes {
            path: relative.to_string(),
            resolved,
        });
    }
    let meta = std::fs::metadata(&resolved).map_err(|source| MediaError::Unreadable {
        path: relative.to_string(),
        source,
    })?;
    if !meta.is_file() {
        return Err(MediaError::NotAFile(relative.to_string()));
    }
    if meta.len() > max_bytes {
        return Err(MediaError::TooLarge {
            what: format!("media_path `{relative}` ({} bytes)", meta.len()),
            max: max_bytes,
        });
    }
    Ok(resolved)
}

impl AddressPolicy {
    /// Checks a URL's scheme, and its host when it is an IP literal (names
    /// are checked by the resolver, at connect time).
    pub fn check_url(&self, url: &url::Url) -> Result<(), MediaError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(MediaError::Scheme {
                url: url.to_string(),
                scheme: url.scheme().to_string(),
            });
        }
        let ip = match url.host() {
            None => {
                return Err(MediaError::BadUrl {
                    url: url.to_string(),
                    reason: "it has no host".into(),
                })
            }
            Some(url::Host::Domain(_)) => return Ok(()),
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(MediaError::Forbidden {
                host: url.host_str().unwrap_or_default().to_string(),
                addr: ip,
            })
        }
    }
}

/// A DNS resolver that drops every address the policy refuses, so the
/// connection can only go to an address that was checked (no rebinding
/// window between a check and the connect).
#[derive(Debug)]
pub(crate) struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl GuardedResolver {
    /// A resolver that only returns addresses `policy` permits (webhooks use
    /// it too).
    pub(crate) fn new(policy: Arc<AddressPolicy>) -> Self {
        Self { policy }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| {
                    Box::new(MediaError::Unresolvable {
                        host: host.clone(),
                        reason: e.to_string(),
                    }) as Box<dyn std::error::Error + Send + Sync>
                })?
                .collect();
            let (ok, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
                all.into_iter().partition(|a| policy.permits(a.ip()));
            if ok.is_empty() {
                let err = match refused.first() {
                    Some(a) => MediaError::Forbidden { host, addr: a.ip() },
                    None => MediaError::Unresolvable {
                        host,
                        reason: "no addresses".into(),
                    },
                };
                return Err(Box::new(err) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Limits of [`MediaFetcher`] (from `browser.media_*`).
#[derive(Debug, Clone)]
pub struct FetchLimits {
    /// Largest body accepted, counted while streaming.
    pub max_bytes: u64,
    /// The whole download: connect, redirects and body.
    pub timeout: Duration,
    /// Redirects followed; each target is re-checked.
    pub max_redirects: usize,
}

/// Downloads media URLs under an [`AddressPolicy`] and [`FetchLimits`].
#[derive(Debug, Clone)]
pub struct MediaFetcher {
    http: reqwest::Client,
    policy: Arc<AddressPolicy>,
    limits: FetchLimits,
}

impl MediaFetcher {
    /// A fetcher enforcing `policy` and `limits`.
    pub fn new(policy: AddressPolicy, limits: FetchLimits) -> Self {
        let policy = Arc::new(policy);
        let redirect_policy = policy.clone();
        let max_redirects = limits.max_redirects;
        let http = reqwest::Client::builder()
            // An HTTP(S)_PROXY from the environment would connect on our
            // behalf to wherever it likes: never use one.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > max_redirects {
                    let url = attempt
                        .previous()
                        .first()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    return attempt.error(MediaError::TooManyRedirects {
                        url,
                        max: max_redirects,
                    });
                }
                match redirect_policy.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(e) => attempt.error(e),
                }
            }))
            .timeout(limits.timeout)
            .connect_timeout(limits.timeout)
            .build()
            .expect("a reqwest client with rustls builds");
        Self {
            http,
            policy,
            limits,
        }
    }

    /// From the browser settings (`media_allow_cidrs`, `media_max_bytes`,
    /// `media_timeout`, `media_max_redirects`).
    pub fn from_settings(b: &crate::config::BrowserSettings) -> Result<Self, MediaError> {
        Ok(Self::new(
            AddressPolicy::new(&b.media_allow_cidrs).map_err(|e| MediaError::BadCidr(e.0))?,
            FetchLimits {
                max_bytes: b.media_max_bytes,
                timeout: b.media_timeout,
                max_redirects: b.media_max_redirects,
            },
        ))
    }

    /// The limits in force.
    pub fn limits(&self) -> &FetchLimits {
        &self.limits
    }

    /// Downloads `url` into `dir` (created 0700) and returns the file. A
    /// partial file is removed on any failure.
    pub async fn fetch(&self, url: &str, dir: &Path) -> Result<PathBuf, MediaError> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let parsed = url::Url::parse(url).map_err(|e| MediaError::BadUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        self.policy.check_url(&parsed)?;
        let max = self.limits.max_bytes;
        let resp = self
            .http
            .get(parsed.clone())
            .send()
            .await
            .map_err(|e| self.explain(url, e))?;
        if resp.status().is_redirection() {
            // reqwest hands back, unfollowed, a redirect it will not follow
            // (e.g. to file://): name the refused target when there is one.
            let target = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| resp.url().join(l).ok());
            if let Some(t) = target {
                self.policy.check_url(&t)?;
            }
        }
        if !resp.status().is_success() {
            return Err(MediaError::Status {
                url: url.to_string(),
                status: resp.status(),
            });
        }
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(MediaError::TooLarge {
                what: format!(
                    "media_url `{url}` (Content-Length {})",
                    resp.content_length().unwrap_or_default()
                ),
                max,
            });
        }
        let name = parsed
            .path_segments()
            .and_then(|mut s| s.next_back())
            .filter(|n| !n.is_empty() && !n.starts_with('.'))
            .unwrap_or("media")
            .replace(['/', '\\', '\0'], "_");
        crate::browser::snapshot::create_private_dir(dir).map_err(|source| MediaError::Stage {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(format!("{}-{name}", uuid::Uuid::new_v4().simple()));
        let stage = |source| MediaError::Stage {
            path: path.clone(),
            source,
        };
        let mut file = tokio::fs::File::create(&path).await.map_err(stage)?;
        let mut stream = resp.bytes_stream();
        let mut total = 0u64;
        let result = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.explain(url, e))?;
                total += chunk.len() as u64;
                if total > max {
                    return Err(MediaError::TooLarge {
                        what: format!("media_url `{url}` (over {max} bytes so far)"),
                        max,
                    });
                }
                file.write_all(&chunk).await.map_err(stage)?;
            }
            file.flush().await.map_err(stage)
        }
        .await;
        match result {
            Ok(()) => Ok(path),
            Err(e) => {
                drop(file);
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Turns a reqwest error into the [`MediaError`] that caused it (our
    /// resolver's or redirect policy's refusal), a timeout, or a transport
    /// failure with its cause chain.
    fn explain(&self, url: &str, e: reqwest::Error) -> MediaError {
        let mut chain: Vec<String> = Vec::new();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = cur {
            if let Some(m) = err.downcast_ref::<MediaError>() {
                return clone_refusal(m).unwrap_or_else(|| MediaError::Fetch {
                    url: url.to_string(),
                    detail: m.to_string(),
                });
            }
            chain.push(err.to_string());
            cur = err.source();
        }
        if e.is_timeout() {
            return MediaError::Timeout {
                url: url.to_string(),
                after: self.limits.timeout,
            };
        }
        chain.dedup();
        MediaError::Fetch {
            url: url.to_string(),
            detail: chain.join(": "),
        }
    }
}

/// Copies the refusals the resolver and redirect policy raise (they carry
/// no I/O error, so they can be rebuilt).
fn clone_refusal(m: &MediaError) -> Option<MediaError> {
    Some(match m {
        MediaError::Forbidden { host, addr } => MediaError::Forbidden {
            host: host.clone(),
            addr: *addr,
        },
        MediaError::Unresolvable { host, reason } => MediaError::Unresolvable {
            host: host.clone(),
            reason: reason.clone(),
        },
        MediaError::TooManyRedirects { url, max } => MediaError::TooManyRedirects {
            url: url.clone(),
            max: *max,
        },
        MediaError::Scheme { url, scheme } => MediaError::Scheme {
            url: url.clone(),
            scheme: scheme.clone(),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
