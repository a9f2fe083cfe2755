//! The scheduler: turns due `mkt_con_schedule` rows into send jobs, exactly
//! once per target and occurrence, and runs periodic maintenance.

pub mod occurrence;
