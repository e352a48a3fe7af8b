//! Generated files are what their generators make now: k8s/ (scripts/render-k8s.sh) and the
//! chart README (helm-docs, from the `# --` comments in values.yaml).

use std::process::Command;

use anyhow::{Result, bail, ensure};
use journey_tests::chart::{
    NAMESPACE, all, chart_dir, helm, kind_of, name_of, output, parse_docs, s, text,
};
use journey_tests::repo_root;
use journey_tests::tools::Tools;
use yaml_serde::Value;

pub(crate) fn the_k8s_manifests_are_what_render_k8s_renders_now(_: &()) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = output(
        Command::new(repo_root().join("scripts/render-k8s.sh"))
            .arg(dir.path())
            .env("HELM", helm()?),
    )?;
    ensure!(
        out.status.success(),
        "scripts/render-k8s.sh failed: {}",
        text(&out.stderr)
    );
    let fresh = std::fs::read_to_string(dir.path().join("journey.yaml"))?;
    let committed =
        std::fs::read_to_string(repo_root().join("k8s/journey.yaml")).unwrap_or_default();
    if fresh != committed {
        let line = fresh
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1);
        bail!(
            "k8s/journey.yaml is stale (first difference at line {}): run scripts/render-k8s.sh",
            line.map(|l| l.to_string())
                .unwrap_or_else(|| "end of file".into())
        );
    }
    let docs = parse_docs(&fresh)?;
    ensure!(
        kind_of(&docs[0]) == "Namespace" && name_of(&docs[0]) == NAMESPACE,
        "k8s/journey.yaml starts with the Namespace"
    );
    ensure!(
        all(&docs, "Pod").is_empty(),
        "k8s/journey.yaml holds the helm test pod"
    );
    let kind: Value =
        yaml_serde::from_str(&std::fs::read_to_string(repo_root().join("k8s/kind.yaml"))?)?;
    ensure!(
        s(&kind["kind"]) == "Cluster" && s(&kind["name"]) == "journey",
        "k8s/kind.yaml: a Cluster named journey"
    );
    Ok(())
}

pub(crate) fn the_chart_readme_is_what_helm_docs_generates_from_values_yaml_now(
    _: &(),
) -> Result<()> {
    let helm_docs = Tools::load()?.path("HELM_DOCS", "helm-docs")?;
    let out = output(
        Command::new(helm_docs)
            .args([
                "--chart-search-root",
                "charts",
                "--skip-version-footer",
                "--dry-run",
            ])
            .current_dir(repo_root()),
    )?;
    ensure!(
        out.status.success(),
        "helm-docs failed: {}",
        text(&out.stderr)
    );
    let fresh = text(&out.stdout);
    let path = chart_dir().join("README.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    ensure!(
        fresh.trim_end() == committed.trim_end(),
        "{} is stale: run `make chart-readme` (helm-docs) and commit it",
        path.display()
    );
    // Every value is described: helm-docs lists an undocumented key with an empty description.
    let undocumented: Vec<&str> = fresh
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            (l.starts_with("| ")
                && cells.len() == 4
                && cells[3].trim_end_matches(" |").trim().is_empty())
            .then(|| cells[0].trim_start_matches("| "))
        })
        .collect();
    ensure!(
        undocumented.is_empty(),
        "values without a `# --` comment in values.yaml: {undocumented:?}"
    );
    Ok(())
}
