//! The directory: groups, contacts and memberships, as accounts' pages show
//! them (the `discover` and `scrape` handlers in `crate::worker::handlers`
//! read the page; this module owns the writes). Discovery upserts `mkt_wap_groups` by WhatsApp
//! group id (name, member count, the discovering account) and never touches
//! admin metadata (region, state, district, segment tags). Scraping upserts
//! one `mkt_wap_contacts` row per person (by E.164 phone, else by `@lid` id),
//! replaces the group's `mkt_wap_group_members` with what the page shows,
//! and recomputes the denormalised `group_memberships` / `scraped_from_groups`.
//! A rerun updates in place; departed members lose the membership.

pub(crate) mod contacts;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::browser::page::Participant;
use crate::jobs::PhoneNumber;

/// Records what an account's chat list showed: upserts each group by its
/// WhatsApp id (name, member count, the discovering account; admin metadata
/// untouched), marks the account a member of each, and ends its membership
/// of groups no longer listed. One transaction. Returns the groups' row ids.
pub(crate) async fn save_discovered(
    db: &PgPool,
    account: Uuid,
    groups: &[DiscoveredGroup],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let mut ids = Vec::with_capacity(groups.len());
    for g in groups {
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO mkt_wap_groups (group_id, name, member_count, account_id) \
             VALUES ($1, $2, coalesce($3, 0), $4) \
             ON CONFLICT (group_id) DO UPDATE SET name = EXCLUDED.name, \
                member_count = coalesce($3, mkt_wap_groups.member_count), is_active = true, \
                account_id = coalesce(mkt_wap_groups.account_id, EXCLUDED.account_id) \
             RETURNING id",
        )
        .bind(&g.wa_id)
        .bind(&g.name)
        .bind(g.member_count)
        .bind(account)
        .fetch_one(&mut *tx)
        .await?;
        ids.push(id);
    }
    sqlx::query(
        "INSERT INTO mkt_wap_account_groups (account_id, group_id, seen_at) \
         SELECT $1, g, now() FROM unnest($2::uuid[]) g \
         ON CONFLICT (account_id, group_id) DO UPDATE SET seen_at = now()",
    )
    .bind(account)
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    // Groups the account is no longer in.
    sqlx::query("DELETE FROM mkt_wap_account_groups WHERE account_id = $1 AND group_id <> ALL($2)")
        .bind(account)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(ids)
}

/// A group as the chat list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiscoveredGroup {
    /// WhatsApp's group id (`…@g.us`).
    pub wa_id: String,
    /// Its name.
    pub name: String,
    /// The member count the group info showed, if it showed one.
    pub member_count: Option<i32>,
}

/// A group's WhatsApp id by its row id.
pub(crate) async fn group_wa_id(db: &PgPool, group: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT group_id FROM mkt_wap_groups WHERE id = $1")
        .bind(group)
        .fetch_optional(db)
        .await
}

/// A group's admin metadata as an operator sets it: `None` leaves a field as
/// it is, an empty text clears it, and tags given replace the group's tags.
/// Discovery never writes these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GroupMetadata {
    /// Region.
    pub region: Option<String>,
    /// State.
    pub state: Option<String>,
    /// District.
    pub district: Option<String>,
    /// Segment tags (what schedules target).
    pub segment_tags: Option<Vec<String>>,
}

/// Sets a group's admin metadata (see [`GroupMetadata`]) and returns the
/// group as the caller's view type `R`, read from the columns `returning`
/// names in the same statement. `None`: no such group.
pub(crate) async fn set_metadata<R>(
    db: &PgPool,
    group: Uuid,
    meta: &GroupMetadata,
    returning: &str,
) -> Result<Option<R>, sqlx::Error>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE mkt_wap_groups SET
            region = CASE WHEN $2::text IS NULL THEN region ELSE NULLIF($2, '') END,
            state = CASE WHEN $3::text IS NULL THEN state ELSE NULLIF($3, '') END,
            district = CASE WHEN $4::text IS NULL THEN district ELSE NULLIF($4, '') END,
            segment_tags = COALESCE($5, segment_tags)
         WHERE id = $1 RETURNING {returning}"
    )))
    .bind(group)
    .bind(&meta.region)
    .bind(&meta.state)
    .bind(&meta.district)
    .bind(&meta.segment_tags)
    .fetch_optional(db)
    .await
}

/// The contacts' first sending account becomes their preferred one, from
/// `rows` (columns `contact_id`, `account_id`; a CTE's name or a
/// parenthesised subquery): only where a contact has none and the account
/// is known, so later messages keep the same sender and a preference once
/// set is never overwritten by a later send.
fn remember_accounts_statement(rows: &str) -> String {
    format!(
        "UPDATE mkt_wap_contacts c SET preferred_account_id = p.account_id \
         FROM {rows} p \
         WHERE c.id = p.contact_id AND p.account_id IS NOT NULL \
           AND c.preferred_account_id IS NULL"
    )
}

/// [`remember_accounts`] as a CTE named `name`, for a statement that writes
/// the messages and the preferences together (`crate::scheduler::segment`).
/// It locks the contacts it changes until the commit.
pub(crate) fn remember_accounts_cte(name: &str, rows: &str) -> String {
    format!("{name} AS ({})", remember_accounts_statement(rows))
}

/// Stores each contact's first sending account (`pairs`: contact, account)
/// as its `preferred_account_id` where it has none. Runs in the caller's
/// transaction (the scheduler's expansion): a contact's preference commits
/// with its message. Returns how many contacts changed.
pub(crate) async fn remember_accounts(
    conn: &mut PgConnection,
    pairs: &[(Uuid, Uuid)],
) -> Result<u64, sqlx::Error> {
    let (contacts, accounts): (Vec<Uuid>, Vec<Uuid>) = pairs.iter().copied().unzip();
    Ok(sqlx::query(sqlx::AssertSqlSafe(remember_accounts_statement(
        "(SELECT * FROM unnest($1::uuid[], $2::uuid[]) AS u(contact_id, account_id))",
    )))
    .bind(&contacts)
    .bind(&accounts)
    .execute(conn)
    .await?
    .rows_affected())
}

/// A participant as a contact: (E.164 digits, wa id).
fn identity(p: &Participant) -> (Option<String>, Option<String>) {
    let phone = p
        .phone
        .as_deref()
        .and_then(|s| PhoneNumber::parse(s).ok())
        .or_else(|| {
            p.id.strip_suffix("@c.us")
                .and_then(|d| PhoneNumber::parse(d).ok())
        })
        .map(|n| n.digits().to_string());
    let wa_id = (p.id.ends_with("@c.us") || p.id.ends_with("@lid"))
        .then(|| p.id.clone())
        .filter(|id| {
            id.split('@')
                .next()
                .is_some_and(|u| !u.is_empty() && u.bytes().all(|b| b.is_ascii_digit()))
        });
    (phone, wa_id)
}

/// Persists a group's members (see the module docs); returns how many.
pub(crate) async fn save_members(
    db: &PgPool,
    group: Uuid,
    people: &[Participant],
) -> Result<usize, sqlx::Error> {
    let mut tx = db.begin().await?;
    let mut ids: Vec<Uuid> = Vec::with_capacity(people.len());
    for p in people {
        let (phone, wa_id) = identity(p);
        if phone.is_none() && wa_id.is_none() {
            tracing::debug!(id = %p.id, "participant without a usable phone or id; skipped");
            continue;
        }
        let existing: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM mkt_wap_contacts WHERE phone_number = $1 OR wa_id = $2 \
             ORDER BY (phone_number = $1) DESC NULLS LAST LIMIT 1",
        )
        .bind(&phone)
        .bind(&wa_id)
        .fetch_optional(&mut *tx)
        .await?;
        let id = match existing {
            Some(id) => {
                sqlx::query(
                    "UPDATE mkt_wap_contacts SET name = coalesce($2, name), \
                        phone_number = coalesce(phone_number, $3), \
                        wa_id = CASE WHEN wa_id IS NULL AND NOT EXISTS \
                            (SELECT 1 FROM mkt_wap_contacts o WHERE o.wa_id = $4) THEN $4 ELSE wa_id END \
                     WHERE id = $1",
                )
                .bind(id)
                .bind(&p.name)
                .bind(&phone)
                .bind(&wa_id)
                .execute(&mut *tx)
                .await?;
                id
            }
            None => {
                sqlx::query_scalar(
                    "INSERT INTO mkt_wap_contacts (phone_number, wa_id, name) VALUES ($1, $2, $3) \
                     RETURNING id",
                )
                .bind(&phone)
                .bind(&wa_id)
                .bind(&p.name)
                .fetch_one(&mut *tx)
                .await?
            }
        };
        if ids.contains(&id) {
            continue;
        }
        ids.push(id);
        sqlx::query(
            "INSERT INTO mkt_wap_group_members (group_id, contact_id, is_admin, is_super_admin) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (group_id, contact_id) DO UPDATE SET is_admin = $3, is_super_admin = $4, \
                last_seen_at = now()",
        )
        .bind(group)
        .bind(id)
        .bind(p.admin)
        .bind(p.super_admin)
        .execute(&mut *tx)
        .await?;
    }
    let departed: Vec<Uuid> = sqlx::query_scalar(
        "DELETE FROM mkt_wap_group_members WHERE group_id = $1 AND contact_id <> ALL($2) \
         RETURNING contact_id",
    )
    .bind(group)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE mkt_wap_contacts c SET \
            group_memberships = coalesce(array(SELECT m.group_id FROM mkt_wap_group_members m \
                WHERE m.contact_id = c.id ORDER BY m.group_id), '{}'), \
            scraped_from_groups = CASE WHEN c.id = ANY($2) AND NOT ($1 = ANY(c.scraped_from_groups)) \
                THEN c.scraped_from_groups || $1 ELSE c.scraped_from_groups END \
         WHERE c.id = ANY($2) OR c.id = ANY($3)",
    )
    .bind(group)
    .bind(&ids)
    .bind(&departed)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE mkt_wap_groups SET member_count = $2, last_scraped_at = now() WHERE id = $1",
    )
    .bind(group)
    .bind(ids.len() as i32)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ids.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, phone: Option<&str>) -> Participant {
        Participant {
            id: id.into(),
            name: None,
            phone: phone.map(Into::into),
            admin: false,
            super_admin: false,
        }
    }

    #[test]
    fn lid_participants_keep_the_phone_shown() {
        let (phone, wa) = identity(&p("123456789012345@lid", Some("+44 7700 900123")));
        assert_eq!(phone.as_deref(), Some("447700900123"));
        assert_eq!(wa.as_deref(), Some("123456789012345@lid"));
        let (phone, wa) = identity(&p("447700900124@c.us", None));
        assert_eq!(phone.as_deref(), Some("447700900124"));
        assert_eq!(wa.as_deref(), Some("447700900124@c.us"));
        let (phone, wa) = identity(&p("98765@lid", None));
        assert_eq!(phone, None);
        assert_eq!(wa.as_deref(), Some("98765@lid"));
    }
}
