-- Retention of the event log and of webhook deliveries, and secret rotation
-- (issue 23). See docs/webhooks.md.

-- The pruner keeps an event while a delivery still needs it: a pending one
-- (to send it) or a dead letter (to replay it). It asks per event, by
-- position; the primary key starts with the subscription.
CREATE INDEX webhook_deliveries_held_idx ON webhook_deliveries (position)
    WHERE status IN ('pending', 'dead');
-- Delivered rows leave `webhooks.retain_delivered` after delivery, oldest
-- first (dead letters by the existing webhook_deliveries_dead_idx).
CREATE INDEX webhook_deliveries_delivered_idx ON webhook_deliveries (delivered_at)
    WHERE status = 'delivered';

-- Rotation: the secret a rotation replaced keeps signing (beside the new
-- one) until `previous_secret_expires_at`; never returned by the API.
ALTER TABLE webhook_subscriptions
    ADD COLUMN previous_secret text CHECK (previous_secret LIKE 'whsec_%'),
    ADD COLUMN previous_secret_expires_at timestamptz,
    ADD COLUMN secret_rotated_at timestamptz,
    ADD CONSTRAINT webhook_subscriptions_previous_secret_expires
        CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL));
