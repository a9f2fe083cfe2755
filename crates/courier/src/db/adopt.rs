//! Taking over the previous system's database (docs/migration.md).
//!
//! The NestJS + whatsapp-web.js system Courier replaces keeps its accounts,
//! groups, contacts and messages in `mkt_wap_*` tables of the same names as
//! Courier's. Migration 0001 creates those tables unconditionally, so on that
//! database it would fail; shipped migrations are never edited. Instead, this
//! step runs before the sqlx migrator: when it finds `mkt_wap_*` tables and
//! no record of 0001, it brings them to the shape 0001 would have created and
//! records 0001 as applied (with its checksum), so the migrator continues
//! with 0002. A fresh database, or one Courier already migrated, is left to
//! the migrator.
//!
//! All of it runs in one transaction, under an advisory lock (two processes
//! starting at once adopt once):
//!
//! 1. Every column Courier needs that the table has is checked for its type;
//!    an incompatible one stops everything with [`AdoptError::Incompatible`]
//!    and nothing has changed. Missing columns are added (with Courier's
//!    default); no column is dropped or retyped and no row is removed.
//! 2. The previous system's CHECK constraints on these tables are dropped
//!    (their definitions are kept in `courier_adoption`) and its NOT NULLs on
//!    columns Courier leaves empty are relaxed; then its rows are mapped to
//!    what Courier's constraints accept (`adopt/map.sql`), each changed value
//!    logged with its original in `courier_adoption_changes`.
//! 3. Courier's NOT NULLs, CHECKs, unique keys and foreign keys are added, each
//!    checked first so that a row that still does not fit is named
//!    ([`AdoptError::Unfit`]); then its indexes, triggers and the tables the
//!    previous system lacked (`adopt/finish.sql`).

use std::time::Instant;

use serde_json::json;
use sqlx::migrate::Migrate;
use sqlx::{PgConnection, PgPool, Row};

use super::MIGRATOR;

/// What the adoption step found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adoption {
    /// No previous system's tables (a fresh database) or a database Courier
    /// already migrated from scratch: nothing to adopt.
    NotNeeded,
    /// Adopted earlier (the record in `courier_adoption`): nothing changed now.
    AlreadyAdopted {
        /// When (RFC 3339).
        at: String,
    },
    /// Adopted now.
    Adopted(AdoptionSummary),
}

/// What an adoption changed, for `courier migrate` to print.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdoptionSummary {
    /// The previous system's tables taken over.
    pub tables: Vec<String>,
    /// Courier's tables created beside them.
    pub created: Vec<String>,
    /// Columns added, as `table.column`.
    pub added_columns: Vec<String>,
    /// Values mapped (rows of `courier_adoption_changes`).
    pub changed_values: i64,
    /// The previous system's CHECK constraints dropped (kept in the record).
    pub dropped_checks: Vec<String>,
}

/// Why the database cannot be adopted. Nothing was changed in any case.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// A column Courier needs exists with a type Courier cannot use.
    #[error(
        "cannot adopt table {table}: column {column} has type {found}, Courier needs {expected}; \
         nothing was changed (change the column's type, or rename it, and run courier migrate again)"
    )]
    Incompatible {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// Its type as Postgres names it.
        found: String,
        /// The type Courier reads and writes.
        expected: String,
    },
    /// A table only Courier creates already exists beside the previous
    /// system's: not a database this step knows how to take over.
    #[error(
        "cannot adopt: table {0} already exists but migration 0001 is not recorded; \
         this is neither the previous system's schema nor Courier's; nothing was changed"
    )]
    Unknown(String),
    /// A row still breaks one of Courier's rules after the documented mapping.
    #[error(
        "cannot adopt table {table}: row {row} has {column} = {value}, which {rule}; \
         nothing was changed (fix or delete the row, then run courier migrate again)"
    )]
    Unfit {
        /// The table.
        table: String,
        /// The row's id.
        row: String,
        /// The column.
        column: String,
        /// The value, quoted, or NULL.
        value: String,
        /// The rule it breaks.
        rule: String,
    },
    /// A statement failed.
    #[error("adopting the existing schema ({step}); nothing was changed")]
    Db {
        /// What was being done.
        step: String,
        /// The database's error.
        source: sqlx::Error,
    },
}

fn db(step: impl Into<String>) -> impl FnOnce(sqlx::Error) -> AdoptError {
    let step = step.into();
    move |source| AdoptError::Db { step, source }
}

/// A column of 0001's shape of a table.
struct Col {
    name: &'static str,
    /// The type to add it with.
    ty: &'static str,
    /// Postgres's `typname` Courier accepts (text also takes an unbounded varchar).
    typname: &'static str,
    default: Option<&'static str>,
    not_null: bool,
}

const fn c(
    name: &'static str,
    ty: &'static str,
    typname: &'static str,
    default: Option<&'static str>,
    not_null: bool,
) -> Col {
    Col {
        name,
        ty,
        typname,
        default,
        not_null,
    }
}

const NOW: Option<&str> = Some("now()");

/// A table 0001 creates and the previous system has, with its columns and rules.
struct Table {
    name: &'static str,
    cols: &'static [Col],
    /// CHECK constraints: (name, expression, the column to show when a row breaks it).
    checks: &'static [(&'static str, &'static str, &'static str)],
    /// Unique constraints on one column: (name, column).
    uniques: &'static [(&'static str, &'static str)],
    /// Foreign keys Courier keeps: (name, column, definition).
    fks: &'static [(&'static str, &'static str, &'static str)],
}

/// 0001's account status list (not today's `AccountStatus::ALL`: later
/// migrations change the list themselves, from 0001's).
const ACCOUNTS: Table = Table {
    name: "mkt_wap_accounts",
    cols: &[
        c("id", "uuid", "uuid", Some("gen_random_uuid()"), true),
        c("phone_number", "text", "text", None, false),
        c("account_name", "text", "text", None, true),
        c("status", "text", "text", Some("'inactive'"), true),
        c("status_reason", "text", "text", None, false),
        c("status_changed_at", "timestamptz", "timestamptz", NOW, true),
        c("status_deadline", "timestamptz", "timestamptz", None, false),
        c("pause_reason", "text", "text", None, false),
        c("paused_until", "timestamptz", "timestamptz", None, false),
        c("health_score", "integer", "int4", Some("100"), true),
        c("daily_usage_count", "integer", "int4", Some("0"), true),
        c("daily_usage_limit", "integer", "int4", Some("200"), true),
        c(
            "rate_limit_config",
            "jsonb",
            "jsonb",
            Some("'{}'::jsonb"),
            true,
        ),
        c("timezone", "text", "text", Some("'UTC'"), true),
        c("session_data", "jsonb", "jsonb", Some("'{}'::jsonb"), true),
        c("session_storage_path", "text", "text", None, false),
        c("qr_token", "text", "text", None, false),
        c("qr_expires_at", "timestamptz", "timestamptz", None, false),
        c("session_snapshot", "bytea", "bytea", None, false),
        c(
            "session_snapshot_at",
            "timestamptz",
            "timestamptz",
            None,
            false,
        ),
        c("last_ready_at", "timestamptz", "timestamptz", None, false),
        c("last_seen_at", "timestamptz", "timestamptz", None, false),
        c("created_at", "timestamptz", "timestamptz", NOW, true),
        c("updated_at", "timestamptz", "timestamptz", NOW, true),
    ],
    checks: &[
        (
            "mkt_wap_accounts_phone_check",
            "phone_number ~ '^[1-9][0-9]{6,14}$'",
            "phone_number",
        ),
        (
            "mkt_wap_accounts_account_name_check",
            "length(account_name) BETWEEN 1 AND 200",
            "account_name",
        ),
        (
            "mkt_wap_accounts_status_check",
            "status IN ('inactive', 'starting', 'qr_pending', 'authenticating', 'warming', \
          'active', 'standby', 'paused', 'logged_out', 'banned', 'failed')",
            "status",
        ),
        (
            "mkt_wap_accounts_health_score_check",
            "health_score BETWEEN 0 AND 100",
            "health_score",
        ),
        (
            "mkt_wap_accounts_daily_usage_count_check",
            "daily_usage_count >= 0",
            "daily_usage_count",
        ),
        (
            "mkt_wap_accounts_daily_usage_limit_check",
            "daily_usage_limit >= 0",
            "daily_usage_limit",
        ),
        (
            "mkt_wap_accounts_rate_limit_config_check",
            "jsonb_typeof(rate_limit_config) = 'object'",
            "rate_limit_config",
        ),
    ],
    uniques: &[("mkt_wap_accounts_phone_number_key", "phone_number")],
    fks: &[],
};

const GROUPS: Table = Table {
    name: "mkt_wap_groups",
    cols: &[
        c("id", "uuid", "uuid", Some("gen_random_uuid()"), true),
        c("group_id", "text", "text", None, true),
        c("name", "text", "text", Some("''"), true),
        c("description", "text", "text", None, false),
        c("member_count", "integer", "int4", Some("0"), true),
        c("region", "text", "text", None, false),
        c("state", "text", "text", None, false),
        c("district", "text", "text", None, false),
        c("segment_tags", "text[]", "_text", Some("'{}'"), true),
        c("account_id", "uuid", "uuid", None, false),
        c("is_active", "boolean", "bool", Some("true"), true),
        c("discovered_at", "timestamptz", "timestamptz", NOW, true),
        c("last_scraped_at", "timestamptz", "timestamptz", None, false),
        c("created_at", "timestamptz", "timestamptz", NOW, true),
        c("updated_at", "timestamptz", "timestamptz", NOW, true),
    ],
    checks: &[
        (
            "mkt_wap_groups_group_id_check",
            "group_id ~ '^[0-9-]+@g\\.us$'",
            "group_id",
        ),
        (
            "mkt_wap_groups_member_count_check",
            "member_count >= 0",
            "member_count",
        ),
    ],
    uniques: &[("mkt_wap_groups_group_id_key", "group_id")],
    fks: &[(
        "mkt_wap_groups_account_id_fkey",
        "account_id",
        "FOREIGN KEY (account_id) REFERENCES mkt_wap_accounts(id) ON DELETE SET NULL",
    )],
};

const CONTACTS: Table = Table {
    name: "mkt_wap_contacts",
    cols: &[
        c("id", "uuid", "uuid", Some("gen_random_uuid()"), true),
        c("phone_number", "text", "text", None, false),
        c("wa_id", "text", "text", None, false),
        c("name", "text", "text", None, false),
        c("push_name", "text", "text", None, false),
        c("persona_contact_id", "uuid", "uuid", None, false),
        c("engagement_score", "integer", "int4", Some("0"), true),
        c("segment_tags", "text[]", "_text", Some("'{}'"), true),
        c("group_memberships", "uuid[]", "_uuid", Some("'{}'"), true),
        c("scraped_from_groups", "uuid[]", "_uuid", Some("'{}'"), true),
        c("preferred_account_id", "uuid", "uuid", None, false),
        c("opted_out", "boolean", "bool", Some("false"), true),
        c("created_at", "timestamptz", "timestamptz", NOW, true),
        c("updated_at", "timestamptz", "timestamptz", NOW, true),
    ],
    checks: &[
        (
            "mkt_wap_contacts_phone_number_check",
            "phone_number ~ '^[1-9][0-9]{6,14}$'",
            "phone_number",
        ),
        (
            "mkt_wap_contacts_wa_id_check",
            "wa_id ~ '^[0-9]+@(c\\.us|lid)$'",
            "wa_id",
        ),
        (
            "mkt_wap_contacts_engagement_score_check",
            "engagement_score BETWEEN 0 AND 100",
            "engagement_score",
        ),
        (
            "mkt_wap_contacts_check",
            "phone_number IS NOT NULL OR wa_id IS NOT NULL",
            "phone_number",
        ),
    ],
    uniques: &[
        ("mkt_wap_contacts_phone_number_key", "phone_number"),
        ("mkt_wap_contacts_wa_id_key", "wa_id"),
    ],
    fks: &[],
};

const MESSAGES: Table = Table {
    name: "mkt_wap_messages",
    cols: &[
        c("id", "uuid", "uuid", Some("gen_random_uuid()"), true),
        c("campaign_id", "uuid", "uuid", None, false),
        c("content_id", "uuid", "uuid", None, false),
        c("schedule_id", "uuid", "uuid", None, false),
        c("account_id", "uuid", "uuid", None, false),
        c("message_type", "text", "text", Some("'text'"), true),
        c("channel_type", "text", "text", None, true),
        c("target_group_id", "uuid", "uuid", None, false),
        c("target_contact_id", "uuid", "uuid", None, false),
        c("target_chat_id", "text", "text", None, true),
        c("message_text", "text", "text", None, false),
        c("media_url", "text", "text", None, false),
        c("media_path", "text", "text", None, false),
        c("media_caption", "text", "text", None, false),
        c("link_url", "text", "text", None, false),
        c("status", "text", "text", Some("'pending'"), true),
        c("wa_message_id", "text", "text", None, false),
        c("ack", "smallint", "int2", None, false),
        c("error_message", "text", "text", None, false),
        c("retry_count", "integer", "int4", Some("0"), true),
        c("max_retries", "integer", "int4", Some("3"), true),
        c("job_id", "uuid", "uuid", None, false),
        c("attempt_started_at", "timestamptz", "timestamptz", None, false),
        c("waiting_reason", "text", "text", None, false),
        c("idempotency_key", "text", "text", None, false),
        c("queued_at", "timestamptz", "timestamptz", None, false),
        c("sending_at", "timestamptz", "timestamptz", None, false),
        c("sent_at", "timestamptz", "timestamptz", None, false),
        c("delivered_at", "timestamptz", "timestamptz", None, false),
        c("read_at", "timestamptz", "timestamptz", None, false),
        c("failed_at", "timestamptz", "timestamptz", None, false),
        c("undelivered_flagged_at", "timestamptz", "timestamptz", None, false),
        c("created_at", "timestamptz", "timestamptz", NOW, true),
        c("updated_at", "timestamptz", "timestamptz", NOW, true),
    ],
    checks: &[
        ("mkt_wap_messages_message_type_check",
         "message_type IN ('text', 'image', 'video', 'document', 'link')", "message_type"),
        ("mkt_wap_messages_channel_type_check",
         "channel_type IN ('group', 'individual', 'broadcast')", "channel_type"),
        ("mkt_wap_messages_target_chat_id_check",
         "target_chat_id ~ '^[0-9-]+@(g\\.us|c\\.us|lid)$'", "target_chat_id"),
        ("mkt_wap_messages_message_text_check", "length(message_text) <= 65536", "message_text"),
        ("mkt_wap_messages_status_check",
         "status IN ('pending', 'queued', 'sending', 'sent', 'delivered', 'read', 'failed')", "status"),
        ("mkt_wap_messages_ack_check", "ack BETWEEN -1 AND 4", "ack"),
        ("mkt_wap_messages_retry_count_check", "retry_count >= 0", "retry_count"),
        ("mkt_wap_messages_max_retries_check", "max_retries >= 0", "max_retries"),
        ("mkt_wap_messages_check",
         "message_text IS NOT NULL OR media_url IS NOT NULL OR media_path IS NOT NULL OR link_url IS NOT NULL",
         "message_text"),
    ],
    uniques: &[("mkt_wap_messages_idempotency_key_key", "idempotency_key")],
    fks: &[(
        "mkt_wap_messages_account_id_fkey",
        "account_id",
        "FOREIGN KEY (account_id) REFERENCES mkt_wap_accounts(id)",
    )],
};

/// The previous system's tables, in the order they are adopted (referenced first).
const TABLES: [&Table; 4] = [&ACCOUNTS, &GROUPS, &CONTACTS, &MESSAGES];

/// Tables only Courier's 0001 creates.
const COURIER_ONLY: [&str; 3] = [
    "mkt_wap_account_groups",
    "mkt_wap_group_members",
    "mkt_wap_message_events",
];

/// The part of 0001 that handles the campaign system's tables: written for a
/// database that may have them already, so it is run as shipped.
fn contract_section() -> &'static str {
    let text = MIGRATOR
        .iter()
        .find(|m| m.version == 1)
        .map(|m| m.sql.as_str())
        .expect("migration 0001 is embedded");
    let marker = "-- Courier's own tables.";
    let end = text
        .find(marker)
        .expect("0001 marks where Courier's own tables start");
    // Back to the start of the dashed line above the marker.
    let end = text[..end].trim_end().rfind('\n').unwrap_or(end);
    &text[..end]
}

const MAP_SQL: &str = include_str!("adopt/map.sql");
const FINISH_SQL: &str = include_str!("adopt/finish.sql");

/// A column as the database has it.
struct Existing {
    name: String,
    typname: String,
    shown: String,
    not_null: bool,
    has_default: bool,
}

async fn columns(conn: &mut PgConnection, table: &str) -> Result<Vec<Existing>, AdoptError> {
    let rows = sqlx::query(
        "SELECT a.attname::text, t.typname::text, format_type(a.atttypid, a.atttypmod), \
                a.attnotnull, a.atthasdef \
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
         WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(db(format!("reading the columns of {table}")))?;
    Ok(rows
        .iter()
        .map(|r| Existing {
            name: r.get(0),
            typname: r.get(1),
            shown: r.get(2),
            not_null: r.get(3),
            has_default: r.get(4),
        })
        .collect())
}

fn compatible(col: &Col, found: &Existing) -> bool {
    found.typname == col.typname
        || (col.typname == "text"
            && found.typname == "varchar"
            && found.shown == "character varying")
}

async fn exists(conn: &mut PgConnection, table: &str) -> Result<bool, AdoptError> {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(&mut *conn)
        .await
        .map_err(db("looking for tables"))
}

async fn exec(conn: &mut PgConnection, sql: String) -> Result<(), AdoptError> {
    sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        .execute(&mut *conn)
        .await
        .map_err(db(sql))?;
    Ok(())
}

/// Adopts the previous system's tables when the database has them and
/// Courier's migration 0001 is not recorded; see the module docs.
pub async fn adopt(pool: &PgPool) -> Result<Adoption, AdoptError> {
    let mut tx = pool.begin().await.map_err(db("starting the adoption"))?;
    // Two processes starting on the same database adopt once.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('courier: adopt the existing schema'))")
        .execute(&mut *tx)
        .await
        .map_err(db("taking the adoption lock"))?;
    if exists(&mut tx, "courier_adoption").await? {
        let at: Option<String> = sqlx::query_scalar(
            "SELECT to_char(adopted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
             FROM courier_adoption ORDER BY adopted_at LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("reading the adoption record"))?;
        tx.rollback().await.map_err(db("finishing"))?;
        return Ok(Adoption::AlreadyAdopted {
            at: at.unwrap_or_default(),
        });
    }
    let recorded = exists(&mut tx, "_sqlx_migrations").await?
        && sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE version = 1)",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(db("reading _sqlx_migrations"))?;
    let mut present = Vec::new();
    for t in TABLES {
        if exists(&mut tx, t.name).await? {
            present.push(t.name.to_string());
        }
    }
    if recorded || present.is_empty() {
        tx.rollback().await.map_err(db("finishing"))?;
        return Ok(Adoption::NotNeeded);
    }
    // A previous system still running holds locks on its tables: fail with
    // the statement named rather than wait forever.
    exec(&mut tx, "SET LOCAL lock_timeout = '30s'".into()).await?;
    for t in COURIER_ONLY {
        if exists(&mut tx, t).await? {
            return Err(AdoptError::Unknown(t.to_string()));
        }
    }
    let started = Instant::now();
    let mut summary = AdoptionSummary {
        tables: present.clone(),
        ..AdoptionSummary::default()
    };

    // 1. Types first, for every table, before anything changes.
    let mut existing = Vec::new();
    for t in TABLES {
        let cols = columns(&mut tx, t.name).await?;
        for col in t.cols {
            if let Some(found) = cols.iter().find(|e| e.name == col.name) {
                if !compatible(col, found) {
                    return Err(AdoptError::Incompatible {
                        table: t.name.into(),
                        column: col.name.into(),
                        found: found.shown.clone(),
                        expected: col.ty.into(),
                    });
                }
            }
        }
        existing.push(cols);
    }

    exec(
        &mut tx,
        "CREATE TABLE courier_adoption (\
            adopted_at timestamptz NOT NULL DEFAULT now(), \
            courier_version text NOT NULL, \
            record jsonb NOT NULL)"
            .into(),
    )
    .await?;
    exec(
        &mut tx,
        "CREATE TABLE courier_adoption_changes (\
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
            table_name text NOT NULL, row_id uuid NOT NULL, column_name text NOT NULL, \
            old_value text, new_value text, reason text NOT NULL)"
            .into(),
    )
    .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(contract_section()))
        .execute(&mut *tx)
        .await
        .map_err(db("the campaign-system tables (0001's first part)"))?;

    // 2. Columns, the previous system's constraints, and the mapping.
    let mut dropped = Vec::new();
    let mut relaxed = Vec::new();
    for (t, cols) in TABLES.iter().zip(&existing) {
        if cols.is_empty() {
            exec(
                &mut tx,
                format!(
                    "CREATE TABLE {} (id uuid PRIMARY KEY DEFAULT gen_random_uuid())",
                    t.name
                ),
            )
            .await?;
            summary.created.push(t.name.to_string());
        } else {
            exec(
                &mut tx,
                format!("ALTER TABLE {} DISABLE TRIGGER USER", t.name),
            )
            .await?;
            let checks: Vec<(String, String)> = sqlx::query_as(
                "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
                 WHERE conrelid = to_regclass($1) AND contype = 'c' ORDER BY conname",
            )
            .bind(t.name)
            .fetch_all(&mut *tx)
            .await
            .map_err(db(format!("reading the CHECK constraints of {}", t.name)))?;
            for (name, def) in checks {
                exec(
                    &mut tx,
                    format!("ALTER TABLE {} DROP CONSTRAINT \"{name}\"", t.name),
                )
                .await?;
                summary.dropped_checks.push(format!("{}.{name}", t.name));
                dropped.push(json!({"table": t.name, "name": name, "definition": def}));
            }
            // NOT NULL where Courier writes nothing: on the columns Courier
            // leaves empty, and on the previous system's own columns that
            // have no default (Courier's inserts do not know them).
            for e in cols.iter().filter(|e| e.not_null) {
                let courier = t.cols.iter().find(|c| c.name == e.name);
                let relax = match courier {
                    Some(col) => !col.not_null,
                    None => !e.has_default,
                };
                if relax {
                    exec(
                        &mut tx,
                        format!(
                            "ALTER TABLE {} ALTER COLUMN \"{}\" DROP NOT NULL",
                            t.name, e.name
                        ),
                    )
                    .await?;
                    relaxed.push(json!({"table": t.name, "column": e.name}));
                }
            }
        }
        let mut added = Vec::new();
        for col in t.cols {
            if cols.iter().any(|e| e.name == col.name) || (cols.is_empty() && col.name == "id") {
                continue;
            }
            let default = col
                .default
                .map(|d| format!(" DEFAULT {d}"))
                .unwrap_or_default();
            added.push(format!("ADD COLUMN {} {}{default}", col.name, col.ty));
            summary
                .added_columns
                .push(format!("{}.{}", t.name, col.name));
        }
        if !added.is_empty() {
            exec(
                &mut tx,
                format!("ALTER TABLE {} {}", t.name, added.join(", ")),
            )
            .await?;
        }
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(MAP_SQL))
        .execute(&mut *tx)
        .await
        .map_err(db("mapping the previous system's values (adopt/map.sql)"))?;

    // 3. Courier's rules, each checked before it is added.
    for (t, cols) in TABLES.iter().zip(&existing) {
        for col in t.cols {
            let found = cols.iter().find(|e| e.name == col.name);
            if let (Some(d), Some(e)) = (col.default, found) {
                if !e.has_default {
                    exec(
                        &mut tx,
                        format!(
                            "ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {d}",
                            t.name, col.name
                        ),
                    )
                    .await?;
                }
            }
            if col.not_null && !found.is_some_and(|e| e.not_null) {
                let row: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT id::text FROM {} WHERE {} IS NULL LIMIT 1",
                    t.name, col.name
                )))
                .fetch_optional(&mut *tx)
                .await
                .map_err(db(format!("checking {}.{} for NULLs", t.name, col.name)))?;
                if let Some(row) = row {
                    return Err(AdoptError::Unfit {
                        table: t.name.into(),
                        row,
                        column: col.name.into(),
                        value: "NULL".into(),
                        rule: "is not allowed: Courier needs a value there".into(),
                    });
                }
                exec(
                    &mut tx,
                    format!(
                        "ALTER TABLE {} ALTER COLUMN {} SET NOT NULL",
                        t.name, col.name
                    ),
                )
                .await?;
            }
        }
        for (name, expr, shown) in t.checks {
            let bad: Option<(String, Option<String>)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT id::text, {shown}::text FROM {} WHERE NOT ({expr}) LIMIT 1",
                    t.name
                )))
                .fetch_optional(&mut *tx)
                .await
                .map_err(db(format!("checking {} against {name}", t.name)))?;
            if let Some((row, value)) = bad {
                return Err(AdoptError::Unfit {
                    table: t.name.into(),
                    row,
                    column: (*shown).into(),
                    value: value.map_or("NULL".into(), |v| format!("'{v}'")),
                    rule: format!("breaks {name} ({expr})"),
                });
            }
            exec(
                &mut tx,
                format!(
                    "ALTER TABLE {} ADD CONSTRAINT {name} CHECK ({expr})",
                    t.name
                ),
            )
            .await?;
        }
        let has_pk: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'p')",
        )
        .bind(t.name)
        .fetch_one(&mut *tx)
        .await
        .map_err(db("reading primary keys"))?;
        if !has_pk {
            unique_or_refuse(&mut tx, t.name, "id").await?;
            exec(
                &mut tx,
                format!(
                    "ALTER TABLE {0} ADD CONSTRAINT {0}_pkey PRIMARY KEY (id)",
                    t.name
                ),
            )
            .await?;
        }
        for (name, column) in t.uniques {
            let has: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_index i \
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                  WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnatts = 1 \
                    AND i.indpred IS NULL AND a.attname = $2)",
            )
            .bind(t.name)
            .bind(column)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("reading unique indexes"))?;
            if !has {
                unique_or_refuse(&mut tx, t.name, column).await?;
                exec(
                    &mut tx,
                    format!(
                        "ALTER TABLE {} ADD CONSTRAINT {name} UNIQUE ({column})",
                        t.name
                    ),
                )
                .await?;
            }
        }
        for (name, column, def) in t.fks {
            let current: Vec<(String, String)> = sqlx::query_as(
                "SELECT c.conname::text, pg_get_constraintdef(c.oid) FROM pg_constraint c \
                   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] \
                  WHERE c.conrelid = to_regclass($1) AND c.contype = 'f' \
                    AND cardinality(c.conkey) = 1 AND a.attname = $2",
            )
            .bind(t.name)
            .bind(column)
            .fetch_all(&mut *tx)
            .await
            .map_err(db("reading foreign keys"))?;
            if current.len() == 1 && current[0].0 == *name && current[0].1 == *def {
                continue;
            }
            for (old, old_def) in &current {
                exec(
                    &mut tx,
                    format!("ALTER TABLE {} DROP CONSTRAINT \"{old}\"", t.name),
                )
                .await?;
                dropped.push(json!({"table": t.name, "name": old, "definition": old_def}));
            }
            exec(
                &mut tx,
                format!("ALTER TABLE {} ADD CONSTRAINT {name} {def}", t.name),
            )
            .await?;
        }
        if !summary.created.iter().any(|c| c == t.name) {
            exec(
                &mut tx,
                format!("ALTER TABLE {} ENABLE TRIGGER USER", t.name),
            )
            .await?;
        }
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(FINISH_SQL))
        .execute(&mut *tx)
        .await
        .map_err(db(
            "Courier's indexes, triggers and tables (adopt/finish.sql)",
        ))?;
    summary
        .created
        .extend(COURIER_ONLY.iter().map(|t| t.to_string()));

    summary.changed_values = sqlx::query_scalar("SELECT count(*) FROM courier_adoption_changes")
        .fetch_one(&mut *tx)
        .await
        .map_err(db("counting the mapped values"))?;
    let record = json!({
        "adopted_tables": summary.tables,
        "created_tables": summary.created,
        "added_columns": summary.added_columns,
        "dropped_constraints": dropped,
        "relaxed_not_null": relaxed,
    });
    sqlx::query("INSERT INTO courier_adoption (courier_version, record) VALUES ($1, $2)")
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(record)
        .execute(&mut *tx)
        .await
        .map_err(db("writing the adoption record"))?;

    // 0001 is now applied: recorded as sqlx records it, with its checksum,
    // so the migrator goes on from 0002.
    let first = MIGRATOR
        .iter()
        .find(|m| m.version == 1)
        .expect("migration 0001 is embedded");
    Migrate::ensure_migrations_table(&mut *tx, "_sqlx_migrations")
        .await
        .map_err(|e| AdoptError::Db {
            step: "creating _sqlx_migrations".into(),
            source: sqlx::Error::Migrate(Box::new(e)),
        })?;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, $2, TRUE, $3, $4)",
    )
    .bind(first.version)
    .bind(&*first.description)
    .bind(&*first.checksum)
    .bind(started.elapsed().as_nanos() as i64)
    .execute(&mut *tx)
    .await
    .map_err(db("recording migration 0001"))?;
    tx.commit().await.map_err(db("committing the adoption"))?;
    Ok(Adoption::Adopted(summary))
}

/// Refuses when `column` holds a value twice (a unique key could not be added).
async fn unique_or_refuse(
    conn: &mut PgConnection,
    table: &str,
    column: &str,
) -> Result<(), AdoptError> {
    let dup: Option<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT min(id::text), {column}::text FROM {table} WHERE {column} IS NOT NULL \
         GROUP BY {column} HAVING count(*) > 1 LIMIT 1"
    )))
    .fetch_optional(&mut *conn)
    .await
    .map_err(db(format!("checking {table}.{column} for duplicates")))?;
    match dup {
        Some((row, value)) => Err(AdoptError::Unfit {
            table: table.into(),
            row,
            column: column.into(),
            value: format!("'{value}'"),
            rule: "another row holds too (Courier needs it unique)".into(),
        }),
        None => Ok(()),
    }
}
