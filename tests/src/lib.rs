//! Journey's test harness: the real stack as local processes on 127.0.0.1.
//!
//! - [`process`]: child processes in their own process group, logs captured to files,
//!   killed on drop, on panic and when the harness dies; a PID ledger proves it.
//! - [`browser`]: headless Chromium, for what a user sees in the Zipkin UI.
//! - [`chart`]: the Helm chart rendered by Helm, and the pods, containers and environment in it.
//! - [`ledger`]: every process and host resource the harness creates, for the teardown proof;
//!   [`host`]: the mounts and processes it inspects.
//! - [`docker`]: a private Docker daemon (its own socket, exec root and data root) for the image
//!   and kind tests; [`runc_bounds`]: the runtime it starts containers with.
//! - [`kind`]: a real kind cluster on that daemon, created by the `kind` CLI.
//! - [`kube`]: kubectl, Helm and port-forwards against a cluster (the control plane or kind).
//! - [`load`]: a load of POSTs that notes every acked message.
//! - [`registry`]: a local OCI registry, as kind's local-registry guide runs one.
//! - [`tools`]: where `scripts/install-tools.sh` put each tool.
//! - [`stack`]: Kafka (KRaft), the OpenTelemetry Collector and Zipkin, each with a readiness
//!   check that means ready.
//! - [`zipkin`]: a small client for Zipkin's query API.
//! - [`controlplane`]: a real Kubernetes control plane (etcd, kube-apiserver; optionally
//!   controller-manager, scheduler and kwok with a fake node) for the chart tests.
//! - [`wait`]: waiting with a deadline (on `backon`), written once.
//! - [`runner`]: the custom test main every integration test binary uses: one stack per binary,
//!   named tests, component logs printed when a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod bench;
pub mod browser;
pub mod chart;
pub mod controlplane;
pub mod docker;
pub mod host;
pub mod kind;
pub mod kube;
pub mod ledger;
pub mod load;
pub mod process;
pub mod registry;
pub mod runc_bounds;
pub mod runner;
pub mod services;
pub mod stack;
pub mod tools;
pub mod wait;
pub mod zipkin;

/// The repository root (the workspace this crate belongs to).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Copies the working tree (tracked and new files, not ignored ones) to `to`, keeping each
/// file's modification time: a build there sees only what a test then changes as new (cargo
/// decides what to recompile by modification times).
pub fn copy_worktree(to: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let root = repo_root();
    let out = std::process::Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(&root)
        .output()
        .context("git ls-files")?;
    anyhow::ensure!(out.status.success(), "git ls-files failed");
    for rel in out.stdout.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let rel = std::path::Path::new(std::str::from_utf8(rel)?);
        let src = root.join(rel);
        if !src.is_file() {
            continue;
        }
        let dst = to.join(rel);
        std::fs::create_dir_all(dst.parent().context("a file without a parent")?)?;
        std::fs::copy(&src, &dst)?;
        let modified = std::fs::metadata(&src)?.modified()?;
        std::fs::File::options()
            .write(true)
            .open(&dst)?
            .set_modified(modified)?;
    }
    Ok(())
}

/// The change a developer makes in the tree at `tree` (a copy of the worktree): the producer's
/// start-up log line becomes `producer listening <suffix>`.
pub fn change_producer_start_line(tree: &std::path::Path, suffix: &str) -> anyhow::Result<()> {
    let lib = tree.join("services/producer/src/lib.rs");
    let text = std::fs::read_to_string(&lib)?;
    anyhow::ensure!(
        text.contains("\"producer listening\""),
        "the producer's start-up log line moved"
    );
    std::fs::write(
        &lib,
        text.replace(
            "\"producer listening\"",
            &format!("\"producer listening {suffix}\""),
        ),
    )?;
    Ok(())
}

/// Prints a harness line to stderr (so it shows with `--nocapture` and in CI logs).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        eprintln!("[harness] {}", format!($($arg)*));
    }};
}
