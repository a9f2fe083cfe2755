-- Two account statuses an operator's action leads to:
--   `disconnected`: an operator disconnected the account (POST
--     /v1/accounts/{id}/logout). It needs a new login, like `logged_out`, but
--     it is what the operator asked for, so it raises no alert (`logged_out`
--     now means WhatsApp ended the session). Accounts an operator
--     disconnected before this migration (the reason says so) become
--     `disconnected` here, so their alert stops.
--   `retired`: an operator took the account out of service for good (POST
--     /v1/accounts/{id}/retire): it runs no job, and it is left out of the
--     account gauges so no alert keeps firing for it. Final.
ALTER TABLE mkt_wap_accounts DROP CONSTRAINT mkt_wap_accounts_status_check;
ALTER TABLE mkt_wap_accounts ADD CONSTRAINT mkt_wap_accounts_status_check
    CHECK (status IN ('inactive', 'starting', 'qr_pending', 'authenticating', 'warming',
                      'active', 'standby', 'paused', 'logged_out', 'banned', 'failed',
                      'disconnected', 'retired'));
UPDATE mkt_wap_accounts SET status = 'disconnected'
 WHERE status = 'logged_out' AND status_reason = 'disconnected by an admin';
