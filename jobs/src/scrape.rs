//! `scrape`: read a group's participants and upsert `mkt_wap_contacts` and the
//! group's memberships. A rerun updates; it never duplicates.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{JobKind, JobPayload, ValidationError};

/// Scrape the participants of one group through one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScrapeJob {
    /// The account that reads the group (must be a member).
    pub account_id: Uuid,
    /// The row in `mkt_wap_groups`.
    pub group_id: Uuid,
}

impl JobPayload for ScrapeJob {
    const KIND: JobKind = JobKind::Scrape;

    fn validate(&self) -> Result<(), ValidationError> {
        Ok(())
    }
}
