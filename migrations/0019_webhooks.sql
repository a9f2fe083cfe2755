-- Webhooks (issue 23): subscriptions, one delivery row per (subscription,
-- event), and queue lanes: keys the queue leases like accounts, for work
-- that is not driven through a WhatsApp session. See docs/webhooks.md and
-- docs/queue.md.

-- ---------------------------------------------------------------------------
-- Queue lanes. A job's `account_id` names the key the queue leases: an
-- account, or a lane. A lane is never paused, has no budget and no session;
-- one lane per webhook subscription gives each endpoint its own lease, so
-- its deliveries run one at a time, in order, and a slow endpoint holds only
-- its own lane.
-- ---------------------------------------------------------------------------
CREATE TABLE queue_lanes (
    id          uuid PRIMARY KEY,
    purpose     text NOT NULL CHECK (purpose ~ '^[a-z_]{1,40}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Leases now name accounts or lanes; the cascade the foreign key gave on
-- account delete moves into the delete triggers.
ALTER TABLE account_leases DROP CONSTRAINT IF EXISTS account_leases_account_id_fkey;

CREATE OR REPLACE FUNCTION accounts_delete_queue_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM queue_jobs WHERE account_id IN (SELECT id FROM gone);
    DELETE FROM account_sends WHERE account_id IN (SELECT id FROM gone);
    DELETE FROM account_leases WHERE account_id IN (SELECT id FROM gone);
    RETURN NULL;
END $$;

CREATE TRIGGER queue_lanes_delete_queue_rows AFTER DELETE ON queue_lanes
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION accounts_delete_queue_rows();

-- The job → key check of 0008/0010, accepting a lane as well as an account
-- (same locks, same error).
CREATE OR REPLACE FUNCTION queue_jobs_check_accounts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    missing uuid;
    ids uuid[];
    locked bigint;
    lanes bigint;
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        ids := ARRAY(SELECT DISTINCT account_id FROM new_jobs);
        SELECT count(*) INTO locked FROM (
            SELECT 1 FROM mkt_wap_accounts a WHERE a.id = ANY (ids) FOR KEY SHARE OF a) l;
        IF locked < cardinality(ids) THEN
            SELECT count(*) INTO lanes FROM (
                SELECT 1 FROM queue_lanes q WHERE q.id = ANY (ids) FOR KEY SHARE OF q) l;
            IF locked + lanes < cardinality(ids) THEN
                SELECT i INTO missing FROM unnest(ids) i
                WHERE NOT EXISTS (SELECT 1 FROM mkt_wap_accounts a WHERE a.id = i)
                  AND NOT EXISTS (SELECT 1 FROM queue_lanes q WHERE q.id = i)
                LIMIT 1;
            END IF;
        END IF;
    ELSE
        PERFORM 1 FROM mkt_wap_accounts a WHERE a.id = NEW.account_id FOR KEY SHARE OF a;
        IF NOT FOUND THEN
            PERFORM 1 FROM queue_lanes q WHERE q.id = NEW.account_id FOR KEY SHARE OF q;
            IF NOT FOUND THEN
                missing := NEW.account_id;
            END IF;
        END IF;
    END IF;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'insert or update on table "queue_jobs" violates foreign key constraint "queue_jobs_account_id_fkey"'
            USING ERRCODE = 'foreign_key_violation',
                  CONSTRAINT = 'queue_jobs_account_id_fkey',
                  TABLE = 'queue_jobs',
                  COLUMN = 'account_id',
                  DETAIL = format('Key (account_id)=(%s) is not present in table "mkt_wap_accounts".', missing);
    END IF;
    RETURN NULL;
END $$;

-- ---------------------------------------------------------------------------
-- Subscriptions.
-- ---------------------------------------------------------------------------
CREATE TABLE webhook_subscriptions (
    -- Also the id of its queue lane.
    id               uuid PRIMARY KEY,
    url              text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    description      text CHECK (length(description) <= 500),
    event_types      text[] NOT NULL CHECK (cardinality(event_types) >= 1),
    account_id       uuid REFERENCES mkt_wap_accounts (id) ON DELETE CASCADE,
    campaign_id      uuid,
    -- `whsec_<base64>`: needed in clear to sign; never returned after creation.
    secret           text NOT NULL CHECK (secret LIKE 'whsec_%'),
    enabled          boolean NOT NULL DEFAULT true,
    disabled_reason  text,
    disabled_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- One row per (subscription, event): the delivery's state, attempts and last
-- answer. `dead` rows are the dead letters (replayable).
CREATE TABLE webhook_deliveries (
    subscription_id   uuid NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    position          bigint NOT NULL,
    -- The event's transaction (courier_events.xid): deliveries go out in
    -- (xid, position) order, the log's order.
    xid               bigint NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
        CONSTRAINT webhook_deliveries_status_check
        CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    first_attempt_at  timestamptz,
    last_attempt_at   timestamptz,
    next_attempt_at   timestamptz,
    last_status       integer,
    last_error        text,
    delivered_at      timestamptz,
    dead_at           timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, position)
);
-- The head of a subscription's line.
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (subscription_id, xid, position)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_dead_idx ON webhook_deliveries (dead_at)
    WHERE status = 'dead';

-- Fan-out, in the event's own transaction: a delivery row and a `webhook`
-- job on the subscription's lane for every enabled subscription whose types
-- and filters match. The job id starts with the position, so jobs enqueued
-- together are claimed in the log's order.
CREATE FUNCTION courier_events_fan_out() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    subs uuid[];
    positions bigint[];
BEGIN
    WITH d AS (
        INSERT INTO webhook_deliveries (subscription_id, position, xid)
        SELECT s.id, e.position, e.xid
        FROM new_events e JOIN webhook_subscriptions s
          ON s.enabled AND e.type = ANY (s.event_types)
         AND (s.account_id IS NULL OR s.account_id = e.account_id)
         AND (s.campaign_id IS NULL OR s.campaign_id = e.campaign_id)
        RETURNING subscription_id, position
    )
    SELECT array_agg(subscription_id ORDER BY position), array_agg(position ORDER BY position)
    INTO subs, positions FROM d;
    -- No empty INSERT: its statement triggers would wake every worker.
    IF subs IS NOT NULL THEN
        INSERT INTO queue_jobs (id, kind, account_id, payload, max_attempts)
        SELECT (lpad(to_hex(p), 16, '0') || substr(replace(s::text, '-', ''), 1, 16))::uuid,
               'webhook', s, jsonb_build_object('subscription_id', s, 'position', p), 25
        FROM unnest(subs, positions) AS u(s, p);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER courier_events_fan_out AFTER INSERT ON courier_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION courier_events_fan_out();
