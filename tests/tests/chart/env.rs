//! The services' and journeyctl's environment.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use journey_tests::chart::{
    CI_VALUES, PodFacts, containers, output, pods, render_ci, resolve_env, s, seq, text,
};
use journey_tests::say;
use serde::Deserialize;

use crate::expansion_helpers;

/// Where the workspace's binaries are: next to this test's directory (target/<profile>/).
fn binaries_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("test exe has a parent")?.to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

#[derive(Debug, Deserialize)]
struct PrintedConfig {
    #[allow(dead_code)]
    config: serde_json::Value,
    accepted_env: Vec<String>,
}

fn print_config(bin: &str, args: &[String], env: &[(String, String)]) -> Result<PrintedConfig> {
    let exe = binaries_dir()?.join(bin);
    ensure!(
        exe.exists(),
        "{} is missing: build the workspace's binaries first (`cargo build --workspace --bins`; `cargo test --workspace` builds them too)",
        exe.display()
    );
    let out = output(
        Command::new(&exe)
            .args(args)
            .arg("--print-config")
            .env_clear()
            .envs(env.iter().cloned()),
    )?;
    let shown = format!("{bin} {} --print-config", args.join(" "));
    ensure!(
        out.status.success(),
        "`{shown}` with the chart's environment failed ({}): does {bin} support --print-config yet, and does it accept this environment?\nstderr: {}",
        out.status,
        text(&out.stderr).trim()
    );
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "`{shown}` printed no {{\"config\":…, \"accepted_env\":[…]}} JSON: {}",
            text(&out.stdout).trim()
        )
    })
}

pub(crate) fn every_variable_the_chart_sets_is_accepted_by_its_binary_and_print_config_succeeds(
    _: &(),
) -> Result<()> {
    let mut problems = Vec::new();
    let mut checked = 0;
    for values in CI_VALUES {
        let docs = render_ci(values)?;
        for (owner, _, pod) in pods(&docs) {
            for c in containers(pod) {
                let image = s(&c["image"]);
                let repo = image.rsplit_once(':').map(|(r, _)| r).unwrap_or(image);
                let Some(bin) = ["producer", "consumer", "journeyctl"]
                    .into_iter()
                    .find(|b| repo.ends_with(&format!("/{b}")))
                else {
                    continue;
                };
                let where_ = format!("ci/{values} {owner} container {}", s(&c["name"]));
                let env = resolve_env(
                    c,
                    &PodFacts::named(&format!("{}-0", owner.split('/').nth(1).unwrap_or("pod"))),
                )?;
                let args: Vec<String> = seq(&c["args"]).iter().map(|a| s(a).to_string()).collect();
                checked += 1;
                match print_config(bin, &args, &env) {
                    Err(e) => problems.push(format!("{where_}: {e:#}")),
                    Ok(printed) => {
                        let accepted: BTreeSet<&str> =
                            printed.accepted_env.iter().map(String::as_str).collect();
                        let helpers = expansion_helpers(c);
                        for (name, _) in &env {
                            if !accepted.contains(name.as_str()) && !helpers.contains(name) {
                                problems.push(format!(
                                    "{where_}: sets {name}, which {bin} does not accept"
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    ensure!(
        checked > 0,
        "no producer/consumer/journeyctl container found in the rendered chart"
    );
    ensure!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    say!("env contract: {checked} containers checked against their binaries");
    Ok(())
}
