-- Named API tokens, replacing the one shared `api.token` (which stays as the
-- bootstrap / break-glass credential, held in memory as a hash only).
--
-- Only the SHA-256 of each secret is stored: the secret is 32 random bytes,
-- so a fast hash is enough (nothing to brute-force, unlike a password), and
-- a stolen table grants nothing. `prefix` is the first characters of the
-- secret, for people to tell tokens apart; it is not enough to use one.
-- A name is unique among the tokens not revoked, so a revoked name can be
-- reused. `account_id`: the one account the token may touch (NULL: all).
-- `last_used_at` is written at most about once a minute per token, not on
-- every request.
CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name         text NOT NULL
                 CONSTRAINT api_tokens_name_check
                 CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    prefix       text NOT NULL,
    secret_hash  bytea NOT NULL
                 CONSTRAINT api_tokens_secret_hash_check CHECK (octet_length(secret_hash) = 32),
    scopes       text[] NOT NULL
                 CONSTRAINT api_tokens_scopes_check
                 CHECK (cardinality(scopes) >= 1 AND scopes <@ ARRAY['read', 'enqueue', 'admin']),
    account_id   uuid REFERENCES mkt_wap_accounts (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- Every authenticated request looks its token up by hash.
CREATE UNIQUE INDEX api_tokens_secret_hash_key ON api_tokens (secret_hash);
CREATE UNIQUE INDEX api_tokens_live_name_key ON api_tokens (name) WHERE revoked_at IS NULL;

-- The key that signs login-page links, shared by every API replica: made
-- once (32 random bytes) by the first replica that needs it. Deleting the
-- row invalidates every outstanding link; the next replica start makes a
-- new one.
CREATE TABLE api_link_keys (
    id         smallint PRIMARY KEY CONSTRAINT api_link_keys_one_row CHECK (id = 1),
    key        bytea NOT NULL CONSTRAINT api_link_keys_key_check CHECK (octet_length(key) = 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
