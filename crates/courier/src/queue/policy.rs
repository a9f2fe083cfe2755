//! What the domain plugs into the queue's claim, so the engine stays generic.
//!
//! The claim statement grants send slots; a domain may need to change its own
//! rows in the same statement (the message of a `send` job becomes `sending`
//! with its attempt start and event, so a slot and the status change commit
//! together or not at all). The queue does not know what that change is: the
//! domain hands it over as a [`Policy`], one SQL fragment owned by the module
//! that owns those rows (`crate::message::claim_fragment`).

/// Builds the extra common table expressions of a slot-granting statement.
///
/// Called with the name of a relation of the jobs just granted a slot
/// (columns `id`, `kind`, `payload`, `attempt`) and an SQL expression for the
/// instant the slot was granted at. Returns `name AS (…), …` without a leading
/// comma, or an empty string; its CTE names start with `policy_` so they never
/// clash with the queue's own.
pub(super) type SlotFragment = fn(jobs: &str, slot_at: &str) -> String;

/// The domain's additions to the queue's statements.
#[derive(Clone, Copy)]
pub struct Policy {
    /// Runs in the statement that grants send slots.
    pub on_slot: SlotFragment,
}

fn nothing(_: &str, _: &str) -> String {
    String::new()
}

impl Policy {
    /// No additions: the queue alone (tests of the engine, the benchmark).
    pub const NONE: Policy = Policy { on_slot: nothing };

    /// The fragment for `jobs` granted at `slot_at`, with a leading comma when
    /// not empty, ready to follow the queue's own CTEs.
    pub(crate) fn slot_ctes(&self, jobs: &str, slot_at: &str) -> String {
        let f = (self.on_slot)(jobs, slot_at);
        if f.trim().is_empty() {
            String::new()
        } else {
            format!(", {f}")
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::NONE
    }
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sample = (self.on_slot)("jobs", "now()");
        f.debug_struct("Policy")
            .field("on_slot", &if sample.is_empty() { "none" } else { "sql" })
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_policy_adds_nothing_to_the_statement() {
        assert_eq!(Policy::NONE.slot_ctes("claimed", "now()"), "");
    }

    #[test]
    fn a_policy_fragment_follows_the_queue_ctes_after_a_comma() {
        fn f(jobs: &str, at: &str) -> String {
            format!("policy_x AS (SELECT id, {at} FROM {jobs})")
        }
        let p = Policy { on_slot: f };
        assert_eq!(
            p.slot_ctes("claimed", "now()"),
            ", policy_x AS (SELECT id, now() FROM claimed)"
        );
    }
}
