//! The baseline for `courier bench browser`: the way Courier drove WhatsApp
//! Web before it used the page's modules (issue 20) — clicking chat rows by a
//! simulator-only id, typing into the compose box, polling the message rows
//! for the tick, and scrolling the group-info drawer. Kept only to measure
//! the module driver against it in the same run; the product has no DOM path.

use std::time::{Duration, Instant};

use courier::browser::Selectors;
use courier::error::BoxError;
use fantoccini::{Client, Locator};
use serde_json::json;

async fn wait(c: &Client, css: &str) -> Result<fantoccini::elements::Element, BoxError> {
    let t = Instant::now();
    loop {
        if let Some(e) = c.find_all(Locator::Css(css)).await?.into_iter().next() {
            return Ok(e);
        }
        if t.elapsed() > Duration::from_secs(15) {
            return Err(format!("`{css}` never appeared").into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Opens a listed chat by clicking its row.
async fn open_row(c: &Client, sel: &Selectors, chat: &str) -> Result<(), BoxError> {
    let css = format!(
        "{}[{}=\"{}\"]",
        sel.chat_list.item, sel.chat_list.chat_id_attr, chat
    );
    wait(c, &css).await?.click().await?;
    wait(c, &sel.conversation.compose).await?;
    Ok(())
}

/// The outgoing rows' ids and icons, one script.
async fn outgoing(c: &Client, sel: &Selectors) -> Result<Vec<(String, String)>, BoxError> {
    let v = c
        .execute(
            "const s = arguments[0]; return Array.from(document.querySelectorAll(s.out)).map((r) => { \
               const i = r.querySelector(s.icon); return [r.getAttribute(s.id), i ? i.getAttribute(s.attr) : '']; });",
            vec![json!({ "out": sel.message.outgoing, "icon": sel.ack.icon, "id": sel.message.id_attr, "attr": sel.ack.icon_attr })],
        )
        .await?;
    Ok(serde_json::from_value(v)?)
}

/// Sends `text` to a listed chat the DOM way; returns once the row shows a tick.
pub(crate) async fn send_text(
    c: &Client,
    sel: &Selectors,
    chat: &str,
    text: &str,
) -> Result<String, BoxError> {
    open_row(c, sel, chat).await?;
    let before: Vec<String> = outgoing(c, sel).await?.into_iter().map(|r| r.0).collect();
    wait(c, &sel.conversation.compose)
        .await?
        .send_keys(text)
        .await?;
    wait(c, &sel.conversation.send_button)
        .await?
        .click()
        .await?;
    let t = Instant::now();
    loop {
        for (id, icon) in outgoing(c, sel).await? {
            if !before.contains(&id) && !icon.is_empty() && icon != sel.ack.pending_icon {
                return Ok(id);
            }
        }
        if t.elapsed() > Duration::from_secs(15) {
            return Err("no tick for the DOM send".into());
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

/// Counts a group's members the DOM way: open the info drawer and scroll
/// its lazily rendered list until the count shown is reached.
pub(crate) async fn member_rows(
    c: &Client,
    sel: &Selectors,
    group: &str,
) -> Result<usize, BoxError> {
    open_row(c, sel, group).await?;
    wait(c, &sel.conversation.header_title)
        .await?
        .click()
        .await?;
    wait(c, &sel.group_info.list).await?;
    let g = &sel.group_info;
    let args = json!({ "list": g.list, "row": g.participant, "count": g.member_count });
    let t = Instant::now();
    loop {
        let v = c
            .execute(
                "const s = arguments[0]; const l = document.querySelector(s.list); if (l) l.scrollTop = l.scrollHeight; \
                 const c = document.querySelector(s.count); const m = c ? c.innerText.match(/(\\d+)/) : null; \
                 return [m ? parseInt(m[1], 10) : null, document.querySelectorAll(s.row).length];",
                vec![args.clone()],
            )
            .await?;
        let (total, rows) = (v[0].as_u64(), v[1].as_u64().unwrap_or(0));
        if total.is_some_and(|t| rows >= t) {
            wait(c, &g.close_button).await?.click().await?;
            return Ok(rows as usize);
        }
        if t.elapsed() > Duration::from_secs(120) {
            return Err(format!("only {rows} member rows after 120 s").into());
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}
