-- Contacts as marketing uses them (`/v1/contacts`): when and why a contact
-- opted out, so an opt-out can be shown and audited, and the lookups the
-- send path makes to refuse a message to an opted-out contact.
--
-- `opted_out` (0001) stays the one flag every path reads; these columns say
-- when it was set and why. Opting back in clears them.
ALTER TABLE mkt_wap_contacts
    ADD COLUMN IF NOT EXISTS opted_out_at timestamptz,
    ADD COLUMN IF NOT EXISTS opt_out_reason text
        CONSTRAINT mkt_wap_contacts_opt_out_reason_check
        CHECK (length(opt_out_reason) <= 500);

-- The list filters on opt-out: a partial index keeps it small (most contacts
-- never opt out).
CREATE INDEX IF NOT EXISTS mkt_wap_contacts_opted_out_idx
    ON mkt_wap_contacts (id) WHERE opted_out;
