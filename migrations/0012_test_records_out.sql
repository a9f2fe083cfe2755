-- `queue_handler_records` was the test kit's table (what the `noop-record`
-- handler saw), shipped by mistake in the production migration 0002. Shipped
-- migrations are never edited (docs/schema.md), so this one removes it; the
-- test kit creates its own copy in test databases (crates/testkit).
DROP TABLE IF EXISTS queue_handler_records;
