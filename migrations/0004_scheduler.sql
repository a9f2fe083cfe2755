-- The scheduler's bookkeeping: which periodic maintenance task ran when (so a
-- leader hand-over neither repeats nor forgets a daily task), and the indexes
-- its passes read. See docs/scheduler.md.

CREATE TABLE scheduler_tasks (
    name         text PRIMARY KEY CHECK (name ~ '^[a-z_]{1,40}$'),
    -- Start of the last run; a task is due when now() >= last_run_at + interval.
    last_run_at  timestamptz NOT NULL,
    -- One line about what the last run did (or why it failed).
    last_result  text
);

-- Messages waiting for an account: the assignment pass.
CREATE INDEX mkt_wap_messages_pending_idx ON mkt_wap_messages (created_at)
    WHERE status = 'pending' AND job_id IS NULL;
-- Failed messages: the sweeper.
CREATE INDEX mkt_wap_messages_failed_idx ON mkt_wap_messages (failed_at)
    WHERE status = 'failed';
