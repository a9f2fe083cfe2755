//! Maintenance kinds that run per account: logging in and out, and health checks.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{JobKind, JobPayload, ValidationError};

/// Verify an account's page state: logged in, phone known, no conflict/block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthCheckJob {
    /// The account to check.
    pub account_id: Uuid,
}

impl JobPayload for HealthCheckJob {
    const KIND: JobKind = JobKind::HealthCheck;

    fn validate(&self) -> Result<(), ValidationError> {
        Ok(())
    }
}

/// Drive an account's QR login flow until ready or a deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginJob {
    /// The account to log in.
    pub account_id: Uuid,
}

impl JobPayload for LoginJob {
    const KIND: JobKind = JobKind::Login;

    fn validate(&self) -> Result<(), ValidationError> {
        Ok(())
    }
}

/// Unlink an account's device: log out in WhatsApp Web through the account's
/// browser session, then delete its profile (made by an operator's
/// disconnect; the account then needs a new QR).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogoutJob {
    /// The account to unlink.
    pub account_id: Uuid,
}

impl JobPayload for LogoutJob {
    const KIND: JobKind = JobKind::Logout;

    fn validate(&self) -> Result<(), ValidationError> {
        Ok(())
    }
}
