-- Which of the previous system's linked browser profiles (whatsapp-web.js
-- LocalAuth folders) went to which account: written by `courier
-- import-sessions`, one row per profile taken over. It is also how a second
-- run knows there is nothing left to do. See docs/migration.md.
CREATE TABLE mkt_wap_session_imports (
    account_id   uuid PRIMARY KEY REFERENCES mkt_wap_accounts (id) ON DELETE CASCADE,
    -- The LocalAuth folder as found (`<dataPath>/session-<clientId>`), and
    -- its client id (NULL for the bare `session` folder).
    source_path  text NOT NULL,
    client_id    text,
    matched_by   text NOT NULL
        CONSTRAINT mkt_wap_session_imports_matched_by_check
        CHECK (matched_by IN ('session_storage_path', 'client_id')),
    -- Where Courier keeps it now (`<browser.profiles_dir>/<account id>`).
    profile_dir  text NOT NULL,
    files        bigint NOT NULL CHECK (files >= 0),
    bytes        bigint NOT NULL CHECK (bytes >= 0),
    -- A digest of the session's files when it was copied.
    fingerprint  text NOT NULL,
    -- Whether a sealed snapshot was stored too (browser.session_key set).
    snapshot     boolean NOT NULL,
    imported_at  timestamptz NOT NULL DEFAULT now()
);
