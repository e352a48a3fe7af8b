//! A real Kubernetes control plane as local processes, for the Helm chart and RBAC tests.
//!
//! - [`ControlPlane::start`]: etcd + kube-apiserver on free 127.0.0.1 ports, serving TLS with
//!   the API server's own self-signed certificate (`--cert-dir`), a static admin token in group
//!   `system:masters`, `--authorization-mode=Node,RBAC`, and the default admission plugins
//!   (PodSecurity among them). Ready when `/readyz` answers `ok` through the kubeconfig.
//! - [`ControlPlane::start_full`]: adds kube-controller-manager, kube-scheduler and kwok with
//!   its stock Stages, plus one fake Node managed by kwok, so Deployments and StatefulSets get
//!   Pods that are scheduled and turn Ready (no container ever runs; PVCs never bind).
//!
//! kubectl and Helm run on it through [`Kube`], with its kubeconfig only (Helm's cache, config
//! and data dirs are this control plane's).
//!
//! Binaries come from `scripts/install-tools.sh controlplane` (see `$JOURNEY_CACHE/env.d/
//! controlplane.env`). Every process is a [`Managed`] child: killed with its process group when
//! the control plane is dropped (or the harness dies), and recorded in the PID ledger.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::kube::Kube;
use crate::process::{Managed, free_port, wait_until};
use crate::runner::Fixture;
use crate::say;
use crate::stack::TempDirOrKept;
use crate::tools::Tools;

/// How long the API server may take to answer `/readyz`, and a fake node or a Deployment
/// to turn Ready, on a cold, busy 2-core machine.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The Service IP range (the `kubernetes` Service is its first address).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

/// Name of the fake node [`ControlPlane::start_full`] registers.
pub const FAKE_NODE: &str = "kwok-node-0";

/// The annotation kwok is told to manage nodes by.
pub const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// kwok's stock Stages the full control plane loads, relative to `KWOK_STAGES`:
/// nodes initialise at once and keep a lease; pods get Ready, complete, and go when deleted.
/// `pod-ready` also reports every init container `terminated: Completed` (exit 0; a sidecar,
/// `restartPolicy: Always`, as running), so pods with init containers turn Ready too.
pub const KWOK_STAGE_FILES: &[&str] = &[
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
];

/// A Kubernetes control plane on 127.0.0.1; every process stops when this is dropped.
#[derive(Debug)]
pub struct ControlPlane {
    // Fields drop in declaration order: clients of the API server first, etcd last,
    // the directory (kubeconfig, certificates, data, logs) after every process.
    kwok: Option<Managed>,
    scheduler: Option<Managed>,
    controller_manager: Option<Managed>,
    apiserver: Managed,
    etcd: Managed,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    server_url: String,
    ca_file: PathBuf,
    token: String,
    version: String,
    dir: TempDirOrKept,
}

impl ControlPlane {
    /// etcd + kube-apiserver on 127.0.0.1, ready when `/readyz` is `ok` (what envtest gives: no
    /// Pods, no `kubernetes` Service endpoints), the admin its one user.
    pub async fn start() -> Result<ControlPlane> {
        let started = Instant::now();
        let tools = Tools::load()?;
        let etcd_bin = tools.path("ETCD", "controlplane")?;
        let apiserver_bin = tools.path("KUBE_APISERVER", "controlplane")?;
        let kubectl = tools.path("KUBECTL", "controlplane")?;
        let version = tools.get("K8S_VERSION", "controlplane")?;

        let dir = TempDirOrKept::with_prefix("journey-k8s-")?;
        let root = dir.path().to_path_buf();
        let logs = root.join("logs");
        let pki = root.join("pki");
        std::fs::create_dir_all(&pki)?;
        say!(
            "control plane: starting etcd and kube-apiserver {version} in {}",
            root.display()
        );

        // Service-account token signing key, which the API server also verifies with. SEC1
        // ("EC PRIVATE KEY"): the API server reads no PKCS#8 EC key as a public key file.
        let sa_key = pki.join("service-account.key");
        let out = Command::new("openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(&sa_key)
            .output()
            .context("control plane: running `openssl ecparam` (install openssl)")?;
        ensure!(
            out.status.success(),
            "control plane: openssl ecparam -genkey failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        // The admin: a static token in group system:masters (bypasses RBAC, like kubeadm's admin).
        let token = format!("{:032x}", rand::random::<u128>());
        let tokens = root.join("tokens.csv");
        let csv = format!("{token},journey-admin,journey-admin,\"system:masters\"\n");
        write_private(&tokens, csv)?;

        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd_cmd = Command::new(&etcd_bin);
        etcd_cmd
            .arg("--name=journey")
            .arg(format!("--data-dir={}", root.join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=journey={peer_url}"))
            // Throw-away data: no fsync makes every write much cheaper on a shared disk.
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn");
        let etcd = Managed::spawn("etcd", etcd_cmd, &logs, Duration::ZERO)?;

        let cert_dir = pki.join("apiserver");
        let address = "127.0.0.1";
        let mut api_cmd = Command::new(&apiserver_bin);
        api_cmd
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg(format!("--bind-address={address}"))
            .arg(format!("--advertise-address={address}"))
            .arg(format!("--secure-port={api_port}"))
            // No --tls-cert-file: the API server writes a self-signed CA + serving cert here.
            .arg(format!("--cert-dir={}", cert_dir.display()))
            .arg(format!("--token-auth-file={}", tokens.display()))
            .arg("--authorization-mode=Node,RBAC")
            // As kubeadm and managed clusters run: privileged pods are allowed by the API server,
            // so what refuses them is Pod Security admission (on by default) and the namespace.
            .arg("--allow-privileged=true")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-account-key-file={}", sa_key.display()))
            .arg(format!(
                "--service-account-signing-key-file={}",
                sa_key.display()
            ))
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
            // The endpoint reconciler refuses a loopback advertise address; nothing in the
            // cluster needs the `kubernetes` Service's endpoints (no pod really runs).
            .arg("--endpoint-reconciler-type=none");
        let apiserver = Managed::spawn("kube-apiserver", api_cmd, &logs, Duration::ZERO)?;

        let server_url = format!("https://{address}:{api_port}");
        // The API server writes `apiserver.crt` as serving cert + its CA; the CA alone goes to
        // `ca.crt` once it exists (the kubeconfig and the controller-manager's root CA).
        let ca_file = pki.join("ca.crt");
        let kubeconfig = root.join("kubeconfig");
        write_private(&kubeconfig, kubeconfig_yaml(&server_url, &ca_file, &token))?;

        let mut cp = ControlPlane {
            kwok: None,
            scheduler: None,
            controller_manager: None,
            apiserver,
            etcd,
            kubectl,
            kubeconfig,
            server_url,
            ca_file,
            token,
            version,
            dir,
        };
        cp.wait_apiserver_ready().await?;
        // The same answer through kubectl and the kubeconfig the tests (and Helm) use.
        let readyz = cp.kubectl_ok(["get", "--raw", "/readyz"])?;
        ensure!(
            readyz.trim() == "ok",
            "kubectl get --raw /readyz said {readyz:?}"
        );
        say!(
            "control plane: API server {} ready in {:.1}s",
            cp.server_url,
            started.elapsed().as_secs_f64()
        );
        Ok(cp)
    }

    /// [`start`](Self::start) plus kube-controller-manager, kube-scheduler, kwok and one fake
    /// Node: ready when the node is Ready and the `default` ServiceAccount exists.
    pub async fn start_full() -> Result<ControlPlane> {
        let started = Instant::now();
        let mut cp = Self::start().await?;
        cp.start_controllers()?;
        let tools = Tools::load()?;
        let kwok_bin = tools.path("KWOK", "controlplane")?;
        let stages = tools.path("KWOK_STAGES", "controlplane")?;
        let root = cp.dir.path().to_path_buf();
        let logs = root.join("logs");
        let mut kwok = Command::new(kwok_bin);
        kwok.arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
            .arg(format!(
                "--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"
            ))
            .arg("--node-lease-duration-seconds=40")
            // kwok also reads ~/.kwok/kwok.yaml when it exists: point its work dir here instead.
            .env("KWOK_WORKDIR", root.join("kwok"));
        for f in KWOK_STAGE_FILES {
            let path = stages.join(f);
            ensure!(
                path.is_file(),
                "kwok stage {} is missing: run `scripts/install-tools.sh controlplane`",
                path.display()
            );
            kwok.arg(format!("--config={}", path.display()));
        }
        cp.kwok = Some(Managed::spawn("kwok", kwok, &logs, Duration::ZERO)?);

        cp.kubectl_apply(&fake_node_yaml(FAKE_NODE))?;
        cp.wait_full_ready().await?;
        say!(
            "control plane: controller-manager, scheduler, kwok and node {FAKE_NODE} ready in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(cp)
    }

    /// kube-controller-manager and kube-scheduler (Deployments get Pods, Pods get a node,
    /// ServiceAccounts get tokens).
    pub fn start_controllers(&mut self) -> Result<()> {
        let tools = Tools::load()?;
        let cm_bin = tools.path("KUBE_CONTROLLER_MANAGER", "controlplane")?;
        let sched_bin = tools.path("KUBE_SCHEDULER", "controlplane")?;
        let root = self.dir.path().to_path_buf();
        let logs = root.join("logs");
        let cp = self;
        let mut cm = Command::new(cm_bin);
        cm.arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
            .arg("--leader-elect=false")
            // No serving port: nothing scrapes it, and two control planes never collide.
            .arg("--secure-port=0")
            .arg(format!(
                "--service-account-private-key-file={}",
                root.join("pki/service-account.key").display()
            ))
            .arg(format!("--root-ca-file={}", cp.ca_file.display()));
        cp.controller_manager = Some(Managed::spawn(
            "kube-controller-manager",
            cm,
            &logs,
            Duration::ZERO,
        )?);

        let mut sched = Command::new(sched_bin);
        sched
            .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
            .arg("--leader-elect=false")
            .arg("--secure-port=0");
        cp.scheduler = Some(Managed::spawn(
            "kube-scheduler",
            sched,
            &logs,
            Duration::ZERO,
        )?);

        Ok(())
    }

    async fn wait_apiserver_ready(&mut self) -> Result<()> {
        let url = format!("{}/readyz", self.server_url);
        let bundle = self.dir.path().join("pki/apiserver/apiserver.crt");
        let ca_file = self.ca_file.clone();
        let token = self.token.clone();
        let mut http: Option<reqwest::Client> = None;
        let (etcd, apiserver) = (&mut self.etcd, &mut self.apiserver);
        wait_until("kube-apiserver /readyz", READY_TIMEOUT, || {
            let early = etcd
                .ensure_running()
                .and_then(|()| apiserver.ensure_running());
            // The self-signed certificate exists only once the API server has written it.
            let client = match &http {
                Some(c) => Ok(c.clone()),
                None => extract_ca(&bundle, &ca_file)
                    .and_then(|()| https_client(&ca_file))
                    .inspect(|c| http = Some(c.clone())),
            };
            let token = token.clone();
            let url = url.clone();
            async move {
                early?;
                let resp = client?
                    .get(&url)
                    .bearer_auth(token)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await?;
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                if !status.is_success() {
                    bail!(
                        "{status}: {}",
                        body.lines()
                            .filter(|l| l.contains("[-]"))
                            .collect::<Vec<_>>()
                            .join("; ")
                    );
                }
                Ok(body.trim() == "ok")
            }
        })
        .await
    }

    async fn wait_full_ready(&mut self) -> Result<()> {
        wait_until(
            &format!("control plane: node {FAKE_NODE} and the default ServiceAccount"),
            READY_TIMEOUT,
            || {
                let ready = self.full_ready();
                async move { ready }
            },
        )
        .await
    }

    /// `Ok(true)` once the fake node is Ready and the `default` ServiceAccount exists, else
    /// what is missing; [`Exited`](crate::process::Exited) when a component stopped.
    fn full_ready(&mut self) -> Result<bool> {
        for p in [
            &mut self.controller_manager,
            &mut self.scheduler,
            &mut self.kwok,
        ]
        .into_iter()
        .flatten()
        {
            p.ensure_running()?;
        }
        let node = self.kubectl([
            "get",
            "node",
            FAKE_NODE,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])?;
        let sa = self.kubectl([
            "get",
            "serviceaccount",
            "default",
            "-n",
            "default",
            "-o",
            "name",
        ])?;
        let node_ready = String::from_utf8_lossy(&node.stdout).trim() == "True";
        if node_ready && sa.status.success() {
            return Ok(true);
        }
        bail!(
            "node {FAKE_NODE} Ready={node_ready}, default ServiceAccount exists={}",
            sa.status.success()
        )
    }

    /// The admin kubeconfig (token auth, the API server's self-signed CA).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The CA bundle that verifies the API server's serving certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The admin bearer token (group `system:masters`).
    pub fn admin_token(&self) -> &str {
        &self.token
    }

    /// The Kubernetes version the binaries were built as (`K8S_VERSION`, without the `v`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The kubectl binary of the same release.
    pub fn kubectl_path(&self) -> &Path {
        &self.kubectl
    }

    /// This control plane's temporary directory (`logs/` holds every component log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// PIDs of every process of this control plane.
    pub fn pids(&self) -> Vec<u32> {
        self.processes().iter().map(|p| p.pid()).collect()
    }

    /// Every process of this control plane.
    pub fn processes(&self) -> Vec<&Managed> {
        let mut all: Vec<&Managed> = [&self.kwok, &self.scheduler, &self.controller_manager]
            .into_iter()
            .flatten()
            .collect();
        all.push(&self.apiserver);
        all.push(&self.etcd);
        all
    }
}

impl Kube for ControlPlane {
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

impl Fixture for ControlPlane {
    fn logs_dirs(&self) -> Vec<PathBuf> {
        vec![self.logs_dir()]
    }
}

/// Writes `contents` to a new file only its owner may read: it holds the admin token (and Helm 3
/// warns about a group- or world-readable kubeconfig).
fn write_private(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_ref())?;
    Ok(())
}

/// Writes the CA of the API server's self-signed bundle (`serving cert, CA`) to `ca_file`;
/// fails until the API server has written the bundle.
fn extract_ca(bundle: &Path, ca_file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(bundle)
        .with_context(|| format!("waiting for the API server to write {}", bundle.display()))?;
    let blocks = pem_certificates(&text);
    ensure!(
        blocks.len() >= 2,
        "{} does not hold a serving cert and its CA yet",
        bundle.display()
    );
    let tmp = ca_file.with_extension("tmp");
    std::fs::write(&tmp, blocks[1..].concat())?;
    std::fs::rename(&tmp, ca_file)?;
    Ok(())
}

/// The complete `CERTIFICATE` PEM blocks of `text`, each with its END line and a newline.
fn pem_certificates(text: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        blocks.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    blocks
}

/// A client that trusts only the API server's CA.
fn https_client(ca_file: &Path) -> Result<reqwest::Client> {
    let pem = std::fs::read(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)?;
    Ok(reqwest::Client::builder().tls_certs_only(certs).build()?)
}

/// The admin kubeconfig: one cluster, one user (a bearer token), one context.
pub fn kubeconfig_yaml(server: &str, ca_file: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: journey
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: journey-admin
  user:
    token: {token}
contexts:
- name: journey
  context:
    cluster: journey
    user: journey-admin
    namespace: default
current-context: journey
",
        ca = ca_file.display()
    )
}

/// A Node for kwok to manage (its Stages fill in the status: Ready, 1k CPUs, 1Ti memory).
pub fn fake_node_yaml(name: &str) -> String {
    format!(
        "apiVersion: v1
kind: Node
metadata:
  name: {name}
  annotations:
    {KWOK_NODE_ANNOTATION}: fake
    node.alpha.kubernetes.io/ttl: \"0\"
  labels:
    kubernetes.io/hostname: {name}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_names_the_server_the_ca_and_the_token() {
        let yaml = kubeconfig_yaml("https://127.0.0.1:1234", Path::new("/x/ca.crt"), "tok");
        let v: yaml_serde::Value = yaml_serde::from_str(&yaml).expect("valid yaml");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://127.0.0.1:1234")
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority"].as_str(),
            Some("/x/ca.crt")
        );
        assert_eq!(v["users"][0]["user"]["token"].as_str(), Some("tok"));
        assert_eq!(v["current-context"].as_str(), Some("journey"));
    }

    #[test]
    fn only_complete_certificate_blocks_are_taken_from_a_bundle() {
        let c = |n: &str| format!("-----BEGIN CERTIFICATE-----\n{n}\n-----END CERTIFICATE-----\n");
        let bundle = format!("{}{}", c("leaf"), c("ca"));
        assert_eq!(pem_certificates(&bundle), vec![c("leaf"), c("ca")]);
        let partial = format!("{}-----BEGIN CERTIFICATE-----\nhalf", c("leaf"));
        assert_eq!(pem_certificates(&partial), vec![c("leaf")]);
    }

    #[test]
    fn the_fake_node_carries_the_annotation_kwok_selects_on() {
        let v: yaml_serde::Value = yaml_serde::from_str(&fake_node_yaml("n1")).expect("valid yaml");
        assert_eq!(
            v["metadata"]["annotations"][KWOK_NODE_ANNOTATION].as_str(),
            Some("fake")
        );
        assert_eq!(
            v["metadata"]["labels"]["kubernetes.io/os"].as_str(),
            Some("linux")
        );
    }
}
