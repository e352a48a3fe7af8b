//! What a real browser rendered: `scripts/cluster/screenshot.sh` has headless Chromium (Debian's,
//! `scripts/install-tools.sh browser`) save a page's DOM after its scripts ran; the tests read
//! the text a user sees in it.

/// The text of an HTML document: tags removed, entities for `&<>"'` decoded, whitespace
/// collapsed (enough to look for names a page shows).
pub fn visible_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut in_tag = false;
    let mut skip_until: Option<&str> = None;
    let lower = html.to_ascii_lowercase();
    let mut i = 0;
    let bytes = html.as_bytes();
    while i < bytes.len() {
        if let Some(end) = skip_until {
            match lower[i..].find(end) {
                Some(off) => {
                    i += off + end.len();
                    skip_until = None;
                    continue;
                }
                None => break,
            }
        }
        let c = bytes[i] as char;
        if c == '<' {
            if lower[i..].starts_with("<script") {
                skip_until = Some("</script>");
            } else if lower[i..].starts_with("<style") {
                skip_until = Some("</style>");
            }
            in_tag = true;
            out.push(' ');
        } else if c == '>' && in_tag {
            in_tag = false;
        } else if !in_tag {
            let ch_len = html[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&html[i..i + ch_len]);
            i += ch_len;
            continue;
        }
        i += 1;
    }
    let decoded = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    decoded.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_text_drops_tags_scripts_and_styles() {
        let html = "<html><head><style>.a{}</style><script>var x = '<b>';</script></head>\
                    <body><div class=\"x\">producer</div><span>send&nbsp;messages &amp; more</span></body></html>";
        assert_eq!(visible_text(html), "producer send&nbsp;messages & more");
    }
}
