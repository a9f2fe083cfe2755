//! The API contract: what `/openapi.json` promises, kept equal to what the
//! server does.
//!
//! - [`CommonResponses`] declares the statuses every authenticated operation
//!   shares (401 and 403, 400 where it takes input, 413/415 where it takes a
//!   JSON body, 503 for a database outage), so a new route gets them too.
//! - The patterns below are declared in the document *and* checked by the
//!   handlers ([`matches`]), so the two cannot drift apart.
//! - [`refine`] adds what utoipa's derive cannot say (the IANA time-zone
//!   enum, cross-field rules of a send) to the JSON document.
//!
//! A request the document calls valid is accepted, or refused with 404 (a
//! named record does not exist) or 409 (the state forbids it: a banned
//! account, a limit that conflicts with another, a time already past). 400
//! and 422 mean the request breaks the document.

use std::sync::OnceLock;

use serde_json::{json, Value};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{
    path::Operation, ContentBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder,
};

/// Text stored in Postgres: anything but NUL, which Postgres cannot store.
pub const NO_NUL: &str = r"^[^\u0000]*$";

/// Text that must say something: no NUL, and at least one non-space
/// character (`str::trim` is not empty).
pub const TEXT: &str = concat!(
    r"^[^\u0000]*[^\u0000",
    r"\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000",
    r"][^\u0000]*$"
);

/// An idempotency key: printable, no control characters (length 1–200 is
/// declared with `minLength`/`maxLength`).
pub const KEY: &str = r"^[^\u0000-\u001f\u007f-\u009f]*$";

/// The `Idempotency-Key` header: visible ASCII, inner spaces allowed (HTTP
/// strips spaces around a header value).
pub const HEADER_KEY: &str = r"^[!-~]([ -~]*[!-~])?$";

/// A phone number as [`courier_jobs::PhoneNumber::parse`] takes it: 7–15
/// digits, the first not 0, an optional leading `+`, spaces, dashes, dots
/// and parentheses between, spaces around.
pub const PHONE: &str = concat!(
    r"^[\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*",
    r"\+?[ .()-]*[1-9]([ .()-]*[0-9]){6,14}[ .()-]*",
    r"[\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
);

/// A chat id: `<digits>@c.us` (a phone number's digits), `<digits>[-<digits>]@g.us`
/// or `<digits>@lid`. Handlers check it before [`courier_jobs::ChatId::parse`],
/// whose rules are a superset, so the document is exact.
pub const CHAT_ID: &str =
    r"^([1-9][0-9]{6,14}@c\.us|[0-9]{5,30}(-[0-9]{1,9})?@g\.us|[0-9]{1,20}@lid)$";

/// A recipient: a phone number or a chat id.
pub const RECIPIENT: &str = concat!(
    r"^([1-9][0-9]{6,14}@c\.us|[0-9]{5,30}(-[0-9]{1,9})?@g\.us|[0-9]{1,20}@lid|",
    r"[\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*",
    r"\+?[ .()-]*[1-9]([ .()-]*[0-9]){6,14}[ .()-]*",
    r"[\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*)$"
);

/// A group chat id (`…@g.us`).
pub const GROUP_CHAT_ID: &str = r"^[0-9]{5,30}(-[0-9]{1,9})?@g\.us$";

/// A recipient that is a person: a phone number or a `@c.us`/`@lid` chat id.
pub const PERSON: &str = concat!(
    r"^([1-9][0-9]{6,14}@c\.us|[0-9]{1,20}@lid|",
    r"[\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*",
    r"\+?[ .()-]*[1-9]([ .()-]*[0-9]){6,14}[ .()-]*",
    r"[\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*)$"
);

/// An http(s) URL with a DNS name (labels of letters and digits, single
/// dashes inside, the last starting with a letter) or an IPv4 address, an
/// optional port (up to 65535) and a path of visible ASCII. Every URL it
/// matches, the `url` crate parses (the handlers check both).
pub const HTTP_URL: &str = concat!(
    r"^[hH][tT][tT][pP][sS]?://(",
    r"([A-Za-z0-9]+(-[A-Za-z0-9]+)*\.)*[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+)*",
    r"|((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])",
    r")(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?",
    r"([/?#][!-~]*)?$"
);

/// `GET /v1/events?types=`: event type names separated by commas, spaces
/// around them allowed, empty items ignored (the handler checks this pattern,
/// then parses each name).
pub const EVENT_TYPES: &str = concat!(
    r"^ *(((message\.(queued|sent|delivered|read|failed)|account\.(status_changed|qr_changed|paused|resumed)|schedule\.expanded)) *)?",
    r"(, *(((message\.(queued|sent|delivered|read|failed)|account\.(status_changed|qr_changed|paused|resumed)|schedule\.expanded)) *)?)*$"
);

/// A media path under the media directory: relative (the first component is
/// not empty), no `..` component, no NUL. That it is not blank is the
/// [`TEXT`] pattern, declared beside it.
pub const MEDIA_PATH: &str = concat!(
    r"^([^/.\u0000][^/\u0000]*|\.[^/.\u0000][^/\u0000]*|\.\.[^/\u0000]+|\.)",
    r"(/([^/.\u0000][^/\u0000]*|\.[^/.\u0000][^/\u0000]*|\.\.[^/\u0000]+|\.|))*$"
);

/// `HH:MM`, 00:00 to 23:59.
pub const HH_MM: &str = r"^([01][0-9]|2[0-3]):[0-5][0-9]$";

/// Whether `s` matches `pattern` (one of the constants above), with the
/// document's (ECMA/Python) reading of `\uXXXX` escapes.
pub fn matches(pattern: &'static str, s: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static CACHE: OnceLock<Mutex<HashMap<&'static str, regex::Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    let re = cache
        .entry(pattern)
        .or_insert_with(|| regex::Regex::new(pattern).expect("the contract's patterns compile"));
    re.is_match(s)
}

/// What a pattern means, for an error message.
fn describe(pattern: &str) -> &'static str {
    match pattern {
        NO_NUL => "must not contain NUL (\\u0000) characters",
        TEXT => "must not be blank nor contain NUL (\\u0000) characters",
        KEY => "must be printable characters (no control characters)",
        HEADER_KEY => "must be visible ASCII characters (spaces only inside)",
        PHONE => "must be a phone number: 7 to 15 digits with the country code, the first not 0",
        CHAT_ID => {
            "must be a chat id: <phone digits>@c.us, <digits>[-<digits>]@g.us or <digits>@lid"
        }
        RECIPIENT => "must be a phone number or a chat id (…@c.us, …@g.us, …@lid)",
        PERSON => "must be a phone number or a person's chat id (…@c.us, …@lid)",
        GROUP_CHAT_ID => "must be a group chat id (<digits>[-<digits>]@g.us)",
        HTTP_URL => "must be an http(s) URL with a host name or IPv4 address",
        MEDIA_PATH => "must be a path relative to the media directory, without `..`",
        HH_MM => "must be a time HH:MM between 00:00 and 23:59",
        EVENT_TYPES => {
            "must be event types separated by commas (message.queued, …, schedule.expanded)"
        }
        _ => "does not match its pattern in /openapi.json",
    }
}

/// Checks `value` against `pattern`: a 422 on `field` when it does not match.
pub fn check(
    field: &str,
    pattern: &'static str,
    value: &str,
) -> Result<(), super::error::ApiError> {
    if matches(pattern, value) {
        Ok(())
    } else {
        Err(super::error::ApiError::invalid(field, describe(pattern)))
    }
}

/// Checks an optional `value` against `pattern` and its length in characters.
pub fn check_len(
    field: &str,
    pattern: &'static str,
    min: usize,
    max: usize,
    value: &str,
) -> Result<(), super::error::ApiError> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(super::error::ApiError::invalid(
            field,
            format!("must be {min} to {max} characters; it has {n}"),
        ));
    }
    check(field, pattern, value)
}

fn string(pattern: &'static str, min: Option<usize>, max: Option<usize>, nullable: bool) -> Schema {
    let ty = if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(ty)
            .pattern(Some(pattern))
            .min_length(min)
            .max_length(max)
            .build(),
    )
}

/// Field schemas (`#[schema(schema_with = …)]`): the pattern the handler checks.
pub mod field {
    use super::*;

    /// Non-blank text of 1 to `MAX` characters.
    pub fn text<const MAX: usize>() -> Schema {
        string(TEXT, Some(1), Some(MAX), false)
    }
    /// Optional non-blank text of 1 to `MAX` characters.
    pub fn opt_text<const MAX: usize>() -> Schema {
        string(TEXT, Some(1), Some(MAX), true)
    }
    /// Optional text of at most `MAX` characters, no NUL (may be empty).
    pub fn opt_plain<const MAX: usize>() -> Schema {
        string(NO_NUL, None, Some(MAX), true)
    }
    /// A tag: non-blank, 1 to 64 characters.
    pub fn tag() -> Schema {
        string(TEXT, Some(1), Some(64), false)
    }
    /// Optional segment tags: at most 50 [`tag`]s.
    pub fn opt_tags() -> Schema {
        use utoipa::openapi::schema::{ArrayBuilder, ArrayItems};
        Schema::Array(
            ArrayBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
                .items(ArrayItems::RefOrSchema(Box::new(tag().into())))
                .max_items(Some(50))
                .build(),
        )
    }
    /// An optional phone number.
    pub fn opt_phone() -> Schema {
        string(PHONE, None, None, true)
    }
    /// An optional idempotency key.
    pub fn opt_key() -> Schema {
        string(KEY, Some(1), Some(200), true)
    }
    /// An optional chat id.
    pub fn opt_chat_id() -> Schema {
        string(CHAT_ID, None, None, true)
    }
    /// An http(s) URL.
    pub fn url() -> Schema {
        string(HTTP_URL, None, None, false)
    }
    /// An optional http(s) URL.
    pub fn opt_url() -> Schema {
        string(HTTP_URL, None, None, true)
    }
    /// An optional media path.
    pub fn opt_media_path() -> Schema {
        string(MEDIA_PATH, None, None, true)
    }
    /// A recipient: a phone number or a chat id.
    pub fn recipient() -> Schema {
        Schema::Object(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .pattern(Some(RECIPIENT))
                .build(),
        )
    }
    /// Optional recipients: at most 10,000 [`recipient`]s.
    pub fn opt_recipients() -> Schema {
        use utoipa::openapi::schema::{ArrayBuilder, ArrayItems};
        Schema::Array(
            ArrayBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
                .items(ArrayItems::RefOrSchema(Box::new(recipient().into())))
                .max_items(Some(courier_jobs::send::MAX_BROADCAST))
                .build(),
        )
    }
    /// `HH:MM`.
    pub fn hh_mm() -> Schema {
        string(HH_MM, None, None, false)
    }
}

/// JSON Schema counts `5.0` as an integer; serde does not. Rewrites integral
/// floats in `v` as integers, so what the document calls an integer parses.
pub fn integral_floats(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64() {
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    *v = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats),
        Value::Object(map) => map.values_mut().for_each(integral_floats),
        _ => {}
    }
}

/// `deserialize_with` for an optional integer that also takes an integral
/// float (`5.0`), as JSON Schema's `integer` does.
pub fn opt_int<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    use serde::de::Error;
    use serde::Deserialize;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let i = match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => Some(i),
        (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
        _ => None,
    };
    i.and_then(|i| T::try_from(i).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("invalid value: `{n}` is not an integer in range")))
}

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

/// Declares the statuses every operation of the `/v1` API shares.
#[derive(Debug, Clone, Copy)]
pub struct CommonResponses;

impl CommonResponses {
    fn apply(op: &mut Operation, global_security: bool) {
        let authenticated = match &op.security {
            Some(s) => !s.is_empty(),
            None => global_security,
        };
        let takes_input =
            op.parameters.as_ref().is_some_and(|p| !p.is_empty()) || op.request_body.is_some();
        let json_body = op
            .request_body
            .as_ref()
            .is_some_and(|b| b.content.contains_key("application/json"));
        let mut add = |status: &str, description: &str| {
            op.responses
                .responses
                .entry(status.to_string())
                .or_insert_with(|| error_response(description));
        };
        if takes_input {
            add(
                "400",
                "The path, query, headers or body do not parse (wrong type, unknown field, \
                 malformed JSON); `field` names the field when the parser does",
            );
        }
        if authenticated {
            add("401", "No bearer token, or not a valid one");
            add(
                "403",
                "The token is valid but its scopes do not cover this route",
            );
        }
        if json_body {
            add("413", "The body is larger than 16 MiB");
            add(
                "415",
                "The body is not sent as `Content-Type: application/json`",
            );
        }
        add("503", "The database is unavailable; retry later");
    }
}

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        let global_security = openapi.security.as_ref().is_some_and(|s| !s.is_empty());
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ]
            .into_iter()
            .flatten()
            {
                Self::apply(op, global_security);
            }
        }
    }
}

/// Every IANA zone name `timezone` accepts.
fn time_zones() -> Vec<&'static str> {
    chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()).collect()
}

/// Adds to the JSON document what utoipa's derive cannot express.
pub fn refine(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    for body in ["CreateAccount", "CreateSchedule"] {
        if let Some(tz) = schemas.pointer_mut(&format!("/{body}/properties/timezone")) {
            let description = tz["description"].clone();
            *tz = json!({
                "description": description,
                "type": ["string", "null"],
                "enum": time_zones().into_iter().map(Value::from).chain([Value::Null]).collect::<Vec<_>>(),
            });
        }
    }
    if let Some(send) = schemas.get_mut("SendMessage") {
        send["allOf"] = send_rules();
        // Not blank, besides the path rules.
        send["properties"]["media_path"]["allOf"] = json!([{"pattern": TEXT}]);
    }
}

/// The cross-field rules of `POST /v1/messages`: what the content needs by
/// `message_type`, and where it goes by `channel_type`.
fn send_rules() -> Value {
    let media = ["image", "video", "document"];
    // A rule's field must be there and not null (null reads as absent).
    let string = json!({"type": "string"});
    let absent = json!({"type": "null"});
    json!([
        {"anyOf": [
            {"properties": {"message_type": {"enum": ["text", null]}, "message_text": string},
             "required": ["message_text"]},
            {"properties": {"message_type": {"enum": media}, "media_url": string, "media_path": absent},
             "required": ["message_type", "media_url"]},
            {"properties": {"message_type": {"enum": media}, "media_path": string, "media_url": absent},
             "required": ["message_type", "media_path"]},
            {"properties": {"message_type": {"const": "link"}, "link_url": string},
             "required": ["message_type", "link_url"]}
        ]},
        {"anyOf": [
            {"properties": {"channel_type": {"const": "group"},
                            "target_group_id": {"type": "string", "format": "uuid"}},
             "required": ["target_group_id"]},
            {"properties": {"channel_type": {"const": "group"},
                            "target_chat_id": {"type": "string", "pattern": GROUP_CHAT_ID}},
             "required": ["target_chat_id"]},
            {"properties": {"channel_type": {"const": "individual"}, "target_phone": string},
             "required": ["target_phone"]},
            {"properties": {"channel_type": {"const": "individual"},
                            "target_phone": absent,
                            "target_chat_id": {"type": "string", "not": {"pattern": GROUP_CHAT_ID}}},
             "required": ["target_chat_id"]},
            {"properties": {"channel_type": {"const": "broadcast"},
                            "recipients": {"type": "array", "minItems": 1,
                                           "items": {"pattern": PERSON}}},
             "required": ["recipients"]}
        ]}
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_types_pattern_takes_every_event_type_and_nothing_else() {
        let all: Vec<&str> = crate::events::EventType::ALL
            .iter()
            .map(|t| t.as_str())
            .collect();
        for t in &all {
            assert!(matches(EVENT_TYPES, t), "{t}");
        }
        assert!(matches(EVENT_TYPES, ""));
        assert!(matches(EVENT_TYPES, &all.join(",")));
        assert!(matches(EVENT_TYPES, " message.sent , ,schedule.expanded"));
        for bad in [
            "message",
            "message.sent;x",
            "\tmessage.sent",
            "MESSAGE.SENT",
            "message.sentx",
        ] {
            assert!(!matches(EVENT_TYPES, bad), "{bad}");
        }
    }

    #[test]
    fn operation_ids_are_set_and_unique() {
        let doc = crate::api::openapi_json();
        let mut seen = std::collections::BTreeMap::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let Some(id) = op.get("operationId").and_then(Value::as_str) else {
                    panic!("{method} {path} has no operationId");
                };
                if let Some(other) = seen.insert(id.to_string(), format!("{method} {path}")) {
                    panic!("operationId `{id}` is used by {other} and by {method} {path}");
                }
                assert!(
                    id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                        && id.chars().all(|c| c.is_ascii_alphanumeric()),
                    "{method} {path}: operationId `{id}` is not lowerCamelCase"
                );
            }
        }
        assert!(seen.len() >= 20, "{seen:?}");
    }

    #[test]
    fn every_authenticated_operation_declares_401_and_403() {
        let doc = crate::api::openapi_json();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for status in ["401", "403", "503"] {
                    assert!(
                        op["responses"][status].is_object(),
                        "{method} {path} does not declare {status}"
                    );
                }
                if op.get("requestBody").is_some() {
                    for status in ["400", "413", "415"] {
                        assert!(
                            op["responses"][status].is_object(),
                            "{method} {path} does not declare {status}"
                        );
                    }
                }
            }
        }
    }

    /// Strings drawn from a pattern (anchors dropped: the generator adds none).
    fn drawn(pattern: &str) -> proptest::string::RegexGeneratorStrategy<String> {
        let inner = pattern.trim_start_matches('^').trim_end_matches('$');
        proptest::string::string_regex(inner).expect("the pattern generates")
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Whatever the document calls a phone number, a chat id, a recipient,
        /// a URL or a media path, the domain parsers take: the patterns are
        /// never wider than the server.
        #[test]
        fn every_string_a_pattern_admits_parses(
            phone in drawn(PHONE),
            chat in drawn(CHAT_ID),
            recipient in drawn(RECIPIENT),
            url in drawn(HTTP_URL),
            path in drawn(MEDIA_PATH),
            hhmm in drawn(HH_MM),
        ) {
            use courier_jobs::{send::MediaSource, ChatId, PhoneNumber};
            proptest::prop_assert!(matches(PHONE, &phone) && PhoneNumber::parse(&phone).is_ok(), "{:?}", phone);
            proptest::prop_assert!(matches(CHAT_ID, &chat) && ChatId::parse(&chat).is_ok(), "{:?}", chat);
            let as_recipient = if recipient.contains('@') {
                ChatId::parse(&recipient).map(|_| ())
            } else {
                PhoneNumber::parse(&recipient).map(|_| ())
            };
            proptest::prop_assert!(as_recipient.is_ok(), "{:?}", recipient);
            proptest::prop_assert!(MediaSource::parse_url(&url).is_ok(), "{:?}", url);
            // Not blank is the TEXT pattern, declared beside MEDIA_PATH.
            if matches(TEXT, &path) {
                proptest::prop_assert!(MediaSource::parse_path(&path).is_ok(), "{:?}", path);
            }
            proptest::prop_assert!(chrono::NaiveTime::parse_from_str(&hhmm, "%H:%M").is_ok(), "{:?}", hhmm);
        }

        /// The other way round for phone numbers, whose pattern is meant to
        /// be the parser's rule exactly: any number the parser takes, the
        /// pattern takes. (Elsewhere the handlers check the pattern first, so
        /// a parser that is wider changes nothing.)
        #[test]
        fn every_phone_number_the_parser_takes_matches_the_pattern(s in "[ +0-9().-]{0,24}") {
            if courier_jobs::PhoneNumber::parse(&s).is_ok() {
                proptest::prop_assert!(matches(PHONE, &s), "{:?}", s);
            }
        }
    }

    #[test]
    fn patterns_read_as_the_parsers_do() {
        use courier_jobs::{ChatId, PhoneNumber};
        for s in [
            "+44 7700 900123",
            "447700900123",
            "(44) 7700-900123",
            " 1234567 ",
            "+1.234.567",
        ] {
            assert!(matches(PHONE, s), "{s}");
            assert!(PhoneNumber::parse(s).is_ok(), "{s}");
        }
        for s in [
            "",
            "0447700900123",
            "12ab",
            "123456",
            "1234567890123456",
            "+ 1234567x",
        ] {
            assert!(!matches(PHONE, s), "{s}");
            assert!(PhoneNumber::parse(s).is_err(), "{s}");
        }
        for s in ["447700900123@c.us", "120363-1@g.us", "9@lid"] {
            assert!(matches(CHAT_ID, s) && ChatId::parse(s).is_ok(), "{s}");
        }
        assert!(matches(TEXT, " x ") && !matches(TEXT, " \u{3000}\n") && !matches(TEXT, "a\0"));
        assert!(matches(TEXT, "\u{1c}"), "U+001C is not White_Space in Rust");
        assert!(matches(NO_NUL, "") && !matches(NO_NUL, "\0"));
        for s in [
            "https://cdn-1.example.com/a.png",
            "http://127.0.0.1:8080/x?y#z",
            "HTTPS://Example.COM",
        ] {
            assert!(matches(HTTP_URL, s), "{s}");
        }
        for s in [
            "ftp://x/y",
            "http://a..b/",
            "http://1.2.3.999/",
            "http://a.1/",
        ] {
            assert!(!matches(HTTP_URL, s), "{s}");
        }
        for s in ["a/b.png", "./a", "a//b", ".x", "..x/y", "a/.../b", "x/."] {
            assert!(matches(MEDIA_PATH, s), "{s}");
            assert!(
                courier_jobs::send::MediaSource::parse_path(s).is_ok(),
                "{s}"
            );
        }
        for s in ["/etc/passwd", "../a", "a/../b", "a/..", "..", "a\0b", ""] {
            assert!(!matches(MEDIA_PATH, s), "{s:?}");
            assert!(
                courier_jobs::send::MediaSource::parse_path(s).is_err(),
                "{s:?}"
            );
        }
        assert!(matches(HH_MM, "23:59") && !matches(HH_MM, "24:00") && !matches(HH_MM, "9:00"));
        assert!(
            matches(HEADER_KEY, "a b") && !matches(HEADER_KEY, " a") && !matches(HEADER_KEY, "")
        );
    }
}
