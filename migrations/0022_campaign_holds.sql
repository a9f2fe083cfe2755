-- The campaign system's `mkt_campaigns.status`, obeyed (docs/scheduler.md,
-- "Campaign status"). A campaign whose status is `paused` or `cancelled`
-- holds its sends: the queue never claims their jobs, the scheduler does not
-- expand its schedules, and the scheduler parks the held jobs (not due, a
-- waiting reason on the job and the message) until the campaign resumes.

-- Which campaigns the scheduler holds now: written only by its hold step
-- (crates/courier/src/scheduler/campaign.rs), so it knows, after a restart or
-- a leader change, which campaigns it must release when their status
-- changes back. No foreign key: the campaign system owns mkt_campaigns and
-- may delete a row; the hold step then releases it.
CREATE TABLE courier_campaign_holds (
    campaign_id  uuid PRIMARY KEY,
    -- The status word that holds it, as the campaign system wrote it.
    status       text NOT NULL,
    held_at      timestamptz NOT NULL DEFAULT now(),
    -- The last time its due jobs were parked (the step parks again once a
    -- minute: a retry or an API send may have added one since).
    parked_at    timestamptz
);

-- Standalone mode: 0001 created mkt_campaigns with a CHECK that has no
-- `cancelled`. Add it, so a campaign can be cancelled there as it can in
-- the campaign system's own table (which has no CHECK, and keeps none).
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = 'mkt_campaigns'::regclass
                 AND conname = 'mkt_campaigns_status_check'
                 AND pg_get_constraintdef(oid) LIKE '%archived%'
                 AND pg_get_constraintdef(oid) NOT LIKE '%cancelled%') THEN
        ALTER TABLE mkt_campaigns DROP CONSTRAINT mkt_campaigns_status_check;
        ALTER TABLE mkt_campaigns ADD CONSTRAINT mkt_campaigns_status_check
            CHECK (status IN ('draft', 'active', 'paused', 'completed', 'archived', 'cancelled'));
    END IF;
END $$;

-- The API lists a campaign's schedules (`GET /v1/schedules?campaign_id=`).
CREATE INDEX IF NOT EXISTS mkt_con_schedule_campaign_idx ON mkt_con_schedule (campaign_id);
