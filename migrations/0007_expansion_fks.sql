-- Scheduler performance, part two (docs/benchmarks.md). Postgres checks a
-- foreign key with one internal query per inserted or updated row. On a
-- 100 000-contact expansion (EXPLAIN ANALYZE, "Trigger for constraint ...
-- calls=100000") the checks cost ~1.5 s of ~3.5 s. These four guard nothing
-- the code relies on, so they go:
--
-- - An event's message: events are append-only and written only by Courier,
--   in the statement or transaction that writes or locks their message, and
--   messages are never deleted.
-- - A contact's preferred account: a hint for the assigner, which ignores an
--   id it does not know (scheduler::assign). Courier never deletes accounts
--   (they change status).
-- - A message's contact and group: the message carries its own address
--   (`target_chat_id`), which is what is sent to; the ids are references for
--   reporting, like the campaign ids 0006 freed. The API checks a group id
--   before it stores it (it never takes a contact id), the scheduler copies
--   ids it read in the same transaction, every join to them is a LEFT JOIN,
--   and the keys stopped the campaign system from deleting a contact or group
--   row once Courier had messaged it.
--
-- What stays: a message's account and a job's account (the API's "unknown
-- account" error, the cascade when an operator deletes an account).
ALTER TABLE mkt_wap_message_events DROP CONSTRAINT IF EXISTS mkt_wap_message_events_message_id_fkey;
ALTER TABLE mkt_wap_contacts DROP CONSTRAINT IF EXISTS mkt_wap_contacts_preferred_account_id_fkey;
ALTER TABLE mkt_wap_messages DROP CONSTRAINT IF EXISTS mkt_wap_messages_target_contact_id_fkey;
ALTER TABLE mkt_wap_messages DROP CONSTRAINT IF EXISTS mkt_wap_messages_target_group_id_fkey;
