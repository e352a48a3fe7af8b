//! A real kind cluster, created by the `kind` CLI (`scripts/install-tools.sh kind`) on the
//! tests' private dockerd ([`Docker`]) from the node image `scripts/kind-node.sh` builds.
//!
//! [`KindCluster::create`] runs `kind create cluster --config <config> --image <image>` as a
//! user does, with the cluster's kubeconfig in its own directory (`KUBECONFIG`), the daemon in
//! `DOCKER_HOST`, and a `PATH` whose `docker`, `kind`, `kubectl` and `helm` are the pinned ones
//! ([`KindCluster::user_command`] gives any command that environment, for the README's
//! commands). Before it, the harness makes the network kind would make (`kind`, a bridge
//! with a name of its own, recorded in the ledger), and `/lib/modules` if the host lacks it
//! (kind bind-mounts it into the node; Docker would create it on the host).
//!
//! On a host whose capability bounding set lacks `CAP_SYS_RESOURCE` (these machines), no process
//! may lower an `oom_score_adj`, and the kubelet asks for negative ones (-997 for critical
//! pods): runc then fails every pod sandbox. For such a host only, the config given to kind is
//! the user's plus one containerd setting made for that case, `restrict_oom_score_adj = true`
//! (containerd keeps each container's score at or above its own) — see [`config_for_this_host`].
//!
//! Dropping it runs `kind delete cluster`, removes the network and what the harness made; the
//! daemon's own teardown then removes any container left.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::docker::{Docker, Network};
use crate::kube::Kube;
use crate::ledger::{self, Resource};
use crate::process::{run_showing, run_to_end};
use crate::say;
use crate::stack::TempDirOrKept;
use crate::tools::Tools;

/// The network kind puts its nodes on, and the name of its Linux bridge here.
const NETWORK: &str = "kind";
const BRIDGE: &str = "jny-kind0";

/// How long `kind create cluster` may take on a busy 2-core machine.
const CREATE_TIMEOUT: Duration = Duration::from_secs(600);

/// A kind cluster; deleted when dropped.
#[derive(Debug)]
pub struct KindCluster {
    name: String,
    kind: PathBuf,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    docker_host: String,
    path: String,
    created: Duration,
    // Drop order: the cluster is deleted (in Drop) before the network, /lib/modules and the
    // directory go.
    _network: Network,
    _lib_modules: MadeDir,
    dir: TempDirOrKept,
}

impl KindCluster {
    /// `kind create cluster --config <config> --image <image>` on `docker`'s daemon; the
    /// cluster's name is the config's `name:`.
    pub fn create(docker: &Docker, config: &Path, image: &str) -> Result<KindCluster> {
        let tools = Tools::load()?;
        let kind = tools.path("KIND", "kind")?;
        let kubectl = tools.path("KUBECTL", "controlplane")?;
        let name = config_name(config)?;
        let dir = TempDirOrKept::with_prefix("journey-kind-")?;
        ledger::record(&Resource::Root(dir.path().to_path_buf()));

        // `docker`, `kind`, `kubectl` and `helm` as a user has them on the PATH: the pinned ones
        // (Debian's 20.10 docker client, which matches the daemon).
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin)?;
        for (name, target) in [
            ("docker", docker.api().client().to_path_buf()),
            ("kind", kind.clone()),
            ("kubectl", kubectl.clone()),
            ("helm", tools.path("HELM", "helm")?),
        ] {
            std::os::unix::fs::symlink(target, bin.join(name))?;
        }
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );

        let lib_modules = MadeDir::ensure(Path::new("/lib/modules"))?;
        let network = docker.api().network(NETWORK, BRIDGE)?;

        let mut cluster = KindCluster {
            name,
            kind,
            kubectl,
            kubeconfig: dir.path().join("kubeconfig"),
            docker_host: docker.api().host().to_string(),
            path,
            created: Duration::ZERO,
            _network: network,
            _lib_modules: lib_modules,
            dir,
        };
        let config = config_for_this_host(config, cluster.dir.path())?;
        let mut cmd = cluster.kind_command();
        cmd.args(["create", "cluster", "--config"])
            .arg(&config)
            .args(["--image", image]);
        say!(
            "kind: kind create cluster --config {} --image {image}",
            config.display()
        );
        let started = Instant::now();
        let (status, out) = run_showing("kind-create", cmd, &cluster.logs_path(), CREATE_TIMEOUT)?;
        ensure!(
            status.success(),
            "kind create cluster failed ({status}):\n{out}\n{}",
            cluster.diagnostics()
        );
        cluster.created = started.elapsed();
        say!(
            "kind: cluster {} created in {:.0}s",
            cluster.name,
            cluster.created.as_secs_f64()
        );
        Ok(cluster)
    }

    /// The cluster's name (`kind-<name>` is its kube context).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long `kind create cluster` took.
    pub fn created_in(&self) -> Duration {
        self.created
    }

    /// The node container of a one-node cluster (`<name>-control-plane`).
    pub fn node(&self) -> String {
        format!("{}-control-plane", self.name)
    }

    /// A command with the environment a kind user's shell has here: `KUBECONFIG` (this
    /// cluster's), `DOCKER_HOST` (the tests' daemon), the pinned tools first on `PATH`, and
    /// Helm's directories inside this cluster's.
    pub fn user_command(&self, program: impl AsRef<Path>) -> Result<Command> {
        let mut cmd = self.script_command(program.as_ref())?;
        cmd.env("DOCKER_HOST", &self.docker_host)
            .env("PATH", &self.path)
            .env_remove("DOCKER_CONTEXT")
            .env_remove("KIND_CLUSTER_NAME")
            .env_remove("KIND_EXPERIMENTAL_PROVIDER")
            .current_dir(crate::repo_root());
        Ok(cmd)
    }

    /// `bash -c <line>` in the user's environment ([`user_command`](Self::user_command)), to
    /// its end; its output, or an error with it.
    pub fn run_line(&self, what: &str, line: &str, timeout: Duration) -> Result<String> {
        let mut cmd = self.user_command("bash")?;
        cmd.args(["-euo", "pipefail", "-c", line]);
        say!("kind: $ {line}");
        let (status, out) = run_showing(what, cmd, &self.logs_path(), timeout)?;
        ensure!(status.success(), "`{line}` failed ({status}):\n{out}");
        Ok(out)
    }

    /// A `kind` command on this cluster's daemon, with its kubeconfig.
    pub fn kind_command(&self) -> Command {
        let mut cmd = Command::new(&self.kind);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("DOCKER_HOST", &self.docker_host)
            .env("PATH", &self.path)
            .env_remove("DOCKER_CONTEXT")
            .env_remove("KIND_EXPERIMENTAL_PROVIDER");
        cmd
    }

    /// `docker exec <node> <args>`: its stdout, or an error with its output.
    pub fn node_exec(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.user_command("docker")?;
        cmd.arg("exec").arg(self.node()).args(args);
        let out = cmd.output().context("docker exec")?;
        ensure!(
            out.status.success(),
            "docker exec {} {} failed ({}): {}",
            self.node(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The address of the host on the kind network (its bridge's), which the nodes reach.
    pub fn gateway(&self) -> Result<std::net::IpAddr> {
        let out = self
            .user_command("docker")?
            .args([
                "network",
                "inspect",
                NETWORK,
                "--format",
                "{{(index .IPAM.Config 0).Gateway}}",
            ])
            .output()
            .context("docker network inspect")?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .parse()
            .with_context(|| format!("the {NETWORK} network's gateway: {text:?}"))
    }

    /// Tells the node's containerd that images named `host/...` come from `endpoint` (plain
    /// HTTP), as kind's local-registry guide does: a `hosts.toml` under
    /// `/etc/containerd/certs.d/<host>/` (containerd 2 reads that directory by default, on
    /// every pull).
    pub fn trust_registry(&self, host: &str, endpoint: &str) -> Result<()> {
        let dir = format!("/etc/containerd/certs.d/{host}");
        self.node_exec(&["mkdir", "-p", &dir])?;
        let toml = format!("[host.\"{endpoint}\"]\n  capabilities = [\"pull\", \"resolve\"]\n");
        let mut cmd = self.user_command("docker")?;
        cmd.args(["exec", "-i", &self.node(), "sh", "-c"])
            .arg(format!("cat > {dir}/hosts.toml"))
            .stdin(std::process::Stdio::piped());
        let mut child = cmd.spawn().context("docker exec")?;
        std::io::Write::write_all(
            &mut child.stdin.take().context("docker exec stdin")?,
            toml.as_bytes(),
        )?;
        let status = child.wait()?;
        ensure!(
            status.success(),
            "writing {dir}/hosts.toml in the node failed ({status})"
        );
        Ok(())
    }

    /// The ids of the containers (running or not) of pods in `namespace`, from the node's
    /// containerd (`crictl ps -a`).
    pub fn containers_in(&self, namespace: &str) -> Result<Vec<String>> {
        let out = self.node_exec(&[
            "crictl",
            "ps",
            "--all",
            "--quiet",
            "--label",
            &format!("io.kubernetes.pod.namespace={namespace}"),
        ])?;
        Ok(out.split_whitespace().map(str::to_string).collect())
    }

    /// What shows why the cluster misbehaves: the node container's state and the tail of its
    /// journal (kubelet, containerd).
    pub fn diagnostics(&self) -> String {
        let node = self.node();
        let mut out = String::new();
        for (what, args) in [
            (
                "node container",
                vec!["ps", "--all", "--filter", &format!("name={node}")],
            ),
            ("node log", vec!["logs", "--tail", "40", &node]),
            (
                "kubelet and containerd journal",
                vec![
                    "exec",
                    &node,
                    "journalctl",
                    "--no-pager",
                    "-n",
                    "60",
                    "-u",
                    "kubelet",
                    "-u",
                    "containerd",
                ],
            ),
        ] {
            let text = self
                .user_command("docker")
                .and_then(|mut c| Ok(c.args(&args).output()?))
                .map(|o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .unwrap_or_else(|e| format!("({e:#})"));
            out.push_str(&format!("--- {what}:\n{text}\n"));
        }
        out
    }

    fn delete(&self) -> Result<()> {
        let mut cmd = self.kind_command();
        cmd.args(["delete", "cluster", "--name", &self.name]);
        let (status, out) = run_to_end(
            "kind-delete",
            cmd,
            &self.logs_path(),
            Duration::from_secs(180),
        )?;
        ensure!(
            status.success(),
            "kind delete cluster failed ({status}):\n{out}"
        );
        Ok(())
    }
}

impl Kube for KindCluster {
    /// kind writes the cluster's context into `$KUBECONFIG`: this file.
    fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    fn kubectl_binary(&self) -> &Path {
        &self.kubectl
    }

    fn work_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for KindCluster {
    fn drop(&mut self) {
        say!("kind: kind delete cluster --name {}", self.name);
        if let Err(e) = self.delete() {
            say!("kind: {e:#}");
        }
    }
}

/// A directory made on the host only because it was missing (recorded in the ledger); removed
/// when dropped. Holds nothing when the directory existed already.
#[derive(Debug)]
struct MadeDir(Option<PathBuf>);

impl MadeDir {
    fn ensure(path: &Path) -> Result<MadeDir> {
        if path.exists() {
            return Ok(MadeDir(None));
        }
        ledger::record(&Resource::Dir(path.to_path_buf()));
        std::fs::create_dir(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(MadeDir(Some(path.to_path_buf())))
    }
}

impl Drop for MadeDir {
    fn drop(&mut self) {
        if let Some(p) = &self.0
            && let Err(e) = std::fs::remove_dir(p)
        {
            say!("kind: removing {}: {e}", p.display());
        }
    }
}

impl crate::runner::Fixture for KindCluster {
    fn logs_dirs(&self) -> Vec<PathBuf> {
        vec![self.logs_path()]
    }
}

/// The containerd setting a host without `CAP_SYS_RESOURCE` in its bounding set needs (see the
/// module comment), as a kind `containerdConfigPatches` entry.
const NO_SYS_RESOURCE_PATCH: &str = r#"
# Added by Journey's tests for this host only: its capability bounding set lacks
# CAP_SYS_RESOURCE, so no process may lower an oom_score_adj; containerd keeps each
# container's at or above its own instead of failing every pod sandbox.
containerdConfigPatches:
  - |
    [plugins."io.containerd.grpc.v1.cri"]
      restrict_oom_score_adj = true
"#;

/// `config` as it is, or, on a host whose bounding set lacks `CAP_SYS_RESOURCE`, a copy in
/// `dir` with [`NO_SYS_RESOURCE_PATCH`] added.
pub fn config_for_this_host(config: &Path, dir: &Path) -> Result<PathBuf> {
    let bounding = caps::read(None, caps::CapSet::Bounding).context("reading the bounding set")?;
    if bounding.contains(&caps::Capability::CAP_SYS_RESOURCE) {
        return Ok(config.to_path_buf());
    }
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    ensure!(
        !text.contains("containerdConfigPatches:"),
        "{} has containerdConfigPatches already: merge the host's patch into it",
        config.display()
    );
    let out = dir.join("kind-config-this-host.yaml");
    std::fs::write(&out, format!("{text}{NO_SYS_RESOURCE_PATCH}"))?;
    say!(
        "kind: this host's bounding set lacks CAP_SYS_RESOURCE: {} plus containerd's restrict_oom_score_adj",
        config.display()
    );
    Ok(out)
}

/// The `name:` of a kind config file.
fn config_name(config: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let doc: serde_json::Value =
        yaml_serde::from_str(&text).with_context(|| format!("parsing {}", config.display()))?;
    doc["name"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("{} names no cluster (`name:`)", config.display()))
}
