//! kubectl, Helm, the cluster scripts and port-forwards against a cluster reached through a
//! kubeconfig: the local control plane ([`crate::controlplane::ControlPlane`]) and the kind
//! cluster ([`crate::kind::KindCluster`]) both implement [`Kube`] with three paths, and share
//! everything else.
//!
//! Every command gets the cluster's own kubeconfig (never the user's `KUBECONFIG`) and a kubectl
//! discovery cache and Helm cache, config and data directories inside the cluster's directory,
//! so nothing is read from or written to the user's setup.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::process::{Managed, wait_until};
use crate::tools::Tools;

/// How long `kubectl port-forward` may take to listen.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);

/// A cluster that kubectl and Helm reach through a kubeconfig.
pub trait Kube {
    /// The admin kubeconfig.
    fn kubeconfig_path(&self) -> &Path;
    /// The kubectl binary (of the cluster's Kubernetes release).
    fn kubectl_binary(&self) -> &Path;
    /// A directory of this cluster's own, for caches; `logs/` in it holds process logs.
    fn work_dir(&self) -> &Path;

    /// Where the logs of processes started against this cluster go.
    fn logs_path(&self) -> PathBuf {
        self.work_dir().join("logs")
    }

    /// A `kubectl` command on this cluster (its own kubeconfig and discovery cache).
    fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new(self.kubectl_binary());
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig_path().display()))
            .arg(format!(
                "--cache-dir={}",
                self.work_dir().join("kubectl-cache").display()
            ))
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs kubectl with `args`; the [`Output`] whatever its exit status.
    fn kubectl<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.kubectl_command()
            .args(args)
            .output()
            .context("running kubectl")
    }

    /// Runs kubectl with `args`; its stdout, or an error with its stderr if it failed.
    fn kubectl_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        let out = self.kubectl(&args)?;
        ensure!(
            out.status.success(),
            "kubectl {} failed ({}): {}",
            shown.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The objects of `kinds` (kubectl's comma list) that belong to Helm release `release` in
    /// `namespace`, one `kind/name` per line.
    fn release_objects(&self, kinds: &str, namespace: &str, release: &str) -> Result<String> {
        self.kubectl_ok([
            "get",
            kinds,
            "-n",
            namespace,
            "-l",
            &format!("app.kubernetes.io/instance={release}"),
            "-o",
            "name",
        ])
    }

    /// Runs kubectl with `args` and `input` on its stdin; the [`Output`] whatever its status.
    fn kubectl_stdin<I, S>(&self, args: I, input: &str) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = self
            .kubectl_command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running kubectl")?;
        // A write error (kubectl exited early) shows in its output and status.
        let _ = child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(input.as_bytes());
        Ok(child.wait_with_output()?)
    }

    /// `kubectl apply -f -` with `manifest` on stdin, for manifests made in a test.
    fn kubectl_apply(&self, manifest: &str) -> Result<String> {
        let out = self.kubectl_stdin(["apply", "-f", "-"], manifest)?;
        ensure!(
            out.status.success(),
            "kubectl apply failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A `helm` command (`HELM` from the installer) on this cluster: its kubeconfig, and Helm's
    /// cache, config and data directories inside the cluster's directory.
    fn helm_command(&self) -> Result<Command> {
        self.helm_command_of("HELM")
    }

    /// [`helm_command`](Self::helm_command) with the Helm the installer records under `key`
    /// (`HELM`, or `HELM3` for skaffold, which drives Helm 3).
    fn helm_command_of(&self, key: &str) -> Result<Command> {
        let helm = Tools::load()?.path(key, "helm")?;
        let home = self.work_dir().join("helm");
        let mut cmd = Command::new(helm);
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig_path().display()))
            .env_remove("KUBECONFIG")
            .env_remove("HELM_NAMESPACE")
            .env_remove("HELM_KUBECONTEXT")
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .stdin(Stdio::null());
        Ok(cmd)
    }

    /// A command (one of `scripts/cluster/*.sh`, or a user's tool) that runs kubectl and Helm on
    /// this cluster through `KUBECONFIG`, `KUBECTL` and `HELM`, with Helm's directories inside
    /// this cluster's (as [`helm_command`](Self::helm_command)).
    fn script_command(&self, script: &Path) -> Result<Command> {
        let helm = self.helm_command()?;
        let mut cmd = Command::new(script);
        for (k, v) in helm.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.env("KUBECONFIG", self.kubeconfig_path())
            .env("KUBECTL", self.kubectl_binary())
            .env("HELM", helm.get_program())
            .stdin(Stdio::null());
        Ok(cmd)
    }

    /// `kubectl port-forward -n <namespace> <target> :<remote>` (127.0.0.1 only), waiting until
    /// it listens.
    #[allow(async_fn_in_trait)]
    async fn port_forward(
        &self,
        namespace: &str,
        target: &str,
        remote: u16,
    ) -> Result<PortForward> {
        let mut cmd = self.kubectl_command();
        cmd.args([
            "port-forward",
            "--address",
            "127.0.0.1",
            "-n",
            namespace,
            target,
        ])
        .arg(format!(":{remote}"));
        let name = format!(
            "port-forward-{}-{}",
            target.replace('/', "-"),
            rand::random::<u16>()
        );
        let mut process = Managed::spawn(&name, cmd, &self.logs_path(), Duration::from_secs(2))?;
        let log = process.log_path().to_path_buf();
        let mut port = 0u16;
        wait_until(
            &format!("kubectl port-forward {target}"),
            FORWARD_TIMEOUT,
            || {
                let early = process.ensure_running();
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                // "Forwarding from 127.0.0.1:43021 -> 9411"
                let found = text.lines().find_map(|l| {
                    l.strip_prefix("Forwarding from 127.0.0.1:")?
                        .split_whitespace()
                        .next()?
                        .parse::<u16>()
                        .ok()
                });
                if let Some(p) = found {
                    port = p;
                }
                async move {
                    early?;
                    Ok(found.is_some())
                }
            },
        )
        .await?;
        Ok(PortForward { port, process })
    }
}

/// A `kubectl port-forward` to a Service or Pod, on a free local port; stopped when dropped.
#[derive(Debug)]
pub struct PortForward {
    pub port: u16,
    process: Managed,
}

impl PortForward {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The kubectl process (its log shows every forwarded connection).
    pub fn process(&self) -> &Managed {
        &self.process
    }
}
