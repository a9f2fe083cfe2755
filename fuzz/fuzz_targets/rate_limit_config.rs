//! An account's `rate_limit_config` JSON: resolves or names the bad key.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let defaults = courier::config::Settings::defaults().budget.limits();
    match defaults.resolve(&v) {
        Ok(l) => {
            let _ = l.effective(3, &[5, 10], 50, 60);
        }
        Err(courier::account::budget::BudgetError::Config { key, problem }) => {
            assert!(!key.is_empty() && !problem.is_empty());
        }
    }
});
