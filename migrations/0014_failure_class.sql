-- Why a failed message failed, as far as retrying goes: `permanent` (bad
-- media, an unknown chat or a number not on WhatsApp: another attempt would
-- fail the same way and spend a budget slot and health) or `transient`
-- (anything that may pass next time). The retry sweep retries transient
-- failures only; an operator can still retry any failed message by hand.
-- NULL: not failed, or failed before this migration (treated as transient,
-- as before).
ALTER TABLE mkt_wap_messages ADD COLUMN failure_class text
    CONSTRAINT mkt_wap_messages_failure_class_check
    CHECK (failure_class IN ('permanent', 'transient'));
