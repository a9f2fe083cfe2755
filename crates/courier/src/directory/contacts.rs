//! Contacts as marketing uses them: tags, opt-outs and CSV imports (the
//! writes behind `/v1/contacts`), and the one opt-out rule every send path
//! asks ([`opted_out_target`], [`opted_out_chats`]).
//!
//! A contact is opted out when its `opted_out` flag is set; `opted_out_at`
//! and `opt_out_reason` (migration 0023) say when and why. A message is to
//! an opted-out contact when its `target_contact_id` is that contact, or its
//! chat is the contact's (`wa_id`, or `<phone>@c.us`): an API send to a bare
//! number is caught as well as one the scheduler made from a segment.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The reason a message to an opted-out contact fails with.
pub(crate) const OPTED_OUT: &str = "opted out";

/// The opted-out contact a message to `contact`/`chat` would reach: its id
/// and how people know it (the phone number, else the WhatsApp id).
pub(crate) async fn opted_out_target(
    db: impl sqlx::PgExecutor<'_>,
    contact: Option<Uuid>,
    chat: &str,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT oc.id, coalesce('+' || oc.phone_number, oc.wa_id) FROM mkt_wap_contacts oc \
         WHERE oc.opted_out AND (oc.id = $1 OR oc.wa_id = $2 \
               OR ($2 LIKE '%@c.us' AND oc.phone_number = split_part($2, '@', 1))) \
         ORDER BY oc.id LIMIT 1",
    )
    .bind(contact)
    .bind(chat)
    .fetch_optional(db)
    .await
}

/// Of the chats `chats`, those that belong to an opted-out contact, with the
/// contact's id (one query for a whole broadcast).
pub(crate) async fn opted_out_chats(
    db: &PgPool,
    chats: &[String],
) -> Result<Vec<(String, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.chat, oc.id FROM unnest($1::text[]) t(chat) \
         JOIN mkt_wap_contacts oc ON oc.opted_out AND (oc.wa_id = t.chat \
              OR (t.chat LIKE '%@c.us' AND oc.phone_number = split_part(t.chat, '@', 1)))",
    )
    .bind(chats)
    .fetch_all(db)
    .await
}

/// Adds `tags` to the contact (kept sorted, without duplicates) and returns
/// it as the caller's view `R` (columns `returning`). `None`: no such contact.
pub(crate) async fn add_tags<R>(
    db: &PgPool,
    contact: Uuid,
    tags: &[String],
    returning: &str,
) -> Result<Option<R>, sqlx::Error>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE mkt_wap_contacts SET segment_tags = \
            ARRAY(SELECT DISTINCT t FROM unnest(segment_tags || $2::text[]) t ORDER BY t) \
         WHERE id = $1 RETURNING {returning}"
    )))
    .bind(contact)
    .bind(tags)
    .fetch_optional(db)
    .await
}

/// Removes `tag` from the contact (absent: nothing changes).
pub(crate) async fn remove_tag<R>(
    db: &PgPool,
    contact: Uuid,
    tag: &str,
    returning: &str,
) -> Result<Option<R>, sqlx::Error>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE mkt_wap_contacts SET segment_tags = array_remove(segment_tags, $2) \
         WHERE id = $1 RETURNING {returning}"
    )))
    .bind(contact)
    .bind(tag)
    .fetch_optional(db)
    .await
}

/// Records an opt-out (`Some(reason)`) or an opt-in (`None`), in the
/// caller's transaction. A second opt-out keeps the first one's time and
/// reason. Returns the contact as `R`; `None`: no such contact.
pub(crate) async fn set_opt_out<R>(
    conn: &mut PgConnection,
    contact: Uuid,
    reason: Option<&str>,
    returning: &str,
) -> Result<Option<R>, sqlx::Error>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE mkt_wap_contacts SET opted_out = $2, \
            opted_out_at = CASE WHEN NOT $2 THEN NULL WHEN opted_out THEN opted_out_at ELSE now() END, \
            opt_out_reason = CASE WHEN NOT $2 THEN NULL WHEN opted_out THEN opt_out_reason ELSE $3 END \
         WHERE id = $1 RETURNING {returning}"
    )))
    .bind(contact)
    .bind(reason.is_some())
    .bind(reason)
    .fetch_optional(conn)
    .await
}

/// One parsed row of a contacts import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImportRow {
    /// E.164 digits without `+`.
    pub phone_number: String,
    /// Name, if the row gave one.
    pub name: Option<String>,
    /// Tags to add.
    pub tags: Vec<String>,
    /// Whether the row opts the contact out.
    pub opted_out: bool,
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ImportCounts {
    /// New contacts.
    pub created: i64,
    /// Existing contacts updated.
    pub updated: i64,
    /// Contacts the import opted out (that were not before).
    pub opted_out: i64,
}

/// Upserts `rows` by phone number in the caller's transaction: a new contact
/// is created; an existing one gets the name (when the row has one), the
/// tags added to its own, and is opted out when the row says so. An import
/// never opts anyone back in (that takes the contact's own request:
/// `POST /v1/contacts/{id}/opt-in`). Phone numbers must be unique in `rows`.
pub(crate) async fn import(
    conn: &mut PgConnection,
    rows: &[ImportRow],
) -> Result<ImportCounts, sqlx::Error> {
    let phones: Vec<&str> = rows.iter().map(|r| r.phone_number.as_str()).collect();
    let names: Vec<Option<&str>> = rows.iter().map(|r| r.name.as_deref()).collect();
    // Tags travel as one text per row (a 2-D array needs equal lengths).
    let tags: Vec<String> = rows
        .iter()
        .map(|r| serde_json::to_string(&r.tags).unwrap_or_else(|_| "[]".into()))
        .collect();
    let out: Vec<bool> = rows.iter().map(|r| r.opted_out).collect();
    let (created, updated, opted_out): (i64, i64, i64) = sqlx::query_as(
        "WITH input AS ( \
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[]) \
                AS i(phone, name, tags, opted_out) \
         ), before AS ( \
            SELECT c.phone_number, c.opted_out FROM mkt_wap_contacts c \
            JOIN input i ON i.phone = c.phone_number \
         ), up AS ( \
            INSERT INTO mkt_wap_contacts AS c (phone_number, name, segment_tags, opted_out, \
                opted_out_at, opt_out_reason) \
            SELECT i.phone, i.name, \
                   ARRAY(SELECT DISTINCT t FROM jsonb_array_elements_text(i.tags::jsonb) t ORDER BY t), \
                   i.opted_out, CASE WHEN i.opted_out THEN now() END, \
                   CASE WHEN i.opted_out THEN 'imported' END \
            FROM input i \
            ON CONFLICT (phone_number) DO UPDATE SET \
                name = coalesce(EXCLUDED.name, c.name), \
                segment_tags = ARRAY(SELECT DISTINCT t FROM unnest(c.segment_tags || EXCLUDED.segment_tags) t ORDER BY t), \
                opted_out = c.opted_out OR EXCLUDED.opted_out, \
                opted_out_at = CASE WHEN c.opted_out THEN c.opted_out_at ELSE EXCLUDED.opted_out_at END, \
                opt_out_reason = CASE WHEN c.opted_out THEN c.opt_out_reason ELSE EXCLUDED.opt_out_reason END \
            RETURNING c.phone_number, c.opted_out \
         ) \
         SELECT count(*) FILTER (WHERE b.phone_number IS NULL), \
                count(*) FILTER (WHERE b.phone_number IS NOT NULL), \
                count(*) FILTER (WHERE up.opted_out AND NOT coalesce(b.opted_out, false)) \
         FROM up LEFT JOIN before b ON b.phone_number = up.phone_number",
    )
    .bind(&phones)
    .bind(&names)
    .bind(&tags)
    .bind(&out)
    .fetch_one(conn)
    .await?;
    Ok(ImportCounts {
        created,
        updated,
        opted_out,
    })
}

/// The phone numbers and WhatsApp ids of the contacts `ids` (for failing
/// their queued messages after an opt-out).
pub(crate) async fn chats_of(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT chat FROM mkt_wap_contacts c, \
            LATERAL (VALUES (c.wa_id), (c.phone_number || '@c.us')) v(chat) \
         WHERE c.id = ANY($1) AND chat IS NOT NULL",
    )
    .bind(ids)
    .fetch_all(conn)
    .await
}
