-- Adoption, step 2 of 3 (docs/migration.md): the previous system's rows are
-- mapped to what Courier's constraints accept, before the constraints are
-- added. Runs inside the adoption's one transaction, after the missing columns
-- were added (so every column named here exists) and with the tables' own
-- triggers disabled (their updated_at stays what it was).
--
-- Every value changed is first written to courier_adoption_changes with its
-- original, so nothing is lost and a rollback can put it back. Columns that
-- did not exist before the adoption are filled by their defaults and not
-- logged (there was nothing to keep).
--
-- Each statement: m = the rows whose value changes, with the new value and the
-- reason; the log insert reads m; the update writes m.

-- ---------------------------------------------------------------------------
-- mkt_wap_accounts
-- ---------------------------------------------------------------------------

-- Status words. The seed's five plus `authenticating` (seen stuck there):
--   inactive, active, warming, banned  -> the same Courier status
--   standby                            -> paused (manual, no resume time)
--   paused, logged_out, failed         -> kept (already Courier words)
--   anything else, NULL, and Courier's transient login words (starting,
--   qr_pending, authenticating: they need a live login and a deadline)
--                                      -> inactive, the word kept in status_reason
WITH m AS (
    SELECT id, status AS old,
           CASE lower(btrim(status))
               WHEN 'inactive' THEN 'inactive' WHEN 'active' THEN 'active'
               WHEN 'warming' THEN 'warming' WHEN 'banned' THEN 'banned'
               WHEN 'standby' THEN 'paused'
               WHEN 'paused' THEN 'paused' WHEN 'logged_out' THEN 'logged_out'
               WHEN 'failed' THEN 'failed'
               ELSE 'inactive' END AS new,
           CASE lower(btrim(status))
               WHEN 'inactive' THEN NULL WHEN 'active' THEN NULL WHEN 'banned' THEN NULL
               WHEN 'paused' THEN NULL WHEN 'logged_out' THEN NULL WHEN 'failed' THEN NULL
               WHEN 'warming' THEN 'adopted: warming in the previous system; sends follow the warm-up ladder'
               WHEN 'standby' THEN 'adopted: standby in the previous system; paused until an operator resumes it'
               ELSE CASE WHEN status IS NULL
                         THEN 'adopted: the previous system had no status; inactive until it logs in'
                         ELSE format('adopted: previous system status %L is not a Courier status; inactive until it logs in', status) END
           END AS reason
    FROM mkt_wap_accounts
),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_accounts', id, 'status', old, new, coalesce(reason, 'adopted: status word normalised')
    FROM m WHERE old IS DISTINCT FROM new
)
UPDATE mkt_wap_accounts a
SET status = m.new,
    status_reason = coalesce(m.reason, a.status_reason),
    pause_reason = CASE WHEN m.new = 'paused' AND lower(btrim(m.old)) = 'standby' THEN m.reason ELSE a.pause_reason END
FROM m WHERE a.id = m.id AND (m.old IS DISTINCT FROM m.new OR m.reason IS NOT NULL);

-- Phone numbers: E.164 digits without '+'. Formatting (+, spaces, dashes,
-- dots, parentheses) is dropped; anything else is not a number Courier can
-- trust, and becomes NULL (the account reads its own number at its next login).
WITH m AS (
    SELECT id, phone_number AS old,
           CASE WHEN phone_number ~ '^\s*\+?[0-9 ().-]+\s*$'
                     AND regexp_replace(phone_number, '[^0-9]', '', 'g') ~ '^[1-9][0-9]{6,14}$'
                THEN regexp_replace(phone_number, '[^0-9]', '', 'g') END AS new
    FROM mkt_wap_accounts WHERE phone_number IS NOT NULL AND phone_number !~ '^[1-9][0-9]{6,14}$'
),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_accounts', id, 'phone_number', old, new,
           CASE WHEN new IS NULL THEN 'adopted: not an international number; read again at the next login'
                ELSE 'adopted: formatting removed (E.164 digits)' END
    FROM m
)
UPDATE mkt_wap_accounts a SET phone_number = m.new FROM m WHERE a.id = m.id;

WITH m AS (
    SELECT id, account_name AS old,
           CASE WHEN account_name IS NULL OR btrim(account_name) = ''
                THEN coalesce(phone_number, 'account ' || left(id::text, 8))
                ELSE left(btrim(account_name), 200) END AS new
    FROM mkt_wap_accounts
    WHERE account_name IS NULL OR btrim(account_name) = '' OR length(account_name) > 200
       OR account_name <> btrim(account_name)
),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_accounts', id, 'account_name', old, new, 'adopted: a name of 1 to 200 characters is required' FROM m
)
UPDATE mkt_wap_accounts a SET account_name = m.new FROM m WHERE a.id = m.id;

WITH m AS (
    SELECT id, health_score AS old, CASE WHEN health_score IS NULL THEN 100 ELSE least(greatest(health_score, 0), 100) END AS new
    FROM mkt_wap_accounts WHERE health_score IS NULL OR health_score NOT BETWEEN 0 AND 100
),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_accounts', id, 'health_score', old::text, new::text, 'adopted: health is 0 to 100 (NULL: 100)' FROM m
)
UPDATE mkt_wap_accounts a SET health_score = m.new FROM m WHERE a.id = m.id;

WITH m AS (
    SELECT id, daily_usage_count AS old FROM mkt_wap_accounts
    WHERE daily_usage_count IS NULL OR daily_usage_count < 0
),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_accounts', id, 'daily_usage_count', old::text, '0', 'adopted: a count is 0 or more (NULL: 0)' FROM m
)
UPDATE mkt_wap_accounts a SET daily_usage_count = 0 FROM m WHERE a.id = m.id;

WITH m AS (
    SELECT id, daily_usage_limit AS old FROM mkt_wap_accounts
    WHERE daily_usage_limit IS NULL OR daily_usage_limit < 0
),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_accounts', id, 'daily_usage_limit', old::text, '200', 'adopted: the seed default (200) where none was set' FROM m
)
UPDATE mkt_wap_accounts a SET daily_usage_limit = 200 FROM m WHERE a.id = m.id;

WITH m AS (
    SELECT id, rate_limit_config AS old FROM mkt_wap_accounts
    WHERE rate_limit_config IS NULL OR jsonb_typeof(rate_limit_config) <> 'object'
),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_accounts', id, 'rate_limit_config', old::text, '{}', 'adopted: limits are a JSON object (empty: the configured defaults)' FROM m
)
UPDATE mkt_wap_accounts a SET rate_limit_config = '{}'::jsonb FROM m WHERE a.id = m.id;

WITH m AS (SELECT id FROM mkt_wap_accounts WHERE session_data IS NULL),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_accounts', id, 'session_data', NULL, '{}', 'adopted: NULL session_data is an empty object' FROM m
)
UPDATE mkt_wap_accounts a SET session_data = '{}'::jsonb FROM m WHERE a.id = m.id;

WITH m AS (SELECT id, created_at AS c, updated_at AS u FROM mkt_wap_accounts WHERE created_at IS NULL OR updated_at IS NULL),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_accounts', id, 'created_at/updated_at', format('%s/%s', c, u), 'now()', 'adopted: timestamps are required' FROM m
)
UPDATE mkt_wap_accounts a SET created_at = coalesce(a.created_at, a.updated_at, now()),
                              updated_at = coalesce(a.updated_at, a.created_at, now())
FROM m WHERE a.id = m.id;

-- ---------------------------------------------------------------------------
-- mkt_wap_groups
-- ---------------------------------------------------------------------------

-- A group id stored without its suffix gets '@g.us'.
WITH m AS (SELECT id, group_id AS old FROM mkt_wap_groups WHERE group_id ~ '^[0-9-]+$'),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_groups', id, 'group_id', old, old || '@g.us', 'adopted: group chat ids end in @g.us' FROM m
)
UPDATE mkt_wap_groups g SET group_id = m.old || '@g.us' FROM m WHERE g.id = m.id;

WITH m AS (SELECT id, name AS old FROM mkt_wap_groups WHERE name IS NULL),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_groups', id, 'name', NULL, '', 'adopted: NULL name is empty (discovery fills it)' FROM m
)
UPDATE mkt_wap_groups g SET name = '' FROM m WHERE g.id = m.id;

WITH m AS (SELECT id, member_count AS old FROM mkt_wap_groups WHERE member_count IS NULL OR member_count < 0),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_groups', id, 'member_count', old::text, '0', 'adopted: a count is 0 or more (NULL: 0)' FROM m
)
UPDATE mkt_wap_groups g SET member_count = 0 FROM m WHERE g.id = m.id;

WITH m AS (SELECT id FROM mkt_wap_groups WHERE segment_tags IS NULL),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_groups', id, 'segment_tags', NULL, '{}', 'adopted: NULL tags are no tags' FROM m
)
UPDATE mkt_wap_groups g SET segment_tags = '{}' FROM m WHERE g.id = m.id;

WITH m AS (SELECT id FROM mkt_wap_groups WHERE is_active IS NULL),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_groups', id, 'is_active', NULL, 'true', 'adopted: NULL is_active counts as active' FROM m
)
UPDATE mkt_wap_groups g SET is_active = true FROM m WHERE g.id = m.id;

-- A group found by an account that no longer exists keeps no account.
WITH m AS (
    SELECT id, account_id AS old FROM mkt_wap_groups g
    WHERE account_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM mkt_wap_accounts a WHERE a.id = g.account_id)
),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_groups', id, 'account_id', old::text, NULL, 'adopted: the account no longer exists' FROM m
)
UPDATE mkt_wap_groups g SET account_id = NULL FROM m WHERE g.id = m.id;

UPDATE mkt_wap_groups SET discovered_at = created_at
WHERE created_at IS NOT NULL AND discovered_at > created_at;

WITH m AS (SELECT id, created_at AS c, updated_at AS u FROM mkt_wap_groups WHERE created_at IS NULL OR updated_at IS NULL),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_groups', id, 'created_at/updated_at', format('%s/%s', c, u), 'now()', 'adopted: timestamps are required' FROM m
)
UPDATE mkt_wap_groups g SET created_at = coalesce(g.created_at, g.updated_at, now()),
                            updated_at = coalesce(g.updated_at, g.created_at, now())
FROM m WHERE g.id = m.id;

-- ---------------------------------------------------------------------------
-- mkt_wap_contacts
-- ---------------------------------------------------------------------------

-- Formatting is dropped from numbers; a value that is still not a number is
-- left as it is, and the constraint check names the row (nothing is guessed).
WITH m AS (
    SELECT id, phone_number AS old, regexp_replace(phone_number, '[^0-9]', '', 'g') AS new
    FROM mkt_wap_contacts
    WHERE phone_number !~ '^[1-9][0-9]{6,14}$'
      AND phone_number ~ '^\s*\+?[0-9 ().-]+\s*$'
      AND regexp_replace(phone_number, '[^0-9]', '', 'g') ~ '^[1-9][0-9]{6,14}$'
),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_contacts', id, 'phone_number', old, new, 'adopted: formatting removed (E.164 digits)' FROM m
)
UPDATE mkt_wap_contacts c SET phone_number = m.new FROM m WHERE c.id = m.id;

WITH m AS (
    SELECT id, engagement_score AS old, CASE WHEN engagement_score IS NULL THEN 0 ELSE least(greatest(engagement_score, 0), 100) END AS new
    FROM mkt_wap_contacts WHERE engagement_score IS NULL OR engagement_score NOT BETWEEN 0 AND 100
),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_contacts', id, 'engagement_score', old::text, new::text, 'adopted: a score is 0 to 100 (NULL: 0)' FROM m
)
UPDATE mkt_wap_contacts c SET engagement_score = m.new FROM m WHERE c.id = m.id;

WITH m AS (SELECT id, group_memberships IS NULL AS gm, scraped_from_groups IS NULL AS sg FROM mkt_wap_contacts
           WHERE group_memberships IS NULL OR scraped_from_groups IS NULL),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_contacts', id, CASE WHEN gm AND sg THEN 'group_memberships/scraped_from_groups'
                                        WHEN gm THEN 'group_memberships' ELSE 'scraped_from_groups' END,
           NULL, '{}', 'adopted: NULL lists are empty lists' FROM m
)
UPDATE mkt_wap_contacts c SET group_memberships = coalesce(c.group_memberships, '{}'),
                              scraped_from_groups = coalesce(c.scraped_from_groups, '{}')
FROM m WHERE c.id = m.id;

WITH m AS (SELECT id, created_at AS c, updated_at AS u FROM mkt_wap_contacts WHERE created_at IS NULL OR updated_at IS NULL),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_contacts', id, 'created_at/updated_at', format('%s/%s', c, u), 'now()', 'adopted: timestamps are required' FROM m
)
UPDATE mkt_wap_contacts x SET created_at = coalesce(x.created_at, x.updated_at, now()),
                              updated_at = coalesce(x.updated_at, x.created_at, now())
FROM m WHERE x.id = m.id;

-- ---------------------------------------------------------------------------
-- mkt_wap_messages
-- ---------------------------------------------------------------------------

WITH m AS (
    SELECT id, message_type AS old,
           CASE WHEN lower(btrim(message_type)) IN ('text', 'image', 'video', 'document', 'link')
                THEN lower(btrim(message_type)) ELSE 'text' END AS new
    FROM mkt_wap_messages
    WHERE message_type IS NULL OR message_type NOT IN ('text', 'image', 'video', 'document', 'link')
),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_messages', id, 'message_type', old, new, 'adopted: message types are text, image, video, document, link (other: text)' FROM m
)
UPDATE mkt_wap_messages x SET message_type = m.new FROM m WHERE x.id = m.id;

WITH m AS (
    SELECT id, channel_type AS old,
           CASE WHEN lower(btrim(channel_type)) IN ('group', 'individual', 'broadcast') THEN lower(btrim(channel_type))
                WHEN target_group_id IS NOT NULL THEN 'group' ELSE 'individual' END AS new
    FROM mkt_wap_messages
    WHERE channel_type IS NULL OR channel_type NOT IN ('group', 'individual', 'broadcast')
),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_messages', id, 'channel_type', old, new, 'adopted: channel read from the target (a group id: group)' FROM m
)
UPDATE mkt_wap_messages x SET channel_type = m.new FROM m WHERE x.id = m.id;

-- The chat the message went (or goes) to: a new column, derived from the
-- group's WhatsApp id or the contact's number. A message whose target cannot
-- be derived (a broadcast list, a deleted group) gets '0@c.us', which no
-- phone has, and is logged.
UPDATE mkt_wap_messages x SET target_chat_id = coalesce(
    (SELECT g.group_id FROM mkt_wap_groups g
      WHERE g.id = x.target_group_id AND g.group_id ~ '^[0-9-]+@g\.us$'),
    (SELECT coalesce(c.wa_id, c.phone_number || '@c.us') FROM mkt_wap_contacts c
      WHERE c.id = x.target_contact_id AND x.target_group_id IS NULL
        AND (c.wa_id IS NOT NULL OR c.phone_number ~ '^[1-9][0-9]{6,14}$')))
WHERE x.target_chat_id IS NULL;
WITH m AS (SELECT id FROM mkt_wap_messages WHERE target_chat_id IS NULL),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_messages', id, 'target_chat_id', NULL, '0@c.us',
           'adopted: no target chat could be derived from target_group_id / target_contact_id' FROM m
)
UPDATE mkt_wap_messages x SET target_chat_id = '0@c.us' FROM m WHERE x.id = m.id;

-- A message with neither text, media nor link keeps an empty text.
WITH m AS (SELECT id FROM mkt_wap_messages
           WHERE message_text IS NULL AND media_url IS NULL AND media_path IS NULL AND link_url IS NULL),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_messages', id, 'message_text', NULL, '', 'adopted: a message needs a text, a media or a link' FROM m
)
UPDATE mkt_wap_messages x SET message_text = '' FROM m WHERE x.id = m.id;

WITH m AS (SELECT id, message_text AS old FROM mkt_wap_messages WHERE length(message_text) > 65536),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_messages', id, 'message_text', old, left(old, 65536), 'adopted: texts are at most 65536 characters' FROM m
)
UPDATE mkt_wap_messages x SET message_text = left(m.old, 65536) FROM m WHERE x.id = m.id;

-- Status words (the seed's list is Courier's):
--   pending, sent, delivered, read, failed  -> the same
--   queued   -> pending: the previous system's queue is gone; Courier's
--               assignment gives it an account and a job
--   sending  -> failed, with the attempt's start kept: its outcome is unknown
--               (it may have reached WhatsApp). It has no Courier job, so the
--               retry sweep never picks it up; an operator looks at the chat
--               and retries it or not
--   NULL or any other word -> failed, the word kept in error_message
-- A message still to be sent that has nothing to send is failed too.
WITH m AS (
    SELECT id, status AS old, error_message AS old_error,
           CASE WHEN lower(btrim(status)) IN ('pending', 'sent', 'delivered', 'read', 'failed')
                     AND NOT (lower(btrim(status)) = 'pending' AND message_text = '' AND media_url IS NULL
                              AND media_path IS NULL AND link_url IS NULL)
                     THEN lower(btrim(status))
                WHEN lower(btrim(status)) = 'queued'
                     AND NOT (message_text = '' AND media_url IS NULL AND media_path IS NULL AND link_url IS NULL)
                     THEN 'pending'
                ELSE 'failed' END AS new,
           CASE WHEN lower(btrim(status)) = 'queued' AND message_text = '' AND media_url IS NULL
                     AND media_path IS NULL AND link_url IS NULL
                     THEN 'adopted: queued in the previous system with nothing to send'
                WHEN lower(btrim(status)) = 'pending' AND message_text = '' AND media_url IS NULL
                     AND media_path IS NULL AND link_url IS NULL
                     THEN 'adopted: pending in the previous system with nothing to send'
                WHEN lower(btrim(status)) IN ('pending', 'sent', 'delivered', 'read', 'failed', 'queued') THEN NULL
                WHEN lower(btrim(status)) = 'sending'
                     THEN 'adopted: was being sent when the previous system stopped; outcome unknown (it may have reached WhatsApp: check the chat before retrying it)'
                WHEN status IS NULL THEN 'adopted: the previous system had no status'
                ELSE format('adopted: previous system status %L is not a Courier status', status) END AS reason
    FROM mkt_wap_messages
),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_messages', id, 'status', old, new, coalesce(reason, 'adopted: ' || new) FROM m
    WHERE old IS DISTINCT FROM new
)
UPDATE mkt_wap_messages x SET
    status = m.new,
    error_message = CASE WHEN m.reason IS NULL THEN x.error_message
                         ELSE m.reason || coalesce(' (previous error: ' || x.error_message || ')', '') END,
    waiting_reason = CASE WHEN lower(btrim(m.old)) = 'queued' AND m.new = 'pending'
                          THEN 'adopted: queued in the previous system; waiting for an account' ELSE x.waiting_reason END,
    attempt_started_at = CASE WHEN lower(btrim(m.old)) = 'sending'
                              THEN coalesce(x.updated_at, x.created_at, now()) ELSE x.attempt_started_at END,
    failed_at = CASE WHEN m.new = 'failed' THEN coalesce(x.failed_at, x.updated_at, x.created_at, now()) ELSE x.failed_at END
FROM m WHERE x.id = m.id AND (m.old IS DISTINCT FROM m.new OR m.reason IS NOT NULL);

-- Failed messages carry the time they failed (the retry sweep reads it).
UPDATE mkt_wap_messages SET failed_at = coalesce(updated_at, created_at, now())
WHERE status = 'failed' AND failed_at IS NULL;

-- Acks Courier reads for messages the previous system saw sent or further
-- (new column: 1 server, 2 device, 3 read).
UPDATE mkt_wap_messages SET ack = CASE status WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 ELSE 3 END
WHERE ack IS NULL AND status IN ('sent', 'delivered', 'read');

WITH m AS (SELECT id, retry_count AS old FROM mkt_wap_messages WHERE retry_count IS NULL OR retry_count < 0),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_messages', id, 'retry_count', old::text, '0', 'adopted: a count is 0 or more (NULL: 0)' FROM m
)
UPDATE mkt_wap_messages x SET retry_count = 0 FROM m WHERE x.id = m.id;

WITH m AS (
    SELECT id, account_id AS old FROM mkt_wap_messages x
    WHERE account_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM mkt_wap_accounts a WHERE a.id = x.account_id)
),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_messages', id, 'account_id', old::text, NULL, 'adopted: the account no longer exists' FROM m
)
UPDATE mkt_wap_messages x SET account_id = NULL FROM m WHERE x.id = m.id;

WITH m AS (SELECT id, created_at AS c, updated_at AS u FROM mkt_wap_messages WHERE created_at IS NULL OR updated_at IS NULL),
log AS (
    INSERT INTO courier_adoption_changes (table_name, row_id, column_name, old_value, new_value, reason)
    SELECT 'mkt_wap_messages', id, 'created_at/updated_at', format('%s/%s', c, u), 'now()', 'adopted: timestamps are required' FROM m
)
UPDATE mkt_wap_messages x SET created_at = coalesce(x.created_at, x.updated_at, now()),
                              updated_at = coalesce(x.updated_at, x.created_at, now())
FROM m WHERE x.id = m.id;
