-- A pause remembers the status it interrupted, so that a resume (by hand or
-- at `paused_until`) returns the account there — a warming account goes back
-- to its warm-up ladder, a standby account to standby — instead of always to
-- `active`. NULL: not paused, or paused before this migration (those resume
-- to `active`, as before).
ALTER TABLE mkt_wap_accounts ADD COLUMN paused_from text
    CONSTRAINT mkt_wap_accounts_paused_from_check
    CHECK (paused_from IN ('inactive', 'warming', 'active', 'standby'));
