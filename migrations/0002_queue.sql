-- The queue engine: durable jobs, account leases (fencing tokens), the
-- per-account send log that budgets are enforced against, and the wake-up
-- channel. See docs/queue.md for the state machine and the invariants.

-- ---------------------------------------------------------------------------
-- Jobs.
-- ---------------------------------------------------------------------------
-- States (river's model):
--   scheduled  waiting for run_at (a future enqueue, a snooze)
--   available  runnable now
--   running    claimed by the holder of the account's lease at lease_epoch
--   retryable  failed, will run again at run_at (backoff)
--   completed, discarded (attempts or rescues exhausted), cancelled: terminal
-- The claim query treats scheduled/available/retryable with run_at <= now() as
-- runnable, so no sweeper is needed to promote scheduled jobs.
CREATE TABLE queue_jobs (
    id              uuid PRIMARY KEY,
    kind            text NOT NULL CHECK (kind ~ '^[a-z_]{1,40}$'),
    -- Every job Courier runs is driven through one account's session.
    account_id      uuid NOT NULL REFERENCES mkt_wap_accounts (id) ON DELETE CASCADE,
    payload         jsonb NOT NULL DEFAULT '{}'::jsonb,
    state           text NOT NULL DEFAULT 'available'
        CONSTRAINT queue_jobs_state_check
        CHECK (state IN ('available', 'scheduled', 'running', 'retryable',
                         'completed', 'discarded', 'cancelled')),
    -- Lower runs first.
    priority        smallint NOT NULL DEFAULT 100,
    run_at          timestamptz NOT NULL DEFAULT now(),
    -- Attempts of the job's own logic; a snooze or a rescue gives one back.
    attempt         integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts    integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    -- Times a crash or a lost lease returned the job; capped (crash loops).
    rescues         integer NOT NULL DEFAULT 0 CHECK (rescues >= 0),
    last_error      text,
    -- [{at, attempt, error}], newest last.
    errors          jsonb NOT NULL DEFAULT '[]'::jsonb,
    -- Why the job waits (snooze reason), shown by the API.
    waiting_reason  text,
    idempotency_key text,
    -- The lease epoch (fencing token) and owner that claimed the running attempt.
    lease_epoch     bigint,
    attempted_by    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempted_at    timestamptz,
    finished_at     timestamptz,
    CHECK ((state = 'running') = (lease_epoch IS NOT NULL)),
    CHECK ((state IN ('completed', 'discarded', 'cancelled')) = (finished_at IS NOT NULL))
);
CREATE UNIQUE INDEX queue_jobs_idempotency_key_idx ON queue_jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The claim: the next runnable job of one account.
CREATE INDEX queue_jobs_fetch_idx ON queue_jobs (account_id, priority, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');
-- Earliest wake-up among all runnable jobs (idle workers sleep until then).
CREATE INDEX queue_jobs_run_at_idx ON queue_jobs (run_at)
    WHERE state IN ('available', 'scheduled', 'retryable');
-- At most one running job per account, enforced by the database itself.
CREATE UNIQUE INDEX queue_jobs_one_running_idx ON queue_jobs (account_id)
    WHERE state = 'running';
-- The cleaner.
CREATE INDEX queue_jobs_finished_idx ON queue_jobs (finished_at)
    WHERE finished_at IS NOT NULL;

-- Wake workers on enqueue. Statement-level, so a batch of 10 000 rows sends
-- one notification, not 10 000.
CREATE OR REPLACE FUNCTION queue_jobs_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('courier_jobs', '');
    RETURN NULL;
END $$;
CREATE TRIGGER queue_jobs_notify AFTER INSERT ON queue_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION queue_jobs_notify();

-- ---------------------------------------------------------------------------
-- Account leases: which worker drives which account.
-- ---------------------------------------------------------------------------
-- epoch is the fencing token: it increases on every acquisition, and every
-- write a worker makes for the account checks it in the same statement. A
-- released lease keeps its row (owner NULL) so the epoch never goes back.
CREATE TABLE account_leases (
    account_id    uuid PRIMARY KEY REFERENCES mkt_wap_accounts (id) ON DELETE CASCADE,
    owner         text,
    epoch         bigint NOT NULL DEFAULT 1 CHECK (epoch >= 1),
    expires_at    timestamptz NOT NULL,
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    acquired_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX account_leases_owner_idx ON account_leases (owner) WHERE owner IS NOT NULL;

-- ---------------------------------------------------------------------------
-- The send log: one row per send slot granted. Budgets are counted here, in
-- the same statement that grants the slot (fenced by the lease epoch).
-- ---------------------------------------------------------------------------
CREATE TABLE account_sends (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  uuid NOT NULL REFERENCES mkt_wap_accounts (id) ON DELETE CASCADE,
    job_id      uuid NOT NULL,
    epoch       bigint NOT NULL,
    sent_at     timestamptz NOT NULL
);
CREATE INDEX account_sends_account_idx ON account_sends (account_id, sent_at);

-- What the `noop-record` handler saw: used by the multi-process tests and the
-- benchmark to check budgets and exactly-once from the outside.
CREATE TABLE queue_handler_records (
    job_id      uuid PRIMARY KEY,
    account_id  uuid NOT NULL,
    kind        text NOT NULL,
    -- The send slot the job was granted (NULL for kinds without a budget).
    slot_at     timestamptz,
    handled_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker      text NOT NULL,
    -- How many times a handler ran for this job (exactly-once checks).
    runs        integer NOT NULL DEFAULT 1
);
