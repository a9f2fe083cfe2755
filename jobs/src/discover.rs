//! `discover`: list an account's groups and upsert `mkt_wap_groups`, keeping
//! admin-set metadata (region, segment tags) intact.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{JobKind, JobPayload, ValidationError};

/// Discover the groups of `account_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiscoverJob {
    /// The account whose chat list is read.
    pub account_id: Uuid,
}

impl JobPayload for DiscoverJob {
    const KIND: JobKind = JobKind::Discover;

    fn validate(&self) -> Result<(), ValidationError> {
        Ok(())
    }
}
