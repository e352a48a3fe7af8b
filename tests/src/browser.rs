//! A real browser for the UI tests: Debian's Chromium, headless (`scripts/install-tools.sh
//! browser`). It renders a page as a user's browser would (JavaScript, XHRs to the same
//! origin) and gives back the DOM after rendering, or a screenshot.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::tools::Tools;

/// How much (virtual) time a page gets to load and render before the DOM or screenshot is taken.
const RENDER_BUDGET: Duration = Duration::from_secs(20);

/// Headless Chromium with a fresh profile per call.
#[derive(Debug, Clone)]
pub struct Browser {
    chromium: PathBuf,
}

impl Browser {
    pub fn new() -> Result<Browser> {
        Ok(Browser {
            chromium: Tools::load()?.path("CHROMIUM", "browser")?,
        })
    }

    fn command(&self, profile: &Path) -> Command {
        let mut cmd = Command::new(&self.chromium);
        // As root and without a display; no request leaves for Google's services (this
        // machine's network refuses them, and the page must not depend on them).
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1440,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={}", RENDER_BUDGET.as_millis()));
        cmd
    }

    /// The DOM of `url` after its scripts ran.
    pub fn rendered_dom(&self, url: &str) -> Result<String> {
        let profile = tempfile::Builder::new().prefix("journey-chromium-").tempdir()?;
        let out = self
            .command(profile.path())
            .arg("--dump-dom")
            .arg(url)
            .output()
            .context("running chromium")?;
        ensure!(
            out.status.success(),
            "chromium --dump-dom {url} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A PNG screenshot of `url` after its scripts ran.
    pub fn screenshot(&self, url: &str, png: &Path) -> Result<()> {
        let profile = tempfile::Builder::new().prefix("journey-chromium-").tempdir()?;
        if let Some(dir) = png.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let out = self
            .command(profile.path())
            .arg(format!("--screenshot={}", png.display()))
            .arg(url)
            .output()
            .context("running chromium")?;
        ensure!(
            out.status.success() && png.is_file(),
            "chromium --screenshot {url} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

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
