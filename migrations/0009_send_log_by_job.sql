-- The send log's slot of a delivered message is found by its job.
--
-- When WhatsApp accepts a message, `delivery::status::mark_sent` moves the
-- job's latest slot forward to that instant. It looked the slot up by
-- `job_id`, which no index covered: every accepted message scanned the whole
-- log (two days of every account's sends). The log's identity key served
-- nothing else, so it goes, and the slot is found through an index on
-- (job_id, sent_at): the same one index maintained per granted slot, no
-- sequence, and a look-up instead of a scan.
ALTER TABLE account_sends DROP COLUMN id;
CREATE INDEX account_sends_job_idx ON account_sends (job_id, sent_at);
