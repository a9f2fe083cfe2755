//! The one way an error is printed: with its whole cause chain, once.
//!
//! Errors in Courier wrap their causes (`#[source]`/`#[from]`) without
//! repeating them in their own `Display`; a log site or the binary's edge
//! prints the chain through [`chain`], so every cause appears exactly once.

/// A boxed error for the edges (the binary, role wiring, the lab).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Renders an error with its causes on one line: `a: b: c`.
///
/// A cause whose text the chain already holds is skipped, so a wrapper that
/// does repeat its source (third-party errors do) is still printed once.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = s.source();
    }
    out.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("opening the session failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_names_every_cause_once_on_one_line() {
        let e = Outer(std::io::Error::other("chromedriver\nexited"));
        assert_eq!(chain(&e), "opening the session failed: chromedriver exited");
    }

    #[test]
    fn a_cause_already_in_the_text_is_not_repeated() {
        let e = std::io::Error::other(Outer(std::io::Error::other("disk full")));
        // io::Error's Display repeats its inner error; the chain skips the copy.
        assert_eq!(chain(&e), "opening the session failed: disk full");
    }
}
