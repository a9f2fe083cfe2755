//! Extractors whose rejections are [`ApiError`]s, so a malformed body, query or
//! path gets the same `{error, field, detail}` shape as everything else.

use axum::extract::{FromRequest, FromRequestParts};

use super::error::ApiError;

/// `axum::Json` with our error body, and one rule serde lacks: a struct is
/// read from a JSON object only (serde also takes an array of its fields in
/// order, which the document does not allow).
#[derive(Debug)]
pub struct Json<T>(pub T);

/// The only keys whose values may be arrays in a request body (the seed
/// routes' camelCase spelling included).
const ARRAY_KEYS: [&str; 10] = [
    "jobs",
    "tags",
    "recipients",
    "segment_tags",
    "segmentTags",
    "event_types",
    "target_group_ids",
    "target_contact_ids",
    "target_phone_numbers",
    "target_segment_tags",
];

/// Refuses a body whose objects hold arrays where the document has objects:
/// the body itself, and any value but those of [`ARRAY_KEYS`] (whose items
/// are objects or strings, never arrays). A `payload` must be an object; its
/// unknown keys are not looked into.
pub(crate) fn objects_only(v: &serde_json::Value) -> Result<(), ApiError> {
    use serde_json::Value;
    fn walk(v: &Value, path: &str) -> Result<(), ApiError> {
        let Value::Object(map) = v else {
            return Ok(());
        };
        for (k, v) in map {
            let here = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            match v {
                Value::Array(items) if ARRAY_KEYS.contains(&k.as_str()) => {
                    for (i, item) in items.iter().enumerate() {
                        if item.is_array() {
                            return Err(ApiError::BadRequest {
                                field: Some(format!("{here}[{i}]")),
                                detail: format!("{here}[{i}]: invalid type: array"),
                            });
                        }
                        walk(item, &format!("{here}[{i}]"))?;
                    }
                }
                Value::Array(_) => {
                    return Err(ApiError::BadRequest {
                        field: Some(here.clone()),
                        detail: format!("{here}: invalid type: array"),
                    })
                }
                // A job's payload takes unknown keys (ignored): only its own
                // fields are typed, and serde refuses arrays for those.
                _ if k == "payload" => {}
                other => walk(other, &here)?,
            }
        }
        Ok(())
    }
    match v {
        Value::Object(_) => walk(v, ""),
        _ => Err(ApiError::BadRequest {
            field: None,
            detail: "the body must be a JSON object".into(),
        }),
    }
}

fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| {
            m.type_() == "application"
                && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"))
        })
}

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest {
                        field: None,
                        detail: e.body_text(),
                    }
                }
            })?;
        // Syntax errors are reported by the typed parse below, with their place.
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            objects_only(&v)?;
        }
        axum::Json::<T>::from_bytes(&bytes)
            .map(|axum::Json(t)| Json(t))
            .map_err(ApiError::from)
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` with our error body.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct Query<T>(pub(crate) T);

/// `axum::extract::Path` with our error body.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);
