-- Scheduler performance: a 100 000-contact schedule must expand in well under
-- 3 s (docs/benchmarks.md). Postgres checks a foreign key row by row (one
-- internal query per inserted row and constraint), and those checks were the
-- largest single cost of a bulk expansion. See docs/schema.md, "Foreign keys
-- to campaign-system tables".

-- Messages no longer carry foreign keys into the campaign system's tables.
-- Those tables are owned by the campaign system (Courier only reads them), the
-- scheduler copies the ids from the schedule row it holds locked in the same
-- transaction, and the API checks a campaign/content id before it stores it.
-- The keys also stopped the campaign system from deleting its own rows once
-- Courier had sent anything for them. Courier's own keys (account, group,
-- contact, and the events' message) stay.
ALTER TABLE mkt_wap_messages DROP CONSTRAINT IF EXISTS mkt_wap_messages_campaign_id_fkey;
ALTER TABLE mkt_wap_messages DROP CONSTRAINT IF EXISTS mkt_wap_messages_content_id_fkey;
ALTER TABLE mkt_wap_messages DROP CONSTRAINT IF EXISTS mkt_wap_messages_schedule_id_fkey;

-- Room on each contacts page for its rows' next versions. The first campaign
-- to reach a contact stores the account it got as `preferred_account_id`, and
-- a 100 000-contact expansion does that for every row in one transaction. With
-- full pages every such update moved the row to another page and added an
-- entry to each of the table's five indexes (two of them GIN); with room on
-- the page it is a HOT update that touches no index (no indexed column
-- changes), about half the cost. The old versions stay on the page until the
-- transaction ends, so the room must hold a whole page of new versions:
-- fillfactor 45 (the table takes about twice the space, a few tens of MB per
-- 100 000 contacts). New pages get it at once; existing ones as the table is
-- rewritten (VACUUM FULL or pg_repack, in a maintenance window).
ALTER TABLE mkt_wap_contacts SET (fillfactor = 45);
