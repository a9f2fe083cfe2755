//! The account status: one enum for the `mkt_wap_accounts.status` CHECK list
//! (a test compares the two), and the rule for whether an account can take
//! sends.
//!
//! The seed system's statuses (`inactive`, `warming`, `active`, `standby`,
//! `banned`) plus the ones a real lifecycle needs: the transient login
//! statuses (each with a deadline), `paused` (with a reason and an optional
//! resume time), `logged_out` (WhatsApp ended the session), `disconnected`
//! (an operator ended it), `failed`, and `retired` (taken out of service by an
//! operator, for good).

use std::fmt;
use std::str::FromStr;

/// An account's status.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, sqlx::Type,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum AccountStatus {
    /// Not logged in, nothing running.
    Inactive,
    /// The browser page is opening for a login (transient).
    Starting,
    /// A QR is on screen, waiting for the phone's scan (transient).
    QrPending,
    /// Scanned or restored; WhatsApp Web is loading (transient).
    Authenticating,
    /// Logged in and young: sends follow the warm-up ladder.
    Warming,
    /// Logged in and sending.
    Active,
    /// Kept in reserve by an operator.
    Standby,
    /// Paused by health or an operator, with a reason and maybe a resume time.
    Paused,
    /// The session was logged out: a new login (QR) is needed.
    LoggedOut,
    /// WhatsApp blocked the number: final.
    Banned,
    /// A login gave up (deadline, conflict, a number owned by another account).
    Failed,
    /// An operator disconnected it (`POST /v1/accounts/{id}/logout`): nothing
    /// runs until a new login. Unlike `logged_out` it raises no alert: it is
    /// what the operator asked for.
    Disconnected,
    /// Retired by an operator (`POST /v1/accounts/{id}/retire`): it never
    /// sends again, runs no job and is left out of the metrics. Final.
    Retired,
}

impl AccountStatus {
    /// Every status, in the order of the CHECK list.
    pub const ALL: [AccountStatus; 13] = [
        AccountStatus::Inactive,
        AccountStatus::Starting,
        AccountStatus::QrPending,
        AccountStatus::Authenticating,
        AccountStatus::Warming,
        AccountStatus::Active,
        AccountStatus::Standby,
        AccountStatus::Paused,
        AccountStatus::LoggedOut,
        AccountStatus::Banned,
        AccountStatus::Failed,
        AccountStatus::Disconnected,
        AccountStatus::Retired,
    ];

    /// The database value.
    pub const fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Inactive => "inactive",
            AccountStatus::Starting => "starting",
            AccountStatus::QrPending => "qr_pending",
            AccountStatus::Authenticating => "authenticating",
            AccountStatus::Warming => "warming",
            AccountStatus::Active => "active",
            AccountStatus::Standby => "standby",
            AccountStatus::Paused => "paused",
            AccountStatus::LoggedOut => "logged_out",
            AccountStatus::Banned => "banned",
            AccountStatus::Failed => "failed",
            AccountStatus::Disconnected => "disconnected",
            AccountStatus::Retired => "retired",
        }
    }

    /// Whether the status moves on by itself at `status_deadline`.
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            AccountStatus::Starting | AccountStatus::QrPending | AccountStatus::Authenticating
        )
    }

    /// Whether a resume may return the account here: a pause remembers the
    /// status it interrupted when it is one of these (`paused_from`).
    pub const fn is_resumable(self) -> bool {
        matches!(
            self,
            AccountStatus::Inactive
                | AccountStatus::Warming
                | AccountStatus::Active
                | AccountStatus::Standby
        )
    }

    /// Whether work queued on the account must move to another account: the
    /// account cannot send until a person acts (a ban and a retirement are
    /// final, a logout, a disconnect or a failed login needs a new QR).
    /// Pauses are decided with their resume time
    /// ([`crate::scheduler::assign`]).
    pub const fn is_unavailable(self) -> bool {
        matches!(
            self,
            AccountStatus::Banned
                | AccountStatus::LoggedOut
                | AccountStatus::Failed
                | AccountStatus::Disconnected
                | AccountStatus::Retired
        )
    }

    /// The SQL list of [`is_unavailable`](Self::is_unavailable) statuses,
    /// for statements that decide the same thing on the server.
    pub const UNAVAILABLE_SQL: &'static str =
        "('logged_out', 'banned', 'failed', 'disconnected', 'retired')";

    /// Whether the account is left out of the account gauges
    /// (`courier_accounts`, `courier_account_health_score`,
    /// `courier_account_status`): it is no longer part of the fleet, so
    /// nothing about it may keep an alert firing.
    pub const fn is_out_of_service(self) -> bool {
        matches!(self, AccountStatus::Retired)
    }
}

impl fmt::Display for AccountStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status word the database does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown account status `{0}`")]
pub struct UnknownStatus(pub String);

impl FromStr for AccountStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AccountStatus::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_database_word() {
        for s in AccountStatus::ALL {
            assert_eq!(s.as_str().parse::<AccountStatus>(), Ok(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::from(s.as_str())
            );
        }
        assert!("warm".parse::<AccountStatus>().is_err());
    }

    #[test]
    fn the_sql_list_names_exactly_the_unavailable_statuses() {
        let listed: Vec<&str> = AccountStatus::ALL
            .into_iter()
            .filter(|s| s.is_unavailable())
            .map(AccountStatus::as_str)
            .collect();
        let sql = format!("('{}')", listed.join("', '"));
        assert_eq!(sql, AccountStatus::UNAVAILABLE_SQL);
    }
}
