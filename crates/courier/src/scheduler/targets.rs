//! Resolving a schedule's explicit targets (groups, group filters, contact
//! ids, phone numbers), or the audience of its campaign for a row without
//! target columns, into recipients: one per chat.
//!
//! A chat reachable several ways (a contact listed by id and also matching the
//! segment; a phone number that is a known contact) is one recipient, so it
//! gets one message. Opted-out contacts are left out and counted.

use std::collections::HashSet;

use sqlx::PgConnection;
use uuid::Uuid;

use super::schedule::TargetSpec;
use crate::jobs::ChatId;

/// One chat a schedule sends to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recipient {
    /// Where the message goes.
    pub chat_id: ChatId,
    /// The group row, for a group.
    pub group_id: Option<Uuid>,
    /// The contact row, when known.
    pub contact_id: Option<Uuid>,
    /// The contact's preferred sending account.
    pub preferred: Option<Uuid>,
}

impl Recipient {
    /// The seed's `channel_type`.
    pub(crate) fn channel_type(&self) -> &'static str {
        if self.group_id.is_some() {
            "group"
        } else {
            "individual"
        }
    }
}

/// The recipients and what was left out (reported in `status_reason`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Resolved {
    /// One per chat, groups first, in a stable order.
    pub recipients: Vec<Recipient>,
    /// Things worth telling the campaign system (missing ids).
    pub notes: Vec<String>,
    /// Every chat met, the opted-out ones included: a segment expanded on the
    /// server ([`super::segment`]) leaves these out, so no chat gets two
    /// messages and no opt-out is counted twice.
    pub covered: Vec<String>,
    /// Opted-out contacts left out.
    pub opted_out: usize,
    /// Targets with an invalid chat id left out.
    pub invalid: usize,
}

/// Why one long function: groups, filters, contacts and numbers are read in
/// turn into one de-duplicated recipient list (`push` keeps the first of each
/// chat); apart, each part would need that set and the counters passed along.
///
/// Reads the rows behind `spec`, except its segment tags: a segment can be
/// large, and is expanded on the server ([`super::segment`]).
pub(crate) async fn resolve(
    conn: &mut PgConnection,
    spec: &TargetSpec,
) -> Result<Resolved, sqlx::Error> {
    let mut out = Resolved::default();
    let mut seen: HashSet<String> = HashSet::new();
    let mut push = |out: &mut Resolved, r: Recipient| {
        let chat = r.chat_id.to_string();
        if seen.insert(chat.clone()) {
            out.covered.push(chat);
            out.recipients.push(r);
        }
    };
    let mut bad_chat_ids = 0usize;

    // Groups: by id, then by filter.
    if !spec.groups.is_empty() {
        let rows: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT id, group_id FROM mkt_wap_groups WHERE id = ANY($1) ORDER BY group_id",
        )
        .bind(&spec.groups)
        .fetch_all(&mut *conn)
        .await?;
        let missing = spec.groups.len() - rows.len().min(spec.groups.len());
        if missing > 0 {
            out.notes
                .push(format!("{missing} target group id(s) not found"));
        }
        for (id, chat) in rows {
            match ChatId::parse(&chat) {
                Ok(chat_id) => push(
                    &mut out,
                    Recipient {
                        chat_id,
                        group_id: Some(id),
                        contact_id: None,
                        preferred: None,
                    },
                ),
                Err(_) => bad_chat_ids += 1,
            }
        }
    }
    if let Some(f) = &spec.group_filter {
        let rows: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT id, group_id FROM mkt_wap_groups \
             WHERE is_active \
               AND ($1::text IS NULL OR region = $1) \
               AND ($2::text IS NULL OR state = $2) \
               AND ($3::text IS NULL OR district = $3) \
               AND segment_tags @> $4::text[] \
             ORDER BY group_id",
        )
        .bind(&f.region)
        .bind(&f.state)
        .bind(&f.district)
        .bind(&f.segment_tags)
        .fetch_all(&mut *conn)
        .await?;
        for (id, chat) in rows {
            match ChatId::parse(&chat) {
                Ok(chat_id) => push(
                    &mut out,
                    Recipient {
                        chat_id,
                        group_id: Some(id),
                        contact_id: None,
                        preferred: None,
                    },
                ),
                Err(_) => bad_chat_ids += 1,
            }
        }
    }

    // Contacts: by id, and numbers that are known contacts.
    type ContactRow = (Uuid, Option<String>, Option<Uuid>, bool);
    let mut opted_out = 0usize;
    let mut contact_rows: Vec<ContactRow> = Vec::new();
    if !spec.contacts.is_empty() {
        let rows: Vec<ContactRow> = sqlx::query_as(
            "SELECT id, coalesce(wa_id, phone_number || '@c.us'), preferred_account_id, opted_out \
             FROM mkt_wap_contacts WHERE id = ANY($1) ORDER BY id",
        )
        .bind(&spec.contacts)
        .fetch_all(&mut *conn)
        .await?;
        let missing = spec.contacts.len() - rows.len().min(spec.contacts.len());
        if missing > 0 {
            out.notes
                .push(format!("{missing} target contact id(s) not found"));
        }
        contact_rows.extend(rows);
    }
    for (id, chat, preferred, out_opted) in contact_rows {
        if out_opted {
            opted_out += 1;
            out.covered.extend(chat);
            continue;
        }
        match chat.as_deref().map(ChatId::parse) {
            Some(Ok(chat_id)) => push(
                &mut out,
                Recipient {
                    chat_id,
                    group_id: None,
                    contact_id: Some(id),
                    preferred,
                },
            ),
            _ => bad_chat_ids += 1,
        }
    }
    if !spec.phones.is_empty() {
        let digits: Vec<&str> = spec.phones.iter().map(|p| p.digits()).collect();
        let known: Vec<(String, Uuid, Option<Uuid>, bool)> = sqlx::query_as(
            "SELECT phone_number, id, preferred_account_id, opted_out \
             FROM mkt_wap_contacts WHERE phone_number = ANY($1)",
        )
        .bind(&digits)
        .fetch_all(&mut *conn)
        .await?;
        let known: std::collections::HashMap<String, (String, Uuid, Option<Uuid>, bool)> =
            known.into_iter().map(|k| (k.0.clone(), k)).collect();
        for p in &spec.phones {
            let contact = known.get(p.digits());
            if contact.is_some_and(|k| k.3) {
                opted_out += 1;
                out.covered.push(p.chat_id().to_string());
                continue;
            }
            push(
                &mut out,
                Recipient {
                    chat_id: p.chat_id(),
                    group_id: None,
                    contact_id: contact.map(|k| k.1),
                    preferred: contact.and_then(|k| k.2),
                },
            );
        }
    }
    if let Some(campaign) = spec.campaign {
        audience(
            conn,
            campaign,
            &mut out,
            &mut push,
            &mut opted_out,
            &mut bad_chat_ids,
        )
        .await?;
    }
    out.opted_out = opted_out;
    out.invalid = bad_chat_ids;
    Ok(out)
}

/// The audience of `campaign` as the campaign system stored it: the groups
/// and contacts its messages went to (`mkt_wap_messages.campaign_id` with
/// `target_group_id` / `target_contact_id`; the seed keeps no other link from
/// a campaign to its recipients). Each recipient prefers the account that
/// last sent the campaign there (a contact's own `preferred_account_id`
/// first); the assigner takes it when it is still eligible (for a group:
/// still a member). Inactive groups and opted-out contacts are left out and
/// counted.
async fn audience(
    conn: &mut PgConnection,
    campaign: Uuid,
    out: &mut Resolved,
    push: &mut impl FnMut(&mut Resolved, Recipient),
    opted_out: &mut usize,
    bad_chat_ids: &mut usize,
) -> Result<(), sqlx::Error> {
    let groups: Vec<(Uuid, String, bool, Option<Uuid>)> = sqlx::query_as(
        "SELECT g.id, g.group_id, g.is_active, \
                (array_agg(m.account_id ORDER BY m.created_at DESC) \
                    FILTER (WHERE m.account_id IS NOT NULL))[1] \
         FROM mkt_wap_messages m JOIN mkt_wap_groups g ON g.id = m.target_group_id \
         WHERE m.campaign_id = $1 \
         GROUP BY g.id, g.group_id, g.is_active ORDER BY g.group_id",
    )
    .bind(campaign)
    .fetch_all(&mut *conn)
    .await?;
    let inactive = groups.iter().filter(|g| !g.2).count();
    if inactive > 0 {
        out.notes.push(format!(
            "{inactive} inactive group(s) of campaign {campaign} left out"
        ));
    }
    for (id, chat, _, last) in groups.into_iter().filter(|g| g.2) {
        match ChatId::parse(&chat) {
            Ok(chat_id) => push(
                out,
                Recipient {
                    chat_id,
                    group_id: Some(id),
                    contact_id: None,
                    preferred: last,
                },
            ),
            Err(_) => *bad_chat_ids += 1,
        }
    }
    type AudienceContact = (Uuid, Option<String>, Option<Uuid>, bool);
    let contacts: Vec<AudienceContact> = sqlx::query_as(
        "SELECT c.id, coalesce(c.wa_id, c.phone_number || '@c.us'), \
                coalesce(c.preferred_account_id, \
                    (array_agg(m.account_id ORDER BY m.created_at DESC) \
                        FILTER (WHERE m.account_id IS NOT NULL))[1]), \
                c.opted_out \
         FROM mkt_wap_messages m JOIN mkt_wap_contacts c ON c.id = m.target_contact_id \
         WHERE m.campaign_id = $1 \
         GROUP BY c.id ORDER BY c.id",
    )
    .bind(campaign)
    .fetch_all(&mut *conn)
    .await?;
    for (id, chat, preferred, out_opted) in contacts {
        if out_opted {
            *opted_out += 1;
            out.covered.extend(chat);
            continue;
        }
        match chat.as_deref().map(ChatId::parse) {
            Some(Ok(chat_id)) => push(
                out,
                Recipient {
                    chat_id,
                    group_id: None,
                    contact_id: Some(id),
                    preferred,
                },
            ),
            _ => *bad_chat_ids += 1,
        }
    }
    Ok(())
}
