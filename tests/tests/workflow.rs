//! The kind workflow (`.github/workflows/kind.yaml`) runs only on GitHub; here the kind tests
//! run the same commands on a real kind cluster, and the workflow is checked: actionlint reads
//! it (with shellcheck on its `run:` scripts); shellcheck reads every script the workflow and the
//! tests share; and the workflow must pin the kind the tests run and run the commands and
//! cluster scripts they run.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use journey_tests::process::run_ok;
use journey_tests::runner;
use journey_tests::tools::Tools;
use journey_tests::{repo_root, tests};

fn main() -> std::process::ExitCode {
    runner::main(
        || Ok(()),
        tests![
            the_workflows_pass_actionlint_with_shellcheck,
            every_script_the_workflow_and_the_tests_run_passes_shellcheck,
            the_kind_workflow_pins_the_tested_kind_and_runs_what_the_kind_tests_run,
        ],
    )
}

fn workflows() -> Result<Vec<PathBuf>> {
    let dir = repo_root().join(".github/workflows");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    out.sort();
    ensure!(!out.is_empty(), "no workflow in {}", dir.display());
    Ok(out)
}

fn the_workflows_pass_actionlint_with_shellcheck(_: &()) -> Result<()> {
    let tools = Tools::load()?;
    let actionlint = tools.path("ACTIONLINT", "actionlint")?;
    let shellcheck = tools.path("SHELLCHECK", "actionlint")?;
    run_ok(
        "actionlint",
        Command::new(actionlint)
            .arg("-shellcheck")
            .arg(shellcheck)
            .arg("-no-color")
            .args(workflows()?)
            .current_dir(repo_root()),
    )?;
    Ok(())
}

/// The shell scripts of the project: scripts/ (the installer, images, cluster scripts, tests).
fn scripts() -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![repo_root().join("scripts")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir)?.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "sh") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn every_script_the_workflow_and_the_tests_run_passes_shellcheck(_: &()) -> Result<()> {
    let shellcheck = Tools::load()?.path("SHELLCHECK", "actionlint")?;
    let scripts = scripts()?;
    ensure!(scripts.len() > 5, "found only {scripts:?}");
    run_ok(
        "shellcheck",
        Command::new(shellcheck)
            .args(["--external-sources", "--severity=warning", "--format=gcc"])
            .args(&scripts)
            .current_dir(repo_root()),
    )?;
    Ok(())
}

fn the_kind_workflow_pins_the_tested_kind_and_runs_what_the_kind_tests_run(_: &()) -> Result<()> {
    let workflow = std::fs::read_to_string(repo_root().join(".github/workflows/kind.yaml"))?;
    let versions = std::fs::read_to_string(repo_root().join("tools/versions.env"))?;
    let kind = versions
        .lines()
        .find_map(|l| l.strip_prefix("KIND_VERSION="))
        .context("no KIND_VERSION in tools/versions.env")?;
    ensure!(
        workflow.contains(&format!("go install sigs.k8s.io/kind@v{kind}")),
        "the kind workflow does not install the kind the tests run (v{kind})"
    );
    let dir = repo_root().join("tests/tests/kind");
    let mut tests = String::new();
    for entry in std::fs::read_dir(&dir)? {
        tests.push_str(&std::fs::read_to_string(entry?.path())?);
    }
    for line in [
        "kind create cluster --config k8s/kind.yaml",
        "kind load docker-image journey/producer:0.1.0 journey/consumer:0.1.0 journey/journeyctl:0.1.0 --name journey",
    ] {
        ensure!(
            workflow.contains(line),
            "the kind workflow does not run `{line}`"
        );
        ensure!(tests.contains(line), "the kind tests do not run `{line}`");
    }
    for script in ["install.sh", "journey.sh", "screenshot.sh"] {
        ensure!(
            workflow.contains(&format!("scripts/cluster/{script}")),
            "the kind workflow does not run scripts/cluster/{script}"
        );
        ensure!(
            tests.contains(&format!("\"{script}\""))
                || tests.contains(&format!("cluster/{script}")),
            "the kind tests do not run scripts/cluster/{script}"
        );
    }
    ensure!(
        workflow.contains("scripts/images.sh journey"),
        "the kind workflow does not build the images with scripts/images.sh"
    );
    Ok(())
}
