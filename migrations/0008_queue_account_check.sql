-- Queue performance (docs/benchmarks.md, issue 3). Postgres checks a foreign
-- key with one internal query, and one row lock on the referenced account,
-- per inserted row: a 10 000-job batch enqueue ran 10 000 look-ups of the
-- same ~200 accounts (about a third of its server time), and every send
-- claim paid one more for its send-log row.
--
-- The guarantees stay; only their cost changes:
--
-- - queue_jobs.account_id: checked once per statement, not once per row. An
--   AFTER INSERT statement trigger locks each distinct account once
--   (FOR KEY SHARE, the lock the foreign key took) and raises the same error
--   the key raised (SQLSTATE 23503, constraint queue_jobs_account_id_fkey),
--   so callers, the API's 422 included, see no difference. Moving a job to
--   another account (reassignment) is checked per changed row.
-- - account_sends.account_id: written only by the claim statement, which
--   reads the account and holds its lease under a share lock in the same
--   statement; deleting the account deletes the lease row, which waits for
--   that lock. Nothing to check per row.
-- - ON DELETE CASCADE for both: a statement trigger on mkt_wap_accounts
--   deletes the jobs and send-log rows of deleted accounts. Because inserts
--   lock the account first, a delete waits for any job insert in flight and
--   then removes its rows too.
ALTER TABLE queue_jobs DROP CONSTRAINT IF EXISTS queue_jobs_account_id_fkey;
ALTER TABLE account_sends DROP CONSTRAINT IF EXISTS account_sends_account_id_fkey;

CREATE FUNCTION queue_jobs_check_accounts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    missing uuid;
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        PERFORM 1 FROM mkt_wap_accounts a
        WHERE a.id IN (SELECT DISTINCT account_id FROM new_jobs)
        FOR KEY SHARE OF a;
        SELECT n.account_id INTO missing FROM new_jobs n
        WHERE NOT EXISTS (SELECT 1 FROM mkt_wap_accounts a WHERE a.id = n.account_id)
        LIMIT 1;
    ELSE
        PERFORM 1 FROM mkt_wap_accounts a WHERE a.id = NEW.account_id FOR KEY SHARE OF a;
        IF NOT FOUND THEN
            missing := NEW.account_id;
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

CREATE TRIGGER queue_jobs_account_check AFTER INSERT ON queue_jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION queue_jobs_check_accounts();
CREATE TRIGGER queue_jobs_account_moved AFTER UPDATE OF account_id ON queue_jobs
    FOR EACH ROW WHEN (OLD.account_id IS DISTINCT FROM NEW.account_id)
    EXECUTE FUNCTION queue_jobs_check_accounts();

CREATE FUNCTION accounts_delete_queue_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM queue_jobs WHERE account_id IN (SELECT id FROM gone);
    DELETE FROM account_sends WHERE account_id IN (SELECT id FROM gone);
    RETURN NULL;
END $$;

CREATE TRIGGER accounts_delete_queue_rows AFTER DELETE ON mkt_wap_accounts
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION accounts_delete_queue_rows();
