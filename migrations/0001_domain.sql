-- Courier's domain schema: the accounts it drives, the groups and contacts it
-- learns about, the messages it sends and their append-only event log, plus
-- the campaign-system contract tables it reads (created only when missing).
--
-- Every status column has a CHECK constraint; every transient state has the
-- column that holds its deadline. See docs/schema.md for the contract.

CREATE OR REPLACE FUNCTION courier_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

-- ---------------------------------------------------------------------------
-- Campaign-system contract tables (owned by the campaign system; created here
-- for standalone mode, and the columns Courier reads added when missing).
-- ---------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS mkt_campaigns (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL,
    status      text NOT NULL DEFAULT 'active'
        CONSTRAINT mkt_campaigns_status_check
        CHECK (status IN ('draft', 'active', 'paused', 'completed', 'archived')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS mkt_con_content (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    campaign_id  uuid REFERENCES mkt_campaigns (id),
    title        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- The columns Courier reads from content, added if an existing table lacks them.
ALTER TABLE mkt_con_content ADD COLUMN IF NOT EXISTS body        text;
ALTER TABLE mkt_con_content ADD COLUMN IF NOT EXISTS message_type text NOT NULL DEFAULT 'text';
ALTER TABLE mkt_con_content ADD COLUMN IF NOT EXISTS media_url   text;
ALTER TABLE mkt_con_content ADD COLUMN IF NOT EXISTS link_url    text;

CREATE TABLE IF NOT EXISTS mkt_con_schedule (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    campaign_id   uuid REFERENCES mkt_campaigns (id),
    content_id    uuid REFERENCES mkt_con_content (id),
    channel       text NOT NULL DEFAULT 'whatsapp',
    scheduled_at  timestamptz NOT NULL DEFAULT now(),
    status        text NOT NULL DEFAULT 'scheduled'
        CONSTRAINT mkt_con_schedule_status_check
        CHECK (status IN ('draft', 'scheduled', 'queued', 'processing', 'completed',
                          'paused', 'cancelled', 'failed')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- Recurrence, target and assignment columns Courier reads; status_reason and the
-- occurrence bookkeeping are the only columns Courier writes besides status.
ALTER TABLE mkt_con_schedule ADD COLUMN IF NOT EXISTS cron_expression     text;
ALTER TABLE mkt_con_schedule ADD COLUMN IF NOT EXISTS timezone            text NOT NULL DEFAULT 'UTC';
ALTER TABLE mkt_con_schedule ADD COLUMN IF NOT EXISTS catch_up_policy     text NOT NULL DEFAULT 'latest';
ALTER TABLE mkt_con_schedule ADD COLUMN IF NOT EXISTS target_group_ids    uuid[] NOT NULL DEFAULT '{}';
ALTER TABLE mkt_con_schedule ADD COLUMN IF NOT EXISTS target_contact_ids  uuid[] NOT NULL DEFAULT '{}';
ALTER TABLE mkt_con_schedule ADD COLUMN IF NOT EXISTS target_phone_numbers text[] NOT NULL DEFAULT '{}';
ALTER TABLE mkt_con_schedule ADD COLUMN IF NOT EXISTS target_segment_tags text[] NOT NULL DEFAULT '{}';
ALTER TABLE mkt_con_schedule ADD COLUMN IF NOT EXISTS target_group_filter jsonb;
ALTER TABLE mkt_con_schedule ADD COLUMN IF NOT EXISTS account_id          uuid;
ALTER TABLE mkt_con_schedule ADD COLUMN IF NOT EXISTS status_reason       text;
ALTER TABLE mkt_con_schedule ADD COLUMN IF NOT EXISTS last_occurrence_at  timestamptz;
ALTER TABLE mkt_con_schedule ADD COLUMN IF NOT EXISTS next_occurrence_at  timestamptz;
ALTER TABLE mkt_con_schedule ADD COLUMN IF NOT EXISTS expanded_at         timestamptz;

DO $$ BEGIN
    ALTER TABLE mkt_con_schedule ADD CONSTRAINT mkt_con_schedule_catch_up_policy_check
        CHECK (catch_up_policy IN ('all', 'latest', 'skip'));
EXCEPTION WHEN duplicate_object THEN NULL; END $$;

-- The scheduler's hot query: due WhatsApp schedules.
CREATE INDEX IF NOT EXISTS mkt_con_schedule_due_idx
    ON mkt_con_schedule (status, COALESCE(next_occurrence_at, scheduled_at))
    WHERE channel = 'whatsapp';

-- ---------------------------------------------------------------------------
-- Courier's own tables.
-- ---------------------------------------------------------------------------

CREATE TABLE mkt_wap_accounts (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- E.164 without '+', read from localStorage last-wid-md after login.
    phone_number          text UNIQUE
        CONSTRAINT mkt_wap_accounts_phone_check CHECK (phone_number ~ '^[1-9][0-9]{6,14}$'),
    account_name          text NOT NULL CHECK (length(account_name) BETWEEN 1 AND 200),
    status                text NOT NULL DEFAULT 'inactive'
        CONSTRAINT mkt_wap_accounts_status_check
        CHECK (status IN ('inactive', 'starting', 'qr_pending', 'authenticating', 'warming',
                          'active', 'standby', 'paused', 'logged_out', 'banned', 'failed')),
    -- Why the account is in its status (shown by the API), when it got there, and
    -- for transient statuses the instant it moves on by itself.
    status_reason         text,
    status_changed_at     timestamptz NOT NULL DEFAULT now(),
    status_deadline       timestamptz,
    -- A pause: a NULL paused_until with status 'paused' is a manual pause.
    pause_reason          text,
    paused_until          timestamptz,
    health_score          integer NOT NULL DEFAULT 100 CHECK (health_score BETWEEN 0 AND 100),
    -- Seed compatibility: the admin UI shows these; Courier derives them from
    -- its send log rather than trusting a counter.
    daily_usage_count     integer NOT NULL DEFAULT 0 CHECK (daily_usage_count >= 0),
    daily_usage_limit     integer NOT NULL DEFAULT 200 CHECK (daily_usage_limit >= 0),
    rate_limit_config     jsonb NOT NULL DEFAULT '{}'::jsonb
        CHECK (jsonb_typeof(rate_limit_config) = 'object'),
    timezone              text NOT NULL DEFAULT 'UTC',
    session_data          jsonb NOT NULL DEFAULT '{}'::jsonb,
    session_storage_path  text,
    -- The current QR token and when it stops being valid.
    qr_token              text,
    qr_expires_at         timestamptz,
    -- AEAD-encrypted snapshot of the profile's session state (RemoteAuth equivalent).
    session_snapshot      bytea,
    session_snapshot_at   timestamptz,
    last_ready_at         timestamptz,
    last_seen_at          timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mkt_wap_accounts_status_idx ON mkt_wap_accounts (status);
-- Transient states past their deadline: the reaper's query.
CREATE INDEX mkt_wap_accounts_deadline_idx ON mkt_wap_accounts (status_deadline)
    WHERE status_deadline IS NOT NULL;
CREATE TRIGGER mkt_wap_accounts_touch BEFORE UPDATE ON mkt_wap_accounts
    FOR EACH ROW EXECUTE FUNCTION courier_touch_updated_at();

CREATE TABLE mkt_wap_groups (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    group_id        text NOT NULL UNIQUE CHECK (group_id ~ '^[0-9-]+@g\.us$'),
    name            text NOT NULL DEFAULT '',
    description     text,
    member_count    integer NOT NULL DEFAULT 0 CHECK (member_count >= 0),
    -- Admin-set metadata; discovery never overwrites it.
    region          text,
    state           text,
    district        text,
    segment_tags    text[] NOT NULL DEFAULT '{}',
    -- The account that first discovered the group (seed column).
    account_id      uuid REFERENCES mkt_wap_accounts (id) ON DELETE SET NULL,
    is_active       boolean NOT NULL DEFAULT true,
    discovered_at   timestamptz NOT NULL DEFAULT now(),
    last_scraped_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mkt_wap_groups_account_idx ON mkt_wap_groups (account_id);
CREATE INDEX mkt_wap_groups_region_idx ON mkt_wap_groups (region, state, district);
CREATE INDEX mkt_wap_groups_tags_idx ON mkt_wap_groups USING gin (segment_tags);
CREATE TRIGGER mkt_wap_groups_touch BEFORE UPDATE ON mkt_wap_groups
    FOR EACH ROW EXECUTE FUNCTION courier_touch_updated_at();

-- Which accounts are members of which groups: the scheduler sends to a group
-- only through an account that is in it.
CREATE TABLE mkt_wap_account_groups (
    account_id  uuid NOT NULL REFERENCES mkt_wap_accounts (id) ON DELETE CASCADE,
    group_id    uuid NOT NULL REFERENCES mkt_wap_groups (id) ON DELETE CASCADE,
    is_admin    boolean NOT NULL DEFAULT false,
    seen_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, group_id)
);
CREATE INDEX mkt_wap_account_groups_group_idx ON mkt_wap_account_groups (group_id);

CREATE TABLE mkt_wap_contacts (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- E.164 digits without '+'; NULL only for an @lid participant whose number
    -- the page did not show.
    phone_number         text UNIQUE CHECK (phone_number ~ '^[1-9][0-9]{6,14}$'),
    wa_id                text UNIQUE CHECK (wa_id ~ '^[0-9]+@(c\.us|lid)$'),
    name                 text,
    push_name            text,
    persona_contact_id   uuid,
    engagement_score     integer NOT NULL DEFAULT 0 CHECK (engagement_score BETWEEN 0 AND 100),
    segment_tags         text[] NOT NULL DEFAULT '{}',
    -- Denormalised for the seed's admin UI; mkt_wap_group_members is the truth.
    group_memberships    uuid[] NOT NULL DEFAULT '{}',
    scraped_from_groups  uuid[] NOT NULL DEFAULT '{}',
    -- Keep a contact with the same sending account across messages.
    preferred_account_id uuid REFERENCES mkt_wap_accounts (id) ON DELETE SET NULL,
    opted_out            boolean NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (phone_number IS NOT NULL OR wa_id IS NOT NULL)
);
CREATE INDEX mkt_wap_contacts_tags_idx ON mkt_wap_contacts USING gin (segment_tags);
CREATE INDEX mkt_wap_contacts_groups_idx ON mkt_wap_contacts USING gin (group_memberships);
CREATE TRIGGER mkt_wap_contacts_touch BEFORE UPDATE ON mkt_wap_contacts
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

CREATE TABLE mkt_wap_messages (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Seed: a direct link to mkt_campaigns. NULL only for ad-hoc admin sends.
    campaign_id         uuid REFERENCES mkt_campaigns (id),
    content_id          uuid REFERENCES mkt_con_content (id),
    schedule_id         uuid REFERENCES mkt_con_schedule (id),
    account_id          uuid REFERENCES mkt_wap_accounts (id),
    message_type        text NOT NULL DEFAULT 'text'
        CHECK (message_type IN ('text', 'image', 'video', 'document', 'link')),
    channel_type        text NOT NULL
        CHECK (channel_type IN ('group', 'individual', 'broadcast')),
    target_group_id     uuid REFERENCES mkt_wap_groups (id),
    target_contact_id   uuid REFERENCES mkt_wap_contacts (id),
    -- The WhatsApp chat id the message goes to (…@g.us or …@c.us).
    target_chat_id      text NOT NULL CHECK (target_chat_id ~ '^[0-9-]+@(g\.us|c\.us|lid)$'),
    message_text        text CHECK (length(message_text) <= 65536),
    media_url           text,
    media_path          text,
    media_caption       text,
    link_url            text,
    status              text NOT NULL DEFAULT 'pending'
        CONSTRAINT mkt_wap_messages_status_check
        CHECK (status IN ('pending', 'queued', 'sending', 'sent', 'delivered', 'read', 'failed')),
    -- WhatsApp's own id once sent (true_<chat>_<ID>) and the highest ack seen.
    wa_message_id       text,
    ack                 smallint CHECK (ack BETWEEN -1 AND 4),
    error_message       text,
    retry_count         integer NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    max_retries         integer NOT NULL DEFAULT 3 CHECK (max_retries >= 0),
    -- The job currently responsible for the message, and when the last send
    -- attempt started (the retry path looks for copies sent after it).
    job_id              uuid,
    attempt_started_at  timestamptz,
    -- Why the message cannot move yet (no eligible account, …), shown by the API.
    waiting_reason      text,
    idempotency_key     text UNIQUE,
    queued_at           timestamptz,
    sending_at          timestamptz,
    sent_at             timestamptz,
    delivered_at        timestamptz,
    read_at             timestamptz,
    failed_at           timestamptz,
    undelivered_flagged_at timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (message_text IS NOT NULL OR media_url IS NOT NULL OR media_path IS NOT NULL OR link_url IS NOT NULL)
);
CREATE INDEX mkt_wap_messages_status_idx ON mkt_wap_messages (status, created_at);
CREATE INDEX mkt_wap_messages_account_status_idx ON mkt_wap_messages (account_id, status);
-- Budget accounting and ack catch-up read sends per account by time.
CREATE INDEX mkt_wap_messages_account_sent_idx ON mkt_wap_messages (account_id, sent_at)
    WHERE sent_at IS NOT NULL;
CREATE INDEX mkt_wap_messages_campaign_idx ON mkt_wap_messages (campaign_id);
CREATE INDEX mkt_wap_messages_schedule_idx ON mkt_wap_messages (schedule_id);
CREATE UNIQUE INDEX mkt_wap_messages_wa_id_idx ON mkt_wap_messages (wa_message_id)
    WHERE wa_message_id IS NOT NULL;
CREATE TRIGGER mkt_wap_messages_touch BEFORE UPDATE ON mkt_wap_messages
    FOR EACH ROW EXECUTE FUNCTION courier_touch_updated_at();

-- Append-only: every status change of a message, with its time and source.
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

CREATE OR REPLACE FUNCTION courier_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'mkt_wap_message_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER mkt_wap_message_events_append_only
    BEFORE UPDATE OR DELETE ON mkt_wap_message_events
    FOR EACH ROW EXECUTE FUNCTION courier_events_append_only();
