//! Dockerfile.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use journey_tests::chart::{output, text};
use journey_tests::repo_root;
use journey_tests::tools::Tools;

use crate::Instructions;

/// A Dockerfile as (instruction, arguments) with continuations joined and comments dropped.
pub(crate) fn parse_dockerfile(path: &Path) -> Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if t.starts_with('#') {
            continue;
        }
        if let Some(cont) = t.strip_suffix('\\') {
            current.push_str(cont);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (instr, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((current.as_str(), ""));
        out.push((instr.to_uppercase(), args.trim().to_string()));
        current.clear();
    }
    Ok(out)
}

pub(crate) fn dockerfile_stages(instrs: &[(String, String)]) -> BTreeSet<String> {
    instrs
        .iter()
        .filter(|(i, _)| i == "FROM")
        .filter_map(|(_, a)| {
            let words: Vec<&str> = a.split_whitespace().collect();
            words
                .iter()
                .position(|w| w.eq_ignore_ascii_case("as"))
                .and_then(|p| words.get(p + 1))
                .map(|s| s.to_string())
        })
        .collect()
}

pub(crate) fn the_dockerfile_builds_every_binary_locked_into_nonroot_distroless_stages(
    _: &(),
) -> Result<()> {
    // hadolint first (its rules, minus the ignores .hadolint.yaml justifies).
    let hadolint = Tools::load()?
        .path("HADOLINT", "hadolint")
        .context("hadolint is not installed: run scripts/install-tools.sh hadolint")?;
    let out = output(
        Command::new(hadolint)
            .args(["--no-color", "--config"])
            .arg(repo_root().join(".hadolint.yaml"))
            .arg(repo_root().join("Dockerfile")),
    )?;
    ensure!(
        out.status.success(),
        "hadolint reports:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // A `# syntax=` line makes BuildKit pull a frontend image: no registry is reachable here,
    // and the builder's own frontend has everything the Dockerfile uses.
    let raw = std::fs::read_to_string(repo_root().join("Dockerfile"))?;
    ensure!(
        !raw.lines()
            .any(|l| l.trim_start().to_lowercase().starts_with("# syntax=")),
        "the Dockerfile names a frontend image (# syntax=)"
    );
    let instrs = parse_dockerfile(&repo_root().join("Dockerfile"))?;
    // Stages: name → (base, instructions).
    let mut args = BTreeMap::new();
    let mut stages: Vec<(String, String, Instructions)> = Vec::new();
    for (instr, a) in &instrs {
        match instr.as_str() {
            "ARG" if stages.is_empty() => {
                if let Some((k, v)) = a.split_once('=') {
                    args.insert(format!("${{{k}}}"), v.to_string());
                }
            }
            "FROM" => {
                let words: Vec<&str> = a
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let base = words
                    .first()
                    .map(|b| args.get(*b).cloned().unwrap_or(b.to_string()))
                    .unwrap_or_default();
                let name = words.get(2).map(|s| s.to_string()).unwrap_or_default();
                ensure!(
                    words.get(1).is_some_and(|w| w.eq_ignore_ascii_case("AS")) && !name.is_empty(),
                    "unnamed stage: FROM {a}"
                );
                stages.push((name, base, Vec::new()));
            }
            _ => stages
                .last_mut()
                .context("instruction before FROM")?
                .2
                .push((instr.clone(), a.clone())),
        }
    }
    let stage = |n: &str| stages.iter().find(|(name, _, _)| name == n);
    // The chain of a stage back to its external base image.
    let chain = |n: &str| {
        let mut out = Vec::new();
        let mut cur = stage(n);
        while let Some(st) = cur {
            out.push(st);
            cur = stage(&st.1);
        }
        out
    };
    let root = repo_root();
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).context(".dockerignore")?;
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for must in ["target/", ".git/"] {
        ensure!(
            ignored.contains(&must),
            ".dockerignore does not exclude {must}"
        );
    }
    let mut cargo_build = false;
    for (name, _, body) in &stages {
        for (instr, a) in body {
            if instr == "COPY" || instr == "ADD" {
                let words: Vec<&str> = a.split_whitespace().collect();
                if let Some(from) = words.iter().find_map(|w| w.strip_prefix("--from=")) {
                    ensure!(
                        stage(from).is_some(),
                        "{name}: COPY --from={from}: no such stage"
                    );
                } else {
                    let srcs = &words[..words.len().saturating_sub(1)];
                    for src in srcs.iter().filter(|w| !w.starts_with("--")) {
                        ensure!(
                            root.join(src).exists(),
                            "{name}: COPY source {src} does not exist"
                        );
                        ensure!(
                            !ignored
                                .iter()
                                .any(|p| p.trim_end_matches('/') == src.trim_end_matches('/')),
                            "{name}: COPY source {src} is excluded by .dockerignore"
                        );
                    }
                }
            }
            if instr == "RUN" && a.contains("cargo build") {
                for flag in ["--release", "--locked", "--mount=type=cache"] {
                    ensure!(a.contains(flag), "{name}: cargo build without {flag}");
                }
                cargo_build = true;
            }
        }
    }
    ensure!(cargo_build, "no `cargo build` in the Dockerfile");
    // The binaries link the builder's glibc: the runtime must be the same Debian release.
    let builder_base = &chain("builder").last().context("builder stage")?.1;
    let runtime_base = &chain("producer").last().context("producer stage")?.1;
    let pairs = [("bookworm", "debian12"), ("trixie", "debian13")];
    ensure!(
        pairs
            .iter()
            .any(|(b, r)| builder_base.contains(b) && runtime_base.contains(r)),
        "builder {builder_base} and runtime {runtime_base} are not the same Debian release"
    );
    for bin in ["producer", "consumer", "journeyctl"] {
        let st = stage(bin).with_context(|| format!("no stage {bin} (skaffold's --target)"))?;
        let links = chain(bin);
        let base = &links.last().context("chain")?.1;
        ensure!(
            base.contains("distroless/cc") && base.ends_with(":nonroot"),
            "{bin}: runtime base {base} is not distroless cc nonroot"
        );
        let user = links
            .iter()
            .flat_map(|s| s.2.iter())
            .find(|(i, _)| i == "USER")
            .map(|(_, a)| a.clone());
        ensure!(
            user.as_deref() == Some("65532:65532"),
            "{bin}: USER is {user:?}, expected the numeric nonroot 65532:65532"
        );
        let dest = format!("/usr/local/bin/{bin}");
        ensure!(
            st.2.iter()
                .any(|(i, a)| i == "COPY" && a.starts_with("--from=builder") && a.ends_with(&dest)),
            "{bin}: does not copy the binary to {dest}"
        );
        ensure!(
            st.2.iter()
                .any(|(i, a)| i == "ENTRYPOINT" && a.replace(' ', "") == format!("[\"{dest}\"]")),
            "{bin}: ENTRYPOINT is not exec-form [\"{dest}\"]"
        );
        ensure!(
            !st.2.iter().any(|(i, _)| i == "RUN"),
            "{bin}: a RUN in a runtime stage (distroless has no shell)"
        );
    }
    Ok(())
}
