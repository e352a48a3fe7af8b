//! A real Kubernetes node joined to the test control plane: pods run as real containers.
//!
//! Everything the node is made of runs on this host as a [`Managed`] process inside a network
//! namespace of its own (`ip netns`), joined to the host by one veth pair:
//!
//! ```text
//!  host netns                               node netns (jny-XXXX)
//!  kube-apiserver ── 10.213.N.1 ═══ veth ═══ 10.213.N.2 ── kubelet, containerd, kube-proxy, CoreDNS
//!                                                └─ jbr0 10.244.0.1/24 (CNI bridge) ── pods
//! ```
//!
//! - containerd 2 (CRI; runc; overlayfs; CNI bridge + host-local + portmap + loopback; the
//!   pause image `localhost/journey/pause`), with every directory and socket under the node's
//!   temp dir;
//! - the kubelet (cgroup v1 with `failCgroupV1: false`, cgroupfs driver, its pods under the
//!   `/journey-node` cgroup; x509 + webhook authentication, webhook authorization);
//! - kube-proxy (iptables mode, rules inside the node's namespace);
//! - CoreDNS (`cluster.local`) on the node address, behind the `kube-dns` Service 10.96.0.10.
//!
//! Images reach containerd by import into its `k8s.io` namespace ([`Node::import_images`]).
//! Teardown (drop) removes the node's containers and pods, stops every process, kills what
//! outlived them, unmounts everything under the node's directory, removes its cgroups, deletes
//! the namespace (its bridge, veths and iptables rules go with it) and restores the kernel
//! settings the kubelet changed. The ledger records each of these for `make test`'s proof.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::controlplane::{ApiServerOptions, ControlPlane, TokenUser};
use crate::host::ip;
use crate::ledger::{self, Resource};
use crate::process::{Managed, wait_until};
use crate::say;
use crate::stack::TempDirOrKept;
use crate::tools::Tools;

/// The node's name (kubelet `--hostname-override`).
pub const NODE_NAME: &str = "journey-node";
/// The pods' addresses (the CNI bridge's subnet).
pub const POD_CIDR: &str = "10.244.0.0/24";
/// The cluster DNS Service address (kubelet `clusterDNS`).
pub const CLUSTER_DNS: &str = "10.96.0.10";
/// The cgroup (in every v1 controller) under which the kubelet puts the pods.
const CGROUP_ROOT: &str = "journey-node";
/// How long the node may take to turn Ready, and pods to be removed at teardown.
const NODE_TIMEOUT: Duration = Duration::from_secs(120);
/// Global kernel settings the kubelet sets at start (not per network namespace): restored after.
const KUBELET_SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// A control plane with one real node. Drop order: the node, then the control plane, then
/// the network namespace.
#[derive(Debug)]
pub struct Cluster {
    pub node: Node,
    pub cp: ControlPlane,
    pub net: NodeNet,
}

impl Cluster {
    /// Creates the node's network, starts a control plane reachable from it, then the node.
    pub async fn start() -> Result<Cluster> {
        let started = Instant::now();
        let net = NodeNet::create()?;
        let dir = TempDirOrKept::with_prefix("journey-node-")?;
        ledger::record(&Resource::Root(dir.path().to_path_buf()));
        let pki = Pki::create(&dir.path().join("pki"))?;
        let users = NodeUsers::new();
        let cp = ControlPlane::start_with(ApiServerOptions {
            address: Some(net.host_ip),
            users: users.all(),
            extra_args: vec![
                format!("--kubelet-client-certificate={}", pki.client_crt.display()),
                format!("--kubelet-client-key={}", pki.client_key.display()),
                // The kubelet's serving certificate is self-signed: the node's address is the
                // one it connects to, on the veth only this host has.
                "--kubelet-preferred-address-types=InternalIP".into(),
            ],
        })
        .await?;
        let mut cp = cp;
        cp.start_controllers()?;
        let node = Node::start(&cp, &net, dir, pki, users).await?;
        say!(
            "cluster: control plane and real node {NODE_NAME} ready in {:.0}s",
            started.elapsed().as_secs_f64()
        );
        Ok(Cluster { node, cp, net })
    }

    /// Every component log directory (control plane, node).
    pub fn logs_dirs(&self) -> Vec<PathBuf> {
        vec![self.cp.logs_dir(), self.node.dir().join("logs")]
    }
}

impl crate::runner::Fixture for Cluster {
    fn logs_dirs(&self) -> Vec<PathBuf> {
        Cluster::logs_dirs(self)
    }
}

// ---------------------------------------------------------------------------------------------

/// The node's network namespace and the veth pair that joins it to the host.
#[derive(Debug)]
pub struct NodeNet {
    pub name: String,
    pub host_if: String,
    pub host_ip: Ipv4Addr,
    pub node_ip: Ipv4Addr,
}

impl NodeNet {
    /// `ip netns add`, a veth pair (host end `jnyh<N>`, node end `eth0`), addresses
    /// 10.213.N.1/30 and .2/30, the node's default route through the host, and the per-namespace
    /// settings pods need (forwarding; bridged traffic through iptables for Services).
    pub fn create() -> Result<NodeNet> {
        let n = free_subnet()?;
        let name = format!("jny-node-{n}");
        let host_if = format!("jnyh{n}");
        let host_ip = Ipv4Addr::new(10, 213, n, 1);
        let node_ip = Ipv4Addr::new(10, 213, n, 2);
        ledger::record(&Resource::NetNs(name.clone()));
        ledger::record(&Resource::NetDev(host_if.clone()));
        let net = NodeNet {
            name,
            host_if,
            host_ip,
            node_ip,
        };
        ip(&["netns", "add", &net.name])?;
        ip(&[
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &net.name,
        ])?;
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &net.host_if])?;
        ip(&["link", "set", &net.host_if, "up"])?;
        let ns = net.name.as_str();
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{node_ip}/30"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            &host_ip.to_string(),
        ])?;
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.bridge.bridge-nf-call-iptables", "1"),
        ] {
            net.sysctl(key, value)?;
        }
        say!(
            "node: network namespace {} ({} ↔ {}) ready",
            net.name,
            net.host_ip,
            net.node_ip
        );
        Ok(net)
    }

    /// A command run inside the node's network namespace (and the host's mount namespace:
    /// the kubelet and containerd must see each other's mounts).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        cmd
    }

    fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let out = self
            .command("sysctl")
            .args(["-q", "-w", &format!("{key}={value}")])
            .output()
            .context("running sysctl in the node's namespace")?;
        ensure!(
            out.status.success(),
            "sysctl -w {key}={value} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }
}

impl Drop for NodeNet {
    fn drop(&mut self) {
        // Every device in the namespace (eth0 and so the host's veth end, the CNI bridge, the
        // pods' veths) and its iptables rules go with it.
        if let Err(e) = ip(&["netns", "delete", &self.name]) {
            say!("node: {e:#}");
        }
    }
}

/// A free 10.213.N.0/30 (N not used by any address of the host).
fn free_subnet() -> Result<u8> {
    let out = Command::new("ip").args(["-4", "-o", "addr"]).output()?;
    let used = String::from_utf8_lossy(&out.stdout).to_string();
    for _ in 0..50 {
        let n: u8 = rand::random_range(1..=250);
        if !used.contains(&format!("10.213.{n}."))
            && !Path::new(&format!("/run/netns/jny-node-{n}")).exists()
        {
            return Ok(n);
        }
    }
    bail!("no free 10.213.N.0/30 subnet for the node")
}

// ---------------------------------------------------------------------------------------------

/// Certificates of the node: a CA the kubelet trusts for client certificates, and the API
/// server's client certificate for the kubelet (group system:masters).
#[derive(Debug)]
struct Pki {
    ca_crt: PathBuf,
    client_crt: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn create(dir: &Path) -> Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let ca_key = dir.join("node-ca.key");
        let ca_crt = dir.join("node-ca.crt");
        let client_key = dir.join("apiserver-kubelet-client.key");
        let client_csr = dir.join("apiserver-kubelet-client.csr");
        let client_crt = dir.join("apiserver-kubelet-client.crt");
        let p = |x: &Path| x.display().to_string();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=journey-node-ca",
            "-keyout",
            &p(&ca_key),
            "-out",
            &p(&ca_crt),
        ])?;
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/O=system:masters/CN=journey-apiserver-kubelet-client",
            "-keyout",
            &p(&client_key),
            "-out",
            &p(&client_csr),
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &p(&client_csr),
            "-CA",
            &p(&ca_crt),
            "-CAkey",
            &p(&ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &p(&client_crt),
        ])?;
        Ok(Pki {
            ca_crt,
            client_crt,
            client_key,
        })
    }
}

fn openssl(args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .context("running openssl")?;
    ensure!(
        out.status.success(),
        "openssl {} failed: {}",
        args.first().copied().unwrap_or(""),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The identities of the node's components (static tokens of the API server).
#[derive(Debug, Clone)]
struct NodeUsers {
    kubelet: TokenUser,
    proxy: TokenUser,
    dns: TokenUser,
}

impl NodeUsers {
    fn new() -> NodeUsers {
        NodeUsers {
            // The Node authorizer and the NodeRestriction admission know nodes by this name.
            kubelet: TokenUser::new(&format!("system:node:{NODE_NAME}"), &["system:nodes"]),
            // Bound to system:node-proxier by the API server's default RBAC.
            proxy: TokenUser::new("system:kube-proxy", &[]),
            // Bound below to a read-only role (services, endpointslices, namespaces, pods).
            dns: TokenUser::new("journey:coredns", &[]),
        }
    }

    fn all(&self) -> Vec<TokenUser> {
        vec![self.kubelet.clone(), self.proxy.clone(), self.dns.clone()]
    }
}

// ---------------------------------------------------------------------------------------------

/// The node's processes, directories and host state.
#[derive(Debug)]
pub struct Node {
    // Stopped in this order by drop (see `Drop`).
    coredns: Option<Managed>,
    proxy: Option<Managed>,
    kubelet: Option<Managed>,
    containerd: Option<Managed>,
    ctr: PathBuf,
    socket: PathBuf,
    node_ip: Ipv4Addr,
    sysctls: Vec<(String, String)>,
    created_log_dir: bool,
    dir: TempDirOrKept,
}

impl Node {
    async fn start(
        cp: &ControlPlane,
        net: &NodeNet,
        dir: TempDirOrKept,
        pki: Pki,
        users: NodeUsers,
    ) -> Result<Node> {
        let tools = Tools::load()?;
        let root = dir.path().to_path_buf();
        let logs = root.join("logs");
        let socket = root.join("containerd/containerd.sock");
        let sysctls = save_sysctls()?;
        for c in cgroup_dirs() {
            ledger::record(&Resource::Cgroup(c));
        }
        create_cgroup_root()?;
        let log_dir = Path::new("/var/log/containers");
        let created_log_dir = !log_dir.exists();
        let mut node = Node {
            coredns: None,
            proxy: None,
            kubelet: None,
            containerd: None,
            ctr: tools.path("CTR", "node")?,
            socket: socket.clone(),
            node_ip: net.node_ip,
            sysctls,
            created_log_dir,
            dir,
        };

        // containerd (its own bin dir first on the PATH: a `ctr`, a shim it runs)
        let oom = OomScores::for_this_host();
        let config = containerd_config(&root, &tools, oom)?;
        let containerd = tools.path("CONTAINERD", "node")?;
        let mut cmd = net.command(&containerd);
        cmd.arg("--config").arg(&config).env(
            "PATH",
            format!(
                "{}:{}",
                containerd.parent().unwrap_or(Path::new("/")).display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
        node.containerd = Some(Managed::spawn(
            "containerd",
            cmd,
            &logs,
            Duration::from_secs(10),
        )?);
        let ctr = node.ctr.clone();
        let sock = socket.clone();
        wait_until("node: containerd", NODE_TIMEOUT, || {
            let mut probe = Command::new(&ctr);
            probe.arg("--address").arg(&sock).arg("version");
            async move {
                Ok(probe
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()?
                    .success())
            }
        })
        .await?;

        // CNI: one bridge for the node's pods; masquerade what leaves the pod subnet.
        let cni_conf = root.join("cni/net.d");
        std::fs::create_dir_all(&cni_conf)?;
        std::fs::write(cni_conf.join("10-journey.conflist"), cni_conflist(&root))?;

        // kubelet
        let server = cp.server_url().to_string();
        let kubeconfig = |name: &str, user: &TokenUser| -> Result<PathBuf> {
            let path = root.join(format!("{name}.kubeconfig"));
            std::fs::write(
                &path,
                crate::controlplane::kubeconfig_yaml(&server, cp.ca_file(), &user.token),
            )?;
            Ok(path)
        };
        let kubelet_config = root.join("kubelet.yaml");
        std::fs::write(
            &kubelet_config,
            kubelet_yaml(&root, net.node_ip, &pki.ca_crt, oom),
        )?;
        std::fs::write(root.join("resolv.conf"), "")?;
        let mut cmd = net.command(tools.path("KUBELET", "node")?);
        cmd.arg(format!("--config={}", kubelet_config.display()))
            .arg(format!(
                "--kubeconfig={}",
                kubeconfig("kubelet", &users.kubelet)?.display()
            ))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg(format!("--node-ip={}", net.node_ip))
            .arg(format!("--root-dir={}", root.join("kubelet").display()))
            .arg(format!("--cert-dir={}", root.join("kubelet-pki").display()))
            .arg("--v=1");
        node.kubelet = Some(Managed::spawn(
            "kubelet",
            cmd,
            &logs,
            Duration::from_secs(10),
        )?);

        // kube-proxy
        let proxy_config = root.join("kube-proxy.yaml");
        std::fs::write(
            &proxy_config,
            kube_proxy_yaml(&kubeconfig("kube-proxy", &users.proxy)?, oom),
        )?;
        let mut cmd = net.command(tools.path("KUBE_PROXY", "node")?);
        cmd.arg(format!("--config={}", proxy_config.display()));
        node.proxy = Some(Managed::spawn(
            "kube-proxy",
            cmd,
            &logs,
            Duration::from_secs(5),
        )?);

        // Cluster DNS: CoreDNS on the node's address, behind the kube-dns Service.
        cp.kubectl_apply(&cluster_dns_yaml(&users.dns.name, net.node_ip))?;
        let corefile = root.join("Corefile");
        std::fs::write(
            &corefile,
            corefile_text(net.node_ip, &kubeconfig("coredns", &users.dns)?),
        )?;
        let mut cmd = net.command(tools.path("COREDNS", "node")?);
        cmd.arg("-conf").arg(&corefile);
        node.coredns = Some(Managed::spawn(
            "coredns",
            cmd,
            &logs,
            Duration::from_secs(5),
        )?);

        node.wait_ready(cp).await?;
        Ok(node)
    }

    /// The node's temp dir (`logs/` holds containerd's, the kubelet's, ... logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The node's address (the kubelet's InternalIP).
    pub fn ip(&self) -> Ipv4Addr {
        self.node_ip
    }

    async fn wait_ready(&mut self, cp: &ControlPlane) -> Result<()> {
        let dns_ready = format!("http://{}:8181/ready", self.node_ip);
        let http = reqwest::Client::new();
        let (containerd, kubelet, proxy, coredns) = (
            &mut self.containerd,
            &mut self.kubelet,
            &mut self.proxy,
            &mut self.coredns,
        );
        wait_until(
            &format!("node: {NODE_NAME} Ready, CoreDNS ready"),
            NODE_TIMEOUT,
            || {
                let ready = (|| -> Result<bool> {
                    for p in [
                        containerd.as_mut(),
                        kubelet.as_mut(),
                        proxy.as_mut(),
                        coredns.as_mut(),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        p.ensure_running()?;
                    }
                    let out = cp.kubectl([
                        "get",
                        "node",
                        NODE_NAME,
                        "-o",
                        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                    ])?;
                    Ok(String::from_utf8_lossy(&out.stdout).trim() == "True")
                })();
                let http = http.clone();
                let url = dns_ready.clone();
                async move {
                    if !ready? {
                        return Ok(false);
                    }
                    let resp = http
                        .get(&url)
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await?;
                    Ok(resp.status().is_success())
                }
            },
        )
        .await
    }

    /// A `ctr` command on the node's containerd, in the CRI namespace `k8s.io`.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new(&self.ctr);
        cmd.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io"]);
        cmd
    }

    fn ctr_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.ctr().args(args).output().context("running ctr")?;
        ensure!(
            out.status.success(),
            "ctr {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Tells containerd how to reach registry `host` (as images name it, e.g. `localhost:5001`):
    /// at `endpoint` over plain HTTP, as kind's local-registry guide does for its nodes.
    pub fn trust_registry(&self, host: &str, endpoint: &str) -> Result<()> {
        let dir = self.dir.path().join("containerd/certs.d").join(host);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("hosts.toml"),
            format!(
                "server = \"http://{host}\"\n\n[host.\"{endpoint}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )?;
        Ok(())
    }

    /// Imports an image archive (`docker save` output) into containerd's `k8s.io` namespace.
    pub fn import_images(&self, archive: &Path) -> Result<()> {
        let started = Instant::now();
        self.ctr_ok(&[
            "images",
            "import",
            "--platform",
            "linux/amd64",
            &archive.display().to_string(),
        ])?;
        say!(
            "node: images imported into containerd in {:.0}s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The names of containerd's containers (every pod's containers and sandboxes).
    pub fn containers(&self) -> Result<Vec<String>> {
        Ok(self
            .ctr_ok(&["containers", "list", "--quiet"])?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Labels of containerd's containers whose pod is in `namespace`.
    pub fn containers_in(&self, namespace: &str) -> Result<Vec<String>> {
        let out = self.ctr_ok(&[
            "containers",
            "list",
            &format!("labels.\"io.kubernetes.pod.namespace\"=={namespace}"),
        ])?;
        Ok(out.lines().skip(1).map(str::to_string).collect())
    }

    fn teardown(&mut self) {
        // The kubelet would restart what is killed under it: stop the node's agents first.
        for p in [&mut self.coredns, &mut self.proxy, &mut self.kubelet] {
            if let Some(mut p) = p.take() {
                p.stop();
            }
        }
        // Every container process (pods' cgroups), then containerd, then the shims it left.
        let killed = crate::host::kill_cgroup_tree(&cgroup_root("pids"));
        if killed > 0 {
            say!("node: killed {killed} container processes");
        }
        if let Some(mut c) = self.containerd.take() {
            c.stop();
        }
        let root = self.dir.path().to_path_buf();
        let shims = crate::host::kill_processes_naming(&root);
        if shims > 0 {
            say!("node: killed {shims} containerd shims");
        }
        if let Err(e) = crate::host::unmount_all_under(&root) {
            say!("node: {e:#}");
        }
        for c in cgroup_dirs() {
            crate::host::remove_cgroup_tree(&c);
        }
        restore_sysctls(&self.sysctls);
        clean_container_log_links(&root, self.created_log_dir);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Whether this host lets root lower OOM scores (CAP_SYS_RESOURCE). Some sandboxed hosts (the
/// CI machine) drop that capability: then the kubelet's -998 for pod sandboxes and -999 for
/// itself and kube-proxy cannot be applied, so containerd clamps pods' scores to its own and
/// the agents keep theirs.
#[derive(Debug, Clone, Copy)]
struct OomScores {
    can_lower: bool,
}

impl OomScores {
    fn for_this_host() -> OomScores {
        const CAP_SYS_RESOURCE: u32 = 24;
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0);
        let can_lower = eff & (1 << CAP_SYS_RESOURCE) != 0;
        if !can_lower {
            say!(
                "node: no CAP_SYS_RESOURCE here: OOM scores are not lowered (containerd restrict_oom_score_adj)"
            );
        }
        OomScores { can_lower }
    }

    /// The kubelet's and kube-proxy's own score (their defaults: -999).
    fn agent(self) -> i32 {
        if self.can_lower { -999 } else { 0 }
    }
}

fn containerd_config(root: &Path, tools: &Tools, oom: OomScores) -> Result<PathBuf> {
    let pause = tools.get("PAUSE_IMAGE", "node")?;
    let d = |p: &str| root.join(p).display().to_string();
    let text = format!(
        r#"version = 3
root = "{root_dir}"
state = "{state}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.nri.v1.nri"]

[grpc]
  address = "{socket}"

[plugins.'io.containerd.shim.v1.manager']
  socket_dir = "{shims}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{pause}"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "{certs}"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = {restrict_oom}
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      # The shim built with this containerd (another one may be on the PATH: Debian's docker.io
      # brings containerd 1.6's).
      runtime_path = "{shim}"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{runc_root}"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{cni_conf}"
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"#,
        root_dir = d("containerd/root"),
        state = d("containerd/state"),
        socket = d("containerd/containerd.sock"),
        shims = d("s"),
        certs = d("containerd/certs.d"),
        runc = tools.get("RUNC", "node")?,
        shim = tools.get("CONTAINERD_SHIM", "node")?,
        restrict_oom = !oom.can_lower,
        runc_root = d("containerd/runc"),
        cni_bin = tools.get("CNI_BIN_DIR", "node")?,
        cni_conf = d("cni/net.d"),
    );
    std::fs::create_dir_all(root.join("containerd/certs.d"))?;
    let path = root.join("containerd/config.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn cni_conflist(root: &Path) -> String {
    format!(
        r#"{{
  "cniVersion": "1.0.0",
  "name": "journey",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "jbr0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {{
        "type": "host-local",
        "dataDir": "{ipam}",
        "ranges": [[{{"subnet": "{POD_CIDR}", "gateway": "10.244.0.1"}}]],
        "routes": [{{"dst": "0.0.0.0/0"}}]
      }}
    }},
    {{"type": "portmap", "capabilities": {{"portMappings": true}}, "backend": "iptables"}}
  ]
}}
"#,
        ipam = root.join("cni/ipam").display()
    )
}

fn kubelet_yaml(root: &Path, node_ip: Ipv4Addr, client_ca: &Path, oom: OomScores) -> String {
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This kernel has cgroup v1 only, deprecated since Kubernetes 1.35.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP_ROOT}
containerRuntimeEndpoint: unix://{socket}
address: {node_ip}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  x509:
    clientCAFile: {client_ca}
  webhook:
    enabled: true
  anonymous:
    enabled: false
authorization:
  mode: Webhook
clusterDNS: [{CLUSTER_DNS}]
clusterDomain: cluster.local
resolvConf: {resolv}
podLogsDir: {pod_logs}
failSwapOn: false
oomScoreAdj: {oom_score}
serializeImagePulls: false
# The test disk is shared with everything else: evict only when it is really full.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
",
        socket = root.join("containerd/containerd.sock").display(),
        client_ca = client_ca.display(),
        resolv = root.join("resolv.conf").display(),
        pod_logs = root.join("pod-logs").display(),
        oom_score = oom.agent(),
    )
}

fn kube_proxy_yaml(kubeconfig: &Path, oom: OomScores) -> String {
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: {kubeconfig}
hostnameOverride: {NODE_NAME}
clusterCIDR: {POD_CIDR}
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 127.0.0.1:10249
# Global conntrack settings stay as they are (not per namespace).
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
oomScoreAdj: {oom_score}
",
        kubeconfig = kubeconfig.display(),
        oom_score = oom.agent(),
    )
}

fn cluster_dns_yaml(dns_user: &str, node_ip: Ipv4Addr) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: journey:coredns
rules:
  - apiGroups: [\"\"]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: journey:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: journey:coredns
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: {dns_user}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
spec:
  clusterIP: {CLUSTER_DNS}
  ports:
    - {{name: dns, port: 53, protocol: UDP, targetPort: 53}}
    - {{name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-node
  namespace: kube-system
  labels:
    kubernetes.io/service-name: kube-dns
addressType: IPv4
endpoints:
  - addresses: [\"{node_ip}\"]
    conditions: {{ready: true}}
ports:
  - {{name: dns, port: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, protocol: TCP}}
"
    )
}

fn corefile_text(node_ip: Ipv4Addr, kubeconfig: &Path) -> String {
    format!(
        ".:53 {{
    bind {node_ip}
    errors
    health {node_ip}:8080
    ready {node_ip}:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    cache 30
    loadbalance
}}
",
        kubeconfig = kubeconfig.display()
    )
}

// ---------------------------------------------------------------------------------------------
// Host state: cgroups, kernel settings, the kubelet's log links

/// `/sys/fs/cgroup/<controller>/journey-node` for every mounted v1 controller.
fn cgroup_dirs() -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name() != "unified")
        .map(|e| e.path().join(CGROUP_ROOT))
        .collect()
}

fn cgroup_root(controller: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(CGROUP_ROOT)
}

/// The kubelet's cgroupRoot must exist in every controller before it starts (cpuset's needs
/// its parent's cpus and memory nodes).
fn create_cgroup_root() -> Result<()> {
    for dir in cgroup_dirs() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let cpuset = cgroup_root("cpuset");
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let parent = std::fs::read_to_string(Path::new("/sys/fs/cgroup/cpuset").join(f))?;
        std::fs::write(cpuset.join(f), parent.trim())
            .with_context(|| format!("writing {}", cpuset.join(f).display()))?;
    }
    Ok(())
}

fn save_sysctls() -> Result<Vec<(String, String)>> {
    let mut saved = Vec::new();
    for key in KUBELET_SYSCTLS {
        let path = Path::new("/proc/sys").join(key);
        let value = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_string();
        ledger::record(&Resource::Sysctl(key.to_string(), value.clone()));
        saved.push((key.to_string(), value));
    }
    Ok(saved)
}

fn restore_sysctls(saved: &[(String, String)]) {
    for (key, value) in saved {
        let path = Path::new("/proc/sys").join(key);
        if let Err(e) = std::fs::write(&path, value) {
            say!("node: restoring {} to {value}: {e}", path.display());
        }
    }
}

/// The kubelet links every container log from /var/log/containers (a fixed path): remove the
/// links into this node's directory, and the directory when the node created it.
fn clean_container_log_links(root: &Path, created_dir: bool) {
    let dir = Path::new("/var/log/containers");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(root))
                && let Err(err) = std::fs::remove_file(e.path())
            {
                say!("node: removing {}: {err}", e.path().display());
            }
        }
    }
    if created_dir && let Err(e) = std::fs::remove_dir(dir) {
        say!("node: removing {}: {e}", dir.display());
    }
}
