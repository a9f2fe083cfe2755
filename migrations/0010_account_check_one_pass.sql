-- The job → account check of 0008 in one pass over the inserted rows.
--
-- 0008's statement trigger read its transition table twice: once for the
-- distinct accounts to lock, and once more, row by row, for an account that
-- does not exist. Now the distinct accounts are read once; they are locked
-- (FOR KEY SHARE, as the foreign key did) and counted, and only when the count
-- falls short is the missing one looked for, to name it in the error. Same
-- error (SQLSTATE 23503, constraint queue_jobs_account_id_fkey), same locks.
CREATE OR REPLACE FUNCTION queue_jobs_check_accounts() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    missing uuid;
    ids uuid[];
    locked bigint;
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        ids := ARRAY(SELECT DISTINCT account_id FROM new_jobs);
        SELECT count(*) INTO locked FROM (
            SELECT 1 FROM mkt_wap_accounts a WHERE a.id = ANY (ids) FOR KEY SHARE OF a) l;
        IF locked < cardinality(ids) THEN
            SELECT i INTO missing FROM unnest(ids) i
            WHERE NOT EXISTS (SELECT 1 FROM mkt_wap_accounts a WHERE a.id = i)
            LIMIT 1;
        END IF;
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
