-- How many send attempts a message has had since it was created or an
-- operator last retried it, across all of its jobs (the first send job's
-- attempts and any retry job's). Counted by the claim that grants a send slot
-- (the message moving to `sending`). A message whose failures are transient
-- stops at `delivery.max_attempts` (3 by default) instead of reaching every
-- job's attempts times every sweep retry (up to 12 before this column).
ALTER TABLE mkt_wap_messages ADD COLUMN send_attempts integer NOT NULL DEFAULT 0
    CONSTRAINT mkt_wap_messages_send_attempts_check CHECK (send_attempts >= 0);
