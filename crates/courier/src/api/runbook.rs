//! `GET /runbook`: the operations guide (`docs/operations.md`, built into the
//! binary) as a page whose headings carry GitHub-style anchors, so an alert's
//! `runbook_url` (`…/runbook#scheduler-lag`) opens the section for the
//! version that runs. Open like `/openapi.json`: it holds no secret.

use axum::response::Html;

/// The operations guide, as built in.
pub const OPERATIONS_MD: &str = include_str!("../../../../docs/operations.md");

/// The anchor GitHub (and GitLab) give a heading: lower case, punctuation
/// other than `-` and `_` dropped, spaces to `-`.
pub fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every heading's anchor in `markdown`, in order (a repeated heading gets
/// `-1`, `-2`, … as on GitHub). Lines inside code fences are not headings.
pub fn anchors(markdown: &str) -> Vec<String> {
    headings(markdown).into_iter().map(|h| h.2).collect()
}

/// (line index, level, anchor, text) of each heading.
fn headings(markdown: &str) -> Vec<(usize, usize, String, String)> {
    let mut out: Vec<(usize, usize, String, String)> = Vec::new();
    let mut fenced = false;
    for (i, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let level = line.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&level) || !line[level..].starts_with(' ') {
            continue;
        }
        let text = line[level..].trim().to_string();
        let base = slug(&text);
        let seen = out.iter().filter(|h| slug(&h.3) == base).count();
        let anchor = if seen == 0 {
            base
        } else {
            format!("{base}-{seen}")
        };
        out.push((i, level, anchor, text));
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page: each heading an `<hN id=anchor>`, the text between them as
/// preformatted Markdown (readable as it is).
pub fn page(markdown: &str) -> String {
    let heads = headings(markdown);
    let lines: Vec<&str> = markdown.lines().collect();
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Courier runbook</title>\
         <style>body{font-family:sans-serif;max-width:60em;margin:auto;padding:1em}\
         pre{white-space:pre-wrap;font-family:inherit}</style></head><body>",
    );
    let mut next = 0;
    let mut text = String::new();
    let flush = |out: &mut String, text: &mut String| {
        if !text.trim().is_empty() {
            out.push_str("<pre>");
            out.push_str(&escape(text.trim_matches('\n')));
            out.push_str("</pre>");
        }
        text.clear();
    };
    for (i, line) in lines.iter().enumerate() {
        if let Some((_, level, anchor, heading)) = heads.get(next).filter(|h| h.0 == i) {
            flush(&mut out, &mut text);
            out.push_str(&format!(
                "<h{level} id=\"{}\">{}</h{level}>",
                escape(anchor),
                escape(heading)
            ));
            next += 1;
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    flush(&mut out, &mut text);
    out.push_str("</body></html>");
    out
}

/// Serves [`page`] of the built-in operations guide.
pub(crate) async fn serve() -> Html<String> {
    Html(page(OPERATIONS_MD))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_are_github_slugs() {
        let md = "# Operations\n## Alerts: what they mean, what to do\n```\n# not a heading\n```\n\
                  ### Worker down\n### Worker down\n#nospace\n";
        assert_eq!(
            anchors(md),
            [
                "operations",
                "alerts-what-they-mean-what-to-do",
                "worker-down",
                "worker-down-1"
            ]
        );
        let html = page(md);
        assert!(
            html.contains("<h3 id=\"worker-down-1\">Worker down</h3>"),
            "{html}"
        );
        assert!(html.contains("# not a heading"));
    }
}
