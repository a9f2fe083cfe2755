-- Adoption, step 3 of 3 (docs/migration.md): what 0001_domain.sql creates
-- besides columns and constraints, for a database whose mkt_wap_* tables
-- came from the previous system: Courier's indexes and updated_at triggers
-- on the adopted tables (the previous system's own indexes and triggers are
-- kept), and the three tables the previous system did not have. Same names
-- and definitions as 0001, so later migrations find what they expect
-- (tests/adopt.rs compares the result with a fresh database).

CREATE INDEX IF NOT EXISTS mkt_wap_accounts_status_idx ON mkt_wap_accounts (status);
CREATE INDEX IF NOT EXISTS mkt_wap_accounts_deadline_idx ON mkt_wap_accounts (status_deadline)
    WHERE status_deadline IS NOT NULL;
CREATE OR REPLACE TRIGGER mkt_wap_accounts_touch BEFORE UPDATE ON mkt_wap_accounts
    FOR EACH ROW EXECUTE FUNCTION courier_touch_updated_at();

CREATE INDEX IF NOT EXISTS mkt_wap_groups_account_idx ON mkt_wap_groups (account_id);
CREATE INDEX IF NOT EXISTS mkt_wap_groups_region_idx ON mkt_wap_groups (region, state, district);
CREATE INDEX IF NOT EXISTS mkt_wap_groups_tags_idx ON mkt_wap_groups USING gin (segment_tags);
CREATE OR REPLACE TRIGGER mkt_wap_groups_touch BEFORE UPDATE ON mkt_wap_groups
    FOR EACH ROW EXECUTE FUNCTION courier_touch_updated_at();

CREATE TABLE mkt_wap_account_groups (
    account_id  uuid NOT NULL REFERENCES mkt_wap_accounts (id) ON DELETE CASCADE,
    group_id    uuid NOT NULL REFERENCES mkt_wap_groups (id) ON DELETE CASCADE,
    is_admin    boolean NOT NULL DEFAULT false,
    seen_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, group_id)
);
CREATE INDEX mkt_wap_account_groups_group_idx ON mkt_wap_account_groups (group_id);
-- What the previous system knew of who found a group is a membership.
INSERT INTO mkt_wap_account_groups (account_id, group_id)
SELECT account_id, id FROM mkt_wap_groups WHERE account_id IS NOT NULL;

CREATE INDEX IF NOT EXISTS mkt_wap_contacts_tags_idx ON mkt_wap_contacts USING gin (segment_tags);
CREATE INDEX IF NOT EXISTS mkt_wap_contacts_groups_idx ON mkt_wap_contacts USING gin (group_memberships);
CREATE OR REPLACE TRIGGER mkt_wap_contacts_touch BEFORE UPDATE ON mkt_wap_contacts
    FOR EACH ROW EXECUTE FUNCTION courier_touch_updated_at();

CREATE TABLE mkt_wap_group_members (
    group_id        uuid NOT NULL REFERENCES mkt_wap_groups (id) ON DELETE CASCADE,
    contact_id      uuid NOT NULL REFERENCES mkt_wap_contacts (id) ON DELETE CASCADE,
    is_admin        boolean NOT NULL DEFAULT false,
    is_super_admin  boolean NOT NULL DEFAULT false,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, contact_id)
);
CREATE INDEX mkt_wap_group_members_contact_idx ON mkt_wap_group_members (contact_id);
-- The previous system's denormalised membership list, as rows.
INSERT INTO mkt_wap_group_members (group_id, contact_id)
SELECT DISTINCT g.id, c.id
FROM mkt_wap_contacts c CROSS JOIN LATERAL unnest(c.group_memberships) AS gm(id)
JOIN mkt_wap_groups g ON g.id = gm.id;

CREATE INDEX IF NOT EXISTS mkt_wap_messages_status_idx ON mkt_wap_messages (status, created_at);
CREATE INDEX IF NOT EXISTS mkt_wap_messages_account_status_idx ON mkt_wap_messages (account_id, status);
CREATE INDEX IF NOT EXISTS mkt_wap_messages_account_sent_idx ON mkt_wap_messages (account_id, sent_at)
    WHERE sent_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS mkt_wap_messages_campaign_idx ON mkt_wap_messages (campaign_id);
CREATE INDEX IF NOT EXISTS mkt_wap_messages_schedule_idx ON mkt_wap_messages (schedule_id);
CREATE UNIQUE INDEX IF NOT EXISTS mkt_wap_messages_wa_id_idx ON mkt_wap_messages (wa_message_id)
    WHERE wa_message_id IS NOT NULL;
CREATE OR REPLACE TRIGGER mkt_wap_messages_touch BEFORE UPDATE ON mkt_wap_messages
    FOR EACH ROW EXECUTE FUNCTION courier_touch_updated_at();

CREATE TABLE mkt_wap_message_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id   uuid NOT NULL REFERENCES mkt_wap_messages (id),
    status       text NOT NULL
        CHECK (status IN ('pending', 'queued', 'sending', 'sent', 'delivered', 'read', 'failed')),
    ack          smallint CHECK (ack BETWEEN -1 AND 4),
    source       text NOT NULL
        CHECK (source IN ('api', 'scheduler', 'worker', 'ack_watcher', 'catch_up', 'retry',
                          'sweeper', 'reassign', 'migration')),
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb,
    occurred_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mkt_wap_message_events_message_idx ON mkt_wap_message_events (message_id, id);
-- Each adopted message's history starts with its status at the takeover.
INSERT INTO mkt_wap_message_events (message_id, status, ack, source, detail, occurred_at)
SELECT id, status, ack, 'migration', jsonb_build_object('adopted', true), now() FROM mkt_wap_messages;

CREATE OR REPLACE FUNCTION courier_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'mkt_wap_message_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER mkt_wap_message_events_append_only
    BEFORE UPDATE OR DELETE ON mkt_wap_message_events
    FOR EACH ROW EXECUTE FUNCTION courier_events_append_only();
