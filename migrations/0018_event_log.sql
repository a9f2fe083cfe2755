-- Courier's event log (issue 23): one ordered log of what outsiders may hear
-- about (webhooks, the /v1/events stream). See docs/webhooks.md.
--
-- Fed by triggers, not by the code paths that change state: a trigger runs
-- in the transaction that makes the change, so an event is in the log if and
-- only if its change committed, and no code path (the API, the scheduler's
-- bulk statements, the claim's policy fragment, a future one) can forget it.
--
-- Order. `position` is the event's id. Positions are handed out at insert,
-- but transactions commit in another order, so a reader that goes by
-- position alone would skip an event whose transaction commits after a later
-- position was read. Every row therefore carries the id of the transaction
-- that wrote it (`xid`), and readers only read rows whose transaction is
-- older than every transaction still running (`xid < xmin` of their
-- snapshot), in (xid, position) order. Any row that becomes readable later
-- has a larger xid, so that order only ever grows at its end: a reader
-- resuming after an event misses nothing and sees nothing twice. Within one
-- transaction the order is by position.
CREATE TABLE courier_events (
    position     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type         text NOT NULL
        CONSTRAINT courier_events_type_check
        CHECK (type IN ('message.queued', 'message.sent', 'message.delivered', 'message.read',
                        'message.failed', 'account.status_changed', 'account.qr_changed',
                        'account.paused', 'account.resumed', 'schedule.expanded')),
    account_id   uuid,
    campaign_id  uuid,
    data         jsonb NOT NULL,
    occurred_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    xid          bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint)
);
CREATE INDEX courier_events_order_idx ON courier_events (xid, position);
CREATE INDEX courier_events_occurred_idx ON courier_events (occurred_at);

-- One notification per statement; readers re-read the log (the payload is
-- a hint, the log is the truth).
CREATE FUNCTION courier_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('courier_events', '');
    RETURN NULL;
END $$;
CREATE TRIGGER courier_events_notify AFTER INSERT ON courier_events
    FOR EACH STATEMENT EXECUTE FUNCTION courier_events_notify();

-- Messages: every queued/sent/delivered/read/failed event of the message log.
CREATE FUNCTION courier_events_from_messages() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- No empty INSERT (its statement triggers would notify for nothing).
    IF NOT EXISTS (SELECT 1 FROM new_events
                   WHERE status IN ('queued', 'sent', 'delivered', 'read', 'failed')) THEN
        RETURN NULL;
    END IF;
    INSERT INTO courier_events (type, account_id, campaign_id, data, occurred_at)
    SELECT 'message.' || e.status, m.account_id, m.campaign_id,
           jsonb_build_object(
               'message_id', m.id, 'status', e.status, 'ack', e.ack, 'source', e.source,
               'account_id', m.account_id, 'campaign_id', m.campaign_id,
               'schedule_id', m.schedule_id, 'chat_id', m.target_chat_id,
               'wa_message_id', m.wa_message_id,
               'error', CASE WHEN e.status = 'failed' THEN m.error_message END,
               'detail', e.detail),
           e.occurred_at
    FROM new_events e JOIN mkt_wap_messages m ON m.id = e.message_id
    WHERE e.status IN ('queued', 'sent', 'delivered', 'read', 'failed')
    ORDER BY e.id;
    RETURN NULL;
END $$;
CREATE TRIGGER mkt_wap_message_events_to_log AFTER INSERT ON mkt_wap_message_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION courier_events_from_messages();

-- Accounts: status changes (with paused/resumed besides), and a new QR. The
-- QR token itself is not in the event: it links a phone to the account, and
-- the login page fetches the code over its own authenticated route.
CREATE FUNCTION courier_events_from_accounts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO courier_events (type, account_id, data) VALUES
            ('account.status_changed', NEW.id, jsonb_build_object(
                'account_id', NEW.id, 'status', NEW.status, 'previous', OLD.status,
                'reason', NEW.status_reason));
        IF NEW.status = 'paused' THEN
            INSERT INTO courier_events (type, account_id, data) VALUES
                ('account.paused', NEW.id, jsonb_build_object(
                    'account_id', NEW.id, 'reason', NEW.pause_reason, 'until', NEW.paused_until));
        ELSIF OLD.status = 'paused' THEN
            INSERT INTO courier_events (type, account_id, data) VALUES
                ('account.resumed', NEW.id, jsonb_build_object(
                    'account_id', NEW.id, 'status', NEW.status));
        END IF;
    END IF;
    IF NEW.qr_token IS DISTINCT FROM OLD.qr_token AND NEW.qr_token IS NOT NULL THEN
        INSERT INTO courier_events (type, account_id, data) VALUES
            ('account.qr_changed', NEW.id, jsonb_build_object(
                'account_id', NEW.id, 'expires_at', NEW.qr_expires_at));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER mkt_wap_accounts_to_log AFTER UPDATE OF status, qr_token ON mkt_wap_accounts
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status OR NEW.qr_token IS DISTINCT FROM OLD.qr_token)
    EXECUTE FUNCTION courier_events_from_accounts();

-- Schedules: an expansion (the scheduler stamps expanded_at).
CREATE FUNCTION courier_events_from_schedules() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO courier_events (type, campaign_id, data) VALUES
        ('schedule.expanded', NEW.campaign_id, jsonb_build_object(
            'schedule_id', NEW.id, 'campaign_id', NEW.campaign_id, 'status', NEW.status,
            'occurrence_at', NEW.last_occurrence_at, 'next_occurrence_at', NEW.next_occurrence_at,
            'note', NEW.status_reason));
    RETURN NULL;
END $$;
CREATE TRIGGER mkt_con_schedule_to_log AFTER UPDATE OF expanded_at ON mkt_con_schedule
    FOR EACH ROW WHEN (NEW.expanded_at IS DISTINCT FROM OLD.expanded_at)
    EXECUTE FUNCTION courier_events_from_schedules();
