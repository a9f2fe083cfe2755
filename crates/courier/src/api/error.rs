//! The API's error type: every failure becomes a status code and a JSON body
//! `{error, field, detail}`, never a stack trace and never a secret.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use courier_jobs::ValidationError;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code (`validation`, `not_found`, …).
    pub error: &'static str,
    /// The offending field, when one is at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong, for a person.
    pub detail: String,
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing, unknown, expired or revoked bearer token (no detail leaked).
    #[error("unauthorized")]
    Unauthorized,
    /// A valid token without the route's scope, or restricted to another
    /// account (the detail names the scope or the account, never the token).
    #[error("{detail}")]
    Forbidden {
        /// `scope` when a scope is missing.
        field: Option<String>,
        /// What is missing.
        detail: String,
    },
    /// A login-page link that is not genuine, or expired.
    #[error(transparent)]
    Link(crate::access::LinkError),
    /// The body or query could not be parsed at all.
    #[error("{detail}")]
    BadRequest {
        /// The field, when the parser named one.
        field: Option<String>,
        /// What is wrong.
        detail: String,
    },
    /// Parsed, but a field breaks a rule.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// No such resource.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A record the request names in `field` does not exist (404: the
    /// request is well formed; the record is missing).
    #[error("{detail}")]
    Missing {
        /// The field naming the record.
        field: String,
        /// What is missing.
        detail: String,
    },
    /// The state forbids the request, because of `field`.
    #[error("{detail}")]
    ConflictOn {
        /// The field at fault.
        field: String,
        /// Why.
        detail: String,
    },
    /// The body is over the limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// The body is not JSON by its content type.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The route exists, but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The resource is in a state that forbids the request.
    #[error("{0}")]
    Conflict(String),
    /// The database failed; the detail is logged, not returned.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl ApiError {
    /// A validation error on `field`.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Validation(ValidationError::new(field, detail))
    }

    /// The record `field` names does not exist.
    pub fn missing(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Missing {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// The state forbids the request because of `field`.
    pub fn conflict_on(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::ConflictOn {
            field: field.into(),
            detail: detail.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                ErrorBody {
                    error: "unauthorized",
                    field: None,
                    detail: "a valid bearer token is required".into(),
                },
            ),
            ApiError::Forbidden { field, detail } => (
                StatusCode::FORBIDDEN,
                ErrorBody {
                    error: "forbidden",
                    field,
                    detail,
                },
            ),
            ApiError::Link(e) => (
                StatusCode::UNAUTHORIZED,
                ErrorBody {
                    error: "unauthorized",
                    field: None,
                    detail: match e {
                        crate::access::LinkError::Expired => {
                            "this login link has expired; ask for a new one \
                             (POST /v1/accounts/{id}/login-link)"
                        }
                        crate::access::LinkError::Invalid => {
                            "this login page needs a valid signed link \
                             (POST /v1/accounts/{id}/login-link); API tokens are not accepted in URLs"
                        }
                    }
                    .into(),
                },
            ),
            ApiError::BadRequest { field, detail } => (
                StatusCode::BAD_REQUEST,
                ErrorBody {
                    error: "bad_request",
                    field,
                    detail,
                },
            ),
            ApiError::Validation(v) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorBody {
                    error: "validation",
                    field: Some(v.field),
                    detail: v.detail,
                },
            ),
            ApiError::NotFound(what) => (
                StatusCode::NOT_FOUND,
                ErrorBody {
                    error: "not_found",
                    field: None,
                    detail: format!("{what} not found"),
                },
            ),
            ApiError::Missing { field, detail } => (
                StatusCode::NOT_FOUND,
                ErrorBody {
                    error: "not_found",
                    field: Some(field),
                    detail,
                },
            ),
            ApiError::ConflictOn { field, detail } => (
                StatusCode::CONFLICT,
                ErrorBody {
                    error: "conflict",
                    field: Some(field),
                    detail,
                },
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorBody {
                    error: "payload_too_large",
                    field: None,
                    detail: format!("the body is larger than {} bytes", super::MAX_BODY_BYTES),
                },
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorBody {
                    error: "unsupported_media_type",
                    field: None,
                    detail: "expected Content-Type: application/json".into(),
                },
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorBody {
                    error: "method_not_allowed",
                    field: None,
                    detail: "this route does not take that method (see /openapi.json)".into(),
                },
            ),
            ApiError::Conflict(detail) => (
                StatusCode::CONFLICT,
                ErrorBody {
                    error: "conflict",
                    field: None,
                    detail,
                },
            ),
            ApiError::Database(e) => {
                // Constraint violations are the client's fault, reported by name.
                if let sqlx::Error::Database(d) = &e {
                    match d.code().as_deref() {
                        Some("23505") => {
                            return (
                                StatusCode::CONFLICT,
                                axum::Json(ErrorBody {
                                    error: "conflict",
                                    field: d.constraint().map(str::to_string),
                                    detail: "a record with that value already exists".into(),
                                }),
                            )
                                .into_response()
                        }
                        Some(code @ ("23503" | "23514")) => {
                            let table = d
                                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                                .and_then(|p| p.table())
                                .unwrap_or_default();
                            let field = d.constraint().map(|c| constraint_field(c, table));
                            // A reference to a record that does not exist
                            // is a 404 naming the field: the request is well
                            // formed (the document cannot know which ids exist).
                            let (status, error, detail) = if code == "23503" {
                                (
                                    StatusCode::NOT_FOUND,
                                    "not_found",
                                    format!(
                                        "{} refers to a record that does not exist",
                                        field.as_deref().unwrap_or("a field")
                                    ),
                                )
                            } else {
                                (
                                    StatusCode::UNPROCESSABLE_ENTITY,
                                    "validation",
                                    "a value breaks a database rule".into(),
                                )
                            };
                            return (
                                status,
                                axum::Json(ErrorBody {
                                    error,
                                    field,
                                    detail,
                                }),
                            )
                                .into_response();
                        }
                        // Postgres text cannot hold NUL: "invalid byte
                        // sequence for encoding UTF8: 0x00". The input is
                        // at fault, not the database.
                        Some("22021" | "22P05") => {
                            return (
                                StatusCode::UNPROCESSABLE_ENTITY,
                                axum::Json(ErrorBody {
                                    error: "validation",
                                    field: None,
                                    detail: "text must not contain NUL (\\u0000) characters".into(),
                                }),
                            )
                                .into_response();
                        }
                        _ => {}
                    }
                }
                tracing::error!(error = %crate::error::chain(&e), "database error in request");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorBody {
                        error: "unavailable",
                        field: None,
                        detail: "the database is unavailable; retry later".into(),
                    },
                )
            }
        };
        (status, axum::Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let detail = r.body_text();
        let field = json_error_field(&detail);
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            r if r.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            _ => ApiError::BadRequest { field, detail },
        }
    }
}

/// The column a constraint guards: `queue_jobs_account_id_fkey` on table
/// `queue_jobs` → `account_id`.
fn constraint_field(constraint: &str, table: &str) -> String {
    let c = constraint
        .strip_suffix("_fkey")
        .or_else(|| constraint.strip_suffix("_check"))
        .unwrap_or(constraint);
    c.strip_prefix(table)
        .and_then(|c| c.strip_prefix('_'))
        .unwrap_or(c)
        .to_string()
}

/// The field a serde/axum JSON error names: a leading `path.to[0].field: `
/// (serde_path_to_error) or an ``unknown field `x` `` / ``missing field `x` ``.
fn json_error_field(detail: &str) -> Option<String> {
    let rest = detail
        .split_once("target type: ")
        .map(|(_, r)| r)
        .unwrap_or(detail);
    // serde_path_to_error puts the path first, including an unknown field itself.
    if let Some(path) = rest
        .split_once(": ")
        .map(|(p, _)| p)
        .filter(|p| is_path(p) && *p != ".")
    {
        return Some(path.to_string());
    }
    ["unknown field `", "missing field `"]
        .iter()
        .find_map(|marker| {
            rest.split_once(marker)
                .and_then(|(_, after)| after.split('`').next())
                .map(str::to_string)
        })
}

fn is_path(p: &str) -> bool {
    !p.is_empty()
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest {
            field: None,
            detail: r.body_text(),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::BadRequest {
            field: Some("id".into()),
            detail: r.body_text(),
        }
    }
}

impl From<crate::queue::QueueError> for ApiError {
    fn from(e: crate::queue::QueueError) -> Self {
        use crate::queue::QueueError;
        match e {
            QueueError::Invalid(v) => ApiError::Validation(v),
            QueueError::NotFound(_) => ApiError::NotFound("job"),
            QueueError::NotCancellable { state, .. } => ApiError::Conflict(format!(
                "the job is {state}; only jobs that have not started can be cancelled"
            )),
            QueueError::Db(e) => ApiError::Database(e),
            QueueError::Payload(e) => ApiError::invalid("payload", crate::error::chain(&e)),
            QueueError::Batch(detail) => ApiError::Conflict(detail),
        }
    }
}

impl From<crate::webhook::WebhookError> for ApiError {
    fn from(e: crate::webhook::WebhookError) -> Self {
        use crate::webhook::WebhookError;
        match e {
            WebhookError::Invalid { field, detail } => ApiError::invalid(field, detail),
            WebhookError::Refused { field, detail } => ApiError::conflict_on(field, detail),
            WebhookError::NotFound(what) => ApiError::NotFound(what),
            e @ (WebhookError::NotReplayable(_) | WebhookError::EventPruned(_)) => {
                ApiError::Conflict(e.to_string())
            }
            WebhookError::Db(e) => ApiError::Database(e),
            WebhookError::Queue(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::json_error_field;

    #[test]
    fn finds_the_field_in_serde_errors() {
        let f = |s| json_error_field(s);
        assert_eq!(
            f("Failed to deserialize the JSON body into the target type: account_name: invalid type: integer `5`, expected a string at line 1 column 17").as_deref(),
            Some("account_name")
        );
        assert_eq!(
            f("Failed to deserialize the JSON body into the target type: unknown field `bogus`, expected one of `a`").as_deref(),
            Some("bogus")
        );
        assert_eq!(
            f("Failed to deserialize the JSON body into the target type: target.chat_ids[1]: bad")
                .as_deref(),
            Some("target.chat_ids[1]")
        );
        assert_eq!(
            f("Failed to parse the request body as JSON: EOF while parsing"),
            None
        );
    }
}
