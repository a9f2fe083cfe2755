//! `/v1/contacts`: the people Courier knows (scraped from groups or
//! imported), as marketing uses them: list and filter (tag, group, opt-out,
//! search), tag and untag, record an opt-out (and an opt back in), and
//! import a CSV file. The writes are `directory::contacts`'; an opt-out also
//! fails the contact's messages that have not started
//! (`message::assignment::fail_opted_out`) and withdraws their jobs, in the
//! same transaction. The send handler refuses what is left.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use courier_jobs::PhoneNumber;

use super::contract::{self, field};
use super::error::{ApiError, ErrorBody};
use super::extract::{Json, Path, Query};
use super::AppState;
use crate::directory::contacts::{self, ImportRow};

/// A contact as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub(crate) struct Contact {
    /// Courier's id.
    pub id: Uuid,
    /// E.164 digits without `+` (none for an `@lid` member whose number is hidden).
    pub phone_number: Option<String>,
    /// WhatsApp's id (`…@c.us` or `…@lid`), when seen in a group.
    pub wa_id: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// The name the person set in WhatsApp.
    pub push_name: Option<String>,
    /// Segment tags (what schedules target).
    pub segment_tags: Vec<String>,
    /// The groups (Courier ids) the contact was seen in.
    pub group_memberships: Vec<Uuid>,
    /// 0–100.
    pub engagement_score: i32,
    /// Whether the contact opted out: nothing is sent to it.
    pub opted_out: bool,
    /// When it opted out.
    pub opted_out_at: Option<DateTime<Utc>>,
    /// Why (as recorded).
    pub opt_out_reason: Option<String>,
    /// The account that sends to it.
    pub preferred_account_id: Option<Uuid>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

const CONTACT_COLUMNS: &str = "id, phone_number, wa_id, name, push_name, segment_tags, \
    group_memberships, engagement_score, opted_out, opted_out_at, opt_out_reason, \
    preferred_account_id, created_at, updated_at";

/// Filters for `GET /v1/contacts`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContactFilter {
    /// Contacts carrying this segment tag.
    #[param(pattern = r"^[^\u0000]*$", max_length = 64)]
    pub tag: Option<String>,
    /// Contacts that are members of this group (Courier's group id).
    pub group_id: Option<Uuid>,
    /// `true`: only opted-out contacts; `false`: only those who did not opt out.
    pub opted_out: Option<bool>,
    /// Case-insensitive substring of the name or push name, or digits of the number.
    #[param(pattern = r"^[^\u0000]*$", max_length = 200)]
    pub search: Option<String>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Return contacts with ids after this one (cursor: the last id of the previous page).
    pub after: Option<Uuid>,
}

/// List contacts, filtered, a page at a time (ordered by id).
#[utoipa::path(get, path = "/v1/contacts", tag = "contacts", operation_id = "listContacts", params(ContactFilter),
    responses((status = 200, body = [Contact], description = "A page of contacts"),
        (status = 422, body = ErrorBody, description = "A parameter breaks the document")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(f): Query<ContactFilter>,
) -> Result<Json<Vec<Contact>>, ApiError> {
    let limit = f.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 500"));
    }
    if let Some(t) = &f.tag {
        contract::check_len("tag", contract::NO_NUL, 0, 64, t)?;
    }
    if let Some(s) = &f.search {
        contract::check_len("search", contract::NO_NUL, 0, 200, s)?;
    }
    let like = f.search.as_deref().map(|s| {
        s.replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    });
    let digits = f
        .search
        .as_deref()
        .map(|s| s.chars().filter(char::is_ascii_digit).collect::<String>())
        .filter(|d| !d.is_empty());
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CONTACT_COLUMNS} FROM mkt_wap_contacts c
         WHERE ($1::text IS NULL OR c.segment_tags @> ARRAY[$1::text])
           AND ($2::uuid IS NULL OR EXISTS (
                SELECT 1 FROM mkt_wap_group_members gm WHERE gm.group_id = $2 AND gm.contact_id = c.id))
           AND ($3::bool IS NULL OR c.opted_out = $3)
           AND ($4::text IS NULL OR c.name ILIKE '%' || $4 || '%' OR c.push_name ILIKE '%' || $4 || '%'
                OR ($5::text IS NOT NULL AND c.phone_number LIKE '%' || $5 || '%'))
           AND ($6::uuid IS NULL OR c.id > $6)
         ORDER BY c.id LIMIT $7"
    )))
    .bind(f.tag)
    .bind(f.group_id)
    .bind(f.opted_out)
    .bind(like)
    .bind(digits)
    .bind(f.after)
    .bind(limit)
    .fetch_all(&state.pool)
    .await?;
    Ok(Json(rows))
}

/// Get one contact.
#[utoipa::path(get, path = "/v1/contacts/{id}", tag = "contacts", operation_id = "getContact",
    params(("id" = Uuid, Path, description = "contact id")),
    responses((status = 200, body = Contact, description = "The contact"),
        (status = 404, body = ErrorBody, description = "No such contact")))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Contact>, ApiError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CONTACT_COLUMNS} FROM mkt_wap_contacts WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&state.pool)
    .await?
    .map(Json)
    .ok_or(ApiError::NotFound("contact"))
}

fn tags_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ArrayItems, Schema, SchemaType, Type};
    Schema::Array(
        ArrayBuilder::new()
            .schema_type(SchemaType::Type(Type::Array))
            .items(ArrayItems::RefOrSchema(Box::new(field::tag().into())))
            .min_items(Some(1))
            .max_items(Some(50))
            .build(),
    )
}

/// Body of `POST /v1/contacts/{id}/tags`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TagContact {
    /// Tags to add: 1 to 50, each 1 to 64 characters, not blank (stored trimmed).
    #[schema(schema_with = tags_schema)]
    pub tags: Vec<String>,
}

fn check_tag(field: &str, t: &str) -> Result<String, ApiError> {
    contract::check_len(field, contract::TEXT, 1, 64, t)?;
    Ok(t.trim().to_string())
}

/// Add tags to a contact (tags it already has are kept once).
#[utoipa::path(post, path = "/v1/contacts/{id}/tags", tag = "contacts", operation_id = "tagContact",
    params(("id" = Uuid, Path, description = "contact id")), request_body = TagContact,
    responses((status = 200, body = Contact, description = "The contact with its tags"),
        (status = 404, body = ErrorBody, description = "No such contact"),
        (status = 422, body = ErrorBody, description = "A tag breaks the document")))]
pub(crate) async fn tag(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(body): Json<TagContact>,
) -> Result<Json<Contact>, ApiError> {
    if body.tags.is_empty() || body.tags.len() > 50 {
        return Err(ApiError::invalid("tags", "1 to 50 tags"));
    }
    let tags = body
        .tags
        .iter()
        .enumerate()
        .map(|(i, t)| check_tag(&format!("tags[{i}]"), t))
        .collect::<Result<Vec<_>, _>>()?;
    contacts::add_tags(&state.pool, id, &tags, CONTACT_COLUMNS)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("contact"))
}

/// Remove a tag from a contact (a tag it does not have: nothing changes).
#[utoipa::path(delete, path = "/v1/contacts/{id}/tags/{tag}", tag = "contacts", operation_id = "untagContact",
    params(("id" = Uuid, Path, description = "contact id"),
        ("tag" = String, Path, description = "the tag, 1 to 64 characters, not blank", pattern = r"^\s*\S[\s\S]*$", min_length = 1, max_length = 64)),
    responses((status = 200, body = Contact, description = "The contact with its tags"),
        (status = 404, body = ErrorBody, description = "No such contact"),
        (status = 422, body = ErrorBody, description = "The tag breaks the document")))]
pub(crate) async fn untag(
    State(state): State<AppState>,
    Path((id, tag)): Path<(Uuid, String)>,
) -> Result<Json<Contact>, ApiError> {
    let tag = check_tag("tag", &tag)?;
    contacts::remove_tag(&state.pool, id, &tag, CONTACT_COLUMNS)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("contact"))
}

/// Body of `POST /v1/contacts/{id}/opt-out`.
#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct OptOut {
    /// Why (`replied STOP`, `asked by phone`, …), at most 500 characters.
    #[schema(schema_with = field::opt_text::<500>)]
    pub reason: Option<String>,
}

/// What an opt-out did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OptOutResult {
    /// The contact, now opted out.
    pub contact: Contact,
    /// Its messages that had not started and now failed with `opted out`.
    pub messages_failed: i64,
}

/// Record an opt-out: nothing is sent to the contact any more. Its messages
/// that have not started fail at once with `opted out` (their jobs are
/// withdrawn: no budget, no health); every send path refuses new ones.
#[utoipa::path(post, path = "/v1/contacts/{id}/opt-out", tag = "contacts", operation_id = "optOutContact",
    params(("id" = Uuid, Path, description = "contact id")), request_body = OptOut,
    responses((status = 200, body = OptOutResult, description = "Opted out (a second call keeps the first time and reason)"),
        (status = 404, body = ErrorBody, description = "No such contact"),
        (status = 422, body = ErrorBody, description = "The reason breaks the document")))]
pub(crate) async fn opt_out(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Json(body): Json<OptOut>,
) -> Result<Json<OptOutResult>, ApiError> {
    if let Some(r) = &body.reason {
        contract::check_len("reason", contract::TEXT, 1, 500, r)?;
    }
    let reason = body
        .reason
        .as_deref()
        .map(str::trim)
        .unwrap_or("recorded through the API");
    let mut tx = state.pool.begin().await?;
    let contact: Contact = contacts::set_opt_out(&mut tx, id, Some(reason), CONTACT_COLUMNS)
        .await?
        .ok_or(ApiError::NotFound("contact"))?;
    let chats = contacts::chats_of(&mut tx, &[id]).await?;
    let jobs = crate::message::assignment::fail_opted_out(&mut tx, &[id], &chats).await?;
    let failed = jobs.len() as i64;
    crate::queue::fragments::withdraw(&mut tx, &jobs, contacts::OPTED_OUT, false).await?;
    tx.commit().await?;
    Ok(Json(OptOutResult {
        contact,
        messages_failed: failed,
    }))
}

/// Record an opt back in (the contact asked to receive messages again).
/// Messages that failed because of the opt-out stay failed; a retry sends them.
#[utoipa::path(post, path = "/v1/contacts/{id}/opt-in", tag = "contacts", operation_id = "optInContact",
    params(("id" = Uuid, Path, description = "contact id")),
    responses((status = 200, body = Contact, description = "Opted back in"),
        (status = 404, body = ErrorBody, description = "No such contact")))]
pub(crate) async fn opt_in(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<Contact>, ApiError> {
    let mut tx = state.pool.begin().await?;
    let contact: Contact = contacts::set_opt_out(&mut tx, id, None, CONTACT_COLUMNS)
        .await?
        .ok_or(ApiError::NotFound("contact"))?;
    tx.commit().await?;
    Ok(Json(contact))
}

/// Largest CSV import accepted.
pub(crate) const MAX_IMPORT_BYTES: usize = 5 * 1024 * 1024;
/// Most rows in one CSV import.
pub(crate) const MAX_IMPORT_ROWS: usize = 50_000;
/// Most row errors reported (the count says how many there were).
const MAX_REPORTED: usize = 100;

/// One refused row of an import.
#[derive(Debug, Serialize, ToSchema, PartialEq, Eq)]
pub(crate) struct RowError {
    /// The line in the file (the header is line 1).
    pub line: u64,
    /// The column at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// What is wrong.
    pub problem: String,
}

/// The answer to an import that was refused: nothing was written.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ImportRejected {
    /// `validation`.
    pub error: &'static str,
    /// What is wrong, for a person.
    pub detail: String,
    /// How many rows were refused.
    pub rejected: u64,
    /// The refused rows (the first 100).
    pub rows: Vec<RowError>,
}

/// What an import did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ImportResult {
    /// Data rows read.
    pub rows: u64,
    /// New contacts.
    pub created: i64,
    /// Existing contacts updated (name, tags added, opt-out).
    pub updated: i64,
    /// Contacts the import opted out that had not been.
    pub opted_out: i64,
}

fn csv_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| m.type_() == "text" && (m.subtype() == "csv" || m.subtype() == "plain"))
}

fn error(status: StatusCode, error: &'static str, detail: String) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            error,
            field: None,
            detail,
        }),
    )
        .into_response()
}

/// Parses an import file (pure): a header row naming `phone_number`
/// (required; also `phone`), and optionally `name`, `tags` (separated by
/// `;` or `|`) and `opted_out` (`true`/`false`, `yes`/`no`, `1`/`0`, empty).
/// Every row is checked; any refused row refuses the whole file.
pub(crate) fn parse_csv(text: &str) -> Result<Vec<ImportRow>, Vec<RowError>> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header_error = |problem: String| {
        vec![RowError {
            line: 1,
            column: None,
            problem,
        }]
    };
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => return Err(header_error(format!("the header row does not parse: {e}"))),
    };
    let mut phone_col = None;
    let mut cols: [Option<usize>; 3] = [None; 3];
    for (i, h) in headers.iter().enumerate() {
        match h.to_ascii_lowercase().as_str() {
            "phone_number" | "phone" | "phonenumber" => phone_col = Some(i),
            "name" => cols[0] = Some(i),
            "tags" | "segment_tags" => cols[1] = Some(i),
            "opted_out" | "optedout" | "opt_out" => cols[2] = Some(i),
            "" => {}
            other => {
                return Err(header_error(format!(
                    "unknown column `{other}`; expected phone_number, name, tags, opted_out"
                )))
            }
        }
    }
    let Some(phone_col) = phone_col else {
        return Err(header_error(
            "no `phone_number` column in the header row".into(),
        ));
    };
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                errors.push(RowError {
                    line,
                    column: None,
                    problem: format!("does not parse: {e}"),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, csv::Position::line);
        if record.iter().all(str::is_empty) {
            continue;
        }
        let mut bad = |column: &str, problem: String| {
            errors.push(RowError {
                line,
                column: Some(column.into()),
                problem,
            })
        };
        let raw = record.get(phone_col).unwrap_or("");
        let phone = match PhoneNumber::parse(raw) {
            Ok(p) => Some(p.digits().to_string()),
            Err(e) => {
                bad("phone_number", format!("`{raw}`: {}", e.detail));
                None
            }
        };
        let name = cols[0]
            .and_then(|i| record.get(i))
            .filter(|s| !s.is_empty());
        if let Some(n) = name {
            if n.chars().count() > 200 || !contract::matches(contract::NO_NUL, n) {
                bad("name", "must be at most 200 characters, without NUL".into());
            }
        }
        let mut tags = Vec::new();
        for t in cols[1]
            .and_then(|i| record.get(i))
            .unwrap_or("")
            .split([';', '|'])
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            if t.chars().count() > 64 || !contract::matches(contract::TEXT, t) {
                bad("tags", format!("tag `{t}` must be 1 to 64 characters"));
            } else {
                tags.push(t.to_string());
            }
        }
        if tags.len() > 50 {
            bad("tags", "at most 50 tags".into());
        }
        let opted = cols[2].and_then(|i| record.get(i)).unwrap_or("");
        let opted_out = match opted.to_ascii_lowercase().as_str() {
            "" | "false" | "no" | "0" | "n" => false,
            "true" | "yes" | "1" | "y" => true,
            other => {
                bad(
                    "opted_out",
                    format!("`{other}` is not true/false, yes/no or 1/0"),
                );
                false
            }
        };
        if let Some(phone) = phone {
            if let Some(first) = seen.insert(phone.clone(), line) {
                bad(
                    "phone_number",
                    format!("+{phone} is already on line {first}"),
                );
            }
            rows.push(ImportRow {
                phone_number: phone,
                name: name.map(str::to_string),
                tags,
                opted_out,
            });
        }
    }
    if rows.is_empty() && errors.is_empty() {
        errors.push(RowError {
            line: 2,
            column: None,
            problem: "the file has no data rows".into(),
        });
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

/// Import contacts from a CSV file (`Content-Type: text/csv`, up to 5 MiB
/// and 50,000 rows): all or nothing. Every row is checked first; if any is
/// refused, nothing is written and the answer lists each refused row with
/// its line, column and problem. Otherwise every row is upserted by phone
/// number in one transaction: new contacts are created, existing ones get
/// the name, the tags added to theirs, and an opt-out when the row says so.
/// An import never opts anyone back in.
#[utoipa::path(post, path = "/v1/contacts/import", tag = "contacts", operation_id = "importContacts",
    request_body(content((String = "text/csv"), (String = "text/plain")),
        description = "CSV with a header row: phone_number (required), name, tags (`;`-separated), opted_out"),
    responses((status = 200, body = ImportResult, description = "Imported"),
        (status = 413, body = ErrorBody, description = "The file is over 5 MiB or 50,000 rows"),
        (status = 415, body = ErrorBody, description = "The body is not sent as `Content-Type: text/csv` (or `text/plain`)"),
        (status = 422, body = ImportRejected, description = "Rows were refused (each with its line, column and problem); nothing was written")))]
pub(crate) async fn import(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    if !csv_content_type(&headers) {
        return Ok(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: text/csv".into(),
        ));
    }
    if body.len() > MAX_IMPORT_BYTES {
        return Ok(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the file is {} bytes; an import takes at most {MAX_IMPORT_BYTES}",
                body.len()
            ),
        ));
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return Err(ApiError::BadRequest {
            field: None,
            detail: "the file is not UTF-8 text".into(),
        });
    };
    let rows = match parse_csv(text) {
        Ok(rows) => rows,
        Err(mut errors) => {
            let rejected = errors.len() as u64;
            errors.truncate(MAX_REPORTED);
            let first = &errors[0];
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(ImportRejected {
                    error: "validation",
                    detail: format!(
                        "{rejected} row(s) refused, nothing was imported; first: line {}{}: {}",
                        first.line,
                        first
                            .column
                            .as_deref()
                            .map(|c| format!(", {c}"))
                            .unwrap_or_default(),
                        first.problem
                    ),
                    rejected,
                    rows: errors,
                }),
            )
                .into_response());
        }
    };
    if rows.len() > MAX_IMPORT_ROWS {
        return Ok(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the file has {} rows; an import takes at most {MAX_IMPORT_ROWS}",
                rows.len()
            ),
        ));
    }
    let mut tx = state.pool.begin().await?;
    let counts = contacts::import(&mut tx, &rows).await?;
    tx.commit().await?;
    Ok(Json(ImportResult {
        rows: rows.len() as u64,
        created: counts.created,
        updated: counts.updated,
        opted_out: counts.opted_out,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_file_parses_every_row() {
        let rows = parse_csv(
            "phone_number,name,tags,opted_out\n+91 98000 00001,Asha,broiler;layer,\n919800000002,,feed,yes\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].phone_number, "919800000001");
        assert_eq!(rows[0].tags, ["broiler", "layer"]);
        assert!(!rows[0].opted_out);
        assert!(rows[1].opted_out);
        assert_eq!(rows[1].name, None);
    }

    #[test]
    fn every_bad_row_is_reported_with_its_line_and_column() {
        let errs = parse_csv(
            "phone,name,opted_out\n12,Bad,\n919800000001,Ok,maybe\n919800000001,Twice,\n",
        )
        .unwrap_err();
        let lines: Vec<(u64, Option<&str>)> =
            errs.iter().map(|e| (e.line, e.column.as_deref())).collect();
        assert_eq!(
            lines,
            [
                (2, Some("phone_number")),
                (3, Some("opted_out")),
                (4, Some("phone_number"))
            ]
        );
        assert!(errs[2].problem.contains("line 3"), "{:?}", errs[2]);
    }

    #[test]
    fn a_header_without_a_phone_column_or_with_an_unknown_one_is_refused() {
        assert!(parse_csv("name\nA\n").unwrap_err()[0]
            .problem
            .contains("phone_number"));
        assert!(
            parse_csv("phone,colour\n919800000001,red\n").unwrap_err()[0]
                .problem
                .contains("colour")
        );
        assert!(parse_csv("phone\n").unwrap_err()[0]
            .problem
            .contains("no data rows"));
    }
}
