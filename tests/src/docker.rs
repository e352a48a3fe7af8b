//! A private Docker daemon for the image and kind tests (and `make images`).
//!
//! Debian's dockerd (`scripts/install-tools.sh docker`) runs as a [`Managed`] process with its own
//! socket, exec root and config in a temp dir, and its data root under the tool cache (so built
//! images and BuildKit's cache survive between runs; a lock file keeps two daemons off it). It
//! makes no default bridge and touches no iptables rule, no sysctl: builds run with the host's
//! network (`scripts/images.sh` passes `--network host`), and tests that start containers make a
//! user-defined network of their own ([`Docker::network`]) whose bridge is recorded in the ledger.
//! A published port is served by Docker's userland proxy (kind publishes its API server on
//! 127.0.0.1 that way). Containers run through `runc-in-bounds` (its default runtime), which
//! keeps a container's capabilities inside this host's bounding set, so that `--privileged`
//! containers (kind's nodes) start on machines whose bounding set lacks one
//! (`journey_tests::runc_bounds`).
//!
//! On drop every container and network is removed, the daemon is stopped (it stops its
//! containerd), and anything still running or mounted under its directories is killed and
//! unmounted; the ledger records the daemon, its containerd and its directories so that
//! `make test` proves it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::ledger::{self, Resource};
use crate::process::{Managed, wait_until};
use crate::say;
use crate::stack::TempDirOrKept;
use crate::tools::Tools;

/// How long dockerd may take to answer, and to stop (it stops its containers first).
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(40);

/// The cgroup under which the daemon puts its containers (one per controller).
const CGROUP_PARENT: &str = "journey-docker";

/// A running private dockerd; dropping it removes what the tests made and stops it.
#[derive(Debug)]
pub struct Docker {
    daemon: Option<Managed>,
    api: DockerClient,
    data_root: PathBuf,
    _lock: File,
    dir: TempDirOrKept,
}

impl Docker {
    /// Starts dockerd and waits until it answers.
    pub async fn start() -> Result<Docker> {
        let started = Instant::now();
        let tools = Tools::load()?;
        let dockerd = tools.path("DOCKERD", "docker")?;
        let client = tools.path("DOCKER", "docker")?;
        let data_root = PathBuf::from(tools.get("DOCKER_DATA_ROOT", "docker")?);
        std::fs::create_dir_all(&data_root)?;
        let lock = lock_data_root(&data_root).await?;

        // A short path: unix sockets (dockerd's, containerd's under the exec root) must fit in
        // 108 bytes.
        let dir = TempDirOrKept::with_prefix("journey-dockerd-")?;
        let root = dir.path().to_path_buf();
        let exec_root = root.join("x");
        let socket = root.join("docker.sock");
        let config = root.join("daemon.json");
        // runc, through runc-in-bounds (a one-line script that names the real runc).
        let runtime = root.join("runc-in-bounds");
        std::fs::write(
            &runtime,
            format!(
                "#!/bin/sh\nexec '{}' --runc '{}' -- \"$@\"\n",
                crate::services::bin("runc-in-bounds")?.display(),
                tools.path("RUNC", "docker")?.display()
            ),
        )?;
        std::fs::set_permissions(
            &runtime,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        // No host configuration (/etc/docker/daemon.json) leaks in; BuildKit is the builder.
        let daemon_json = serde_json::json!({
            "features": {"buildkit": true},
            "runtimes": {"runc-in-bounds": {"path": runtime}},
            "default-runtime": "runc-in-bounds",
        });
        std::fs::write(&config, serde_json::to_vec_pretty(&daemon_json)?)?;
        ledger::record(&Resource::Root(root.clone()));
        ledger::record(&Resource::Root(data_root.clone()));
        for c in cgroup_dirs() {
            ledger::record(&Resource::Cgroup(c));
        }

        let mut cmd = Command::new(&dockerd);
        cmd.arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(&data_root)
            .arg("--exec-root")
            .arg(&exec_root)
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--pidfile")
            .arg(root.join("docker.pid"))
            // Nothing on the host's network configuration changes: no docker0, no NAT rules,
            // no ip_forward; published ports go through the userland proxy.
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--userland-proxy=true",
                "--storage-driver=overlay2",
            ])
            .arg(format!(
                "--userland-proxy-path={}",
                tools.path("DOCKER_PROXY", "docker")?.display()
            ))
            .arg(format!("--cgroup-parent=/{CGROUP_PARENT}"))
            .arg("--log-level=warn");
        say!(
            "docker: starting dockerd (data root {}, socket {})",
            data_root.display(),
            socket.display()
        );
        let daemon = Managed::spawn("dockerd", cmd, &root.join("logs"), STOP_GRACE)?;
        let docker = Docker {
            daemon: Some(daemon),
            api: DockerClient {
                client,
                host: format!("unix://{}", socket.display()),
            },
            data_root,
            _lock: lock,
            dir,
        };
        let probe = docker.api.command();
        wait_until("dockerd", START_TIMEOUT, || {
            let mut probe = clone_command(&probe);
            async move {
                Ok(probe
                    .args(["version", "--format", "{{.Server.Version}}"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()?
                    .success())
            }
        })
        .await
        .map_err(|e| docker.with_log(e))?;
        docker.record_containerd();
        // The data root outlives the daemon: a run killed before its teardown left its
        // containers and networks in it (they would clash with this run's names).
        if let Err(e) = docker.teardown() {
            return Err(docker.with_log(e.context("removing what a previous run left")));
        }
        say!(
            "docker: dockerd ready in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(docker)
    }

    /// The client of this daemon (cloneable; containers and networks keep one).
    pub fn api(&self) -> &DockerClient {
        &self.api
    }

    /// The daemon's temp dir (logs in `logs/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn with_log(&self, e: anyhow::Error) -> anyhow::Error {
        let tail = self.daemon.as_ref().map(|d| d.tail(30)).unwrap_or_default();
        e.context(format!("dockerd's last log lines:\n{tail}"))
    }

    /// dockerd starts containerd in a session of its own: record it too.
    fn record_containerd(&self) {
        let Some(pid) = self.daemon.as_ref().map(Managed::pid) else {
            return;
        };
        for (child, comm) in children(pid) {
            ledger::record_process(child, &format!("dockerd/{comm}"));
        }
    }

    fn teardown(&self) -> Result<()> {
        // What the tests made: containers (with their anonymous volumes) and networks.
        let containers = self.api.run(&["ps", "--all", "--quiet"])?;
        if !containers.is_empty() {
            let mut args = vec!["rm", "--force", "--volumes"];
            args.extend(containers.lines());
            self.api.run(&args)?;
        }
        let networks = self
            .api
            .run(&["network", "ls", "--quiet", "--filter", "type=custom"])?;
        for n in networks.lines() {
            self.api.run(&["network", "rm", n])?;
        }
        Ok(())
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            say!("docker: removing containers and networks failed: {e:#}");
        }
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
        // Whatever outlived the daemon (a shim, a mount) is removed; the ledger check reports it.
        for root in [self.dir.path().to_path_buf(), self.data_root.clone()] {
            let killed = crate::host::kill_processes_naming(&root);
            if killed > 0 {
                say!(
                    "docker: killed {killed} processes left under {}",
                    root.display()
                );
            }
            if let Err(e) = crate::host::unmount_all_under(&root) {
                say!("docker: {e:#}");
            }
        }
        for c in cgroup_dirs() {
            crate::host::remove_cgroup_tree(&c);
        }
    }
}

/// A docker client bound to one daemon.
#[derive(Debug, Clone)]
pub struct DockerClient {
    client: PathBuf,
    host: String,
}

impl DockerClient {
    /// `DOCKER_HOST` of this daemon.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The docker client (Debian's 20.10, which builds with BuildKit without buildx).
    pub fn client(&self) -> &Path {
        &self.client
    }

    /// A `docker` command talking to this daemon.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.client);
        cmd.env("DOCKER_HOST", &self.host)
            .env("DOCKER_BUILDKIT", "1")
            .env_remove("DOCKER_CONTEXT");
        cmd
    }

    /// Runs `docker <args>` and returns its stdout; fails with its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command()
            .args(args)
            .output()
            .with_context(|| format!("running docker {}", args.join(" ")))?;
        ensure!(
            out.status.success(),
            "docker {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs `scripts/images.sh <mode>` against this daemon, its progress on the terminal.
    pub fn build_images(&self, mode: &str) -> Result<()> {
        self.run_script("scripts/images.sh", &[mode])
    }

    /// Runs one of the repository's scripts (e.g. `scripts/kind-node.sh`) against this daemon,
    /// its progress on the terminal.
    pub fn run_script(&self, script: &str, args: &[&str]) -> Result<()> {
        let path = crate::repo_root().join(script);
        say!("docker: {script} {}", args.join(" "));
        let status = Command::new(&path)
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER", &self.client)
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("running {}", path.display()))?;
        ensure!(
            status.success(),
            "{script} {} failed ({status}); its build logs are in $JOURNEY_CACHE/images/logs",
            args.join(" ")
        );
        Ok(())
    }

    /// Starts a container (`docker run -d --name <name> <args...>`), removed when dropped.
    pub fn container(&self, name: &str, args: &[String]) -> Result<Container> {
        let mut full: Vec<&str> = vec!["run", "--detach", "--name", name];
        full.extend(args.iter().map(String::as_str));
        let id = self.run(&full)?;
        Ok(Container {
            docker: self.clone(),
            name: name.to_string(),
            id,
        })
    }

    /// A user-defined bridge network (its Linux bridge named `bridge`, at most 15 characters),
    /// removed when dropped.
    pub fn network(&self, name: &str, bridge: &str) -> Result<Network> {
        ledger::record(&Resource::NetDev(bridge.to_string()));
        self.run(&[
            "network",
            "create",
            "--driver",
            "bridge",
            "--opt",
            &format!("com.docker.network.bridge.name={bridge}"),
            name,
        ])?;
        Ok(Network {
            docker: self.clone(),
            name: name.to_string(),
        })
    }

    /// Image size in bytes.
    pub fn image_size(&self, image: &str) -> Result<u64> {
        self.run(&["image", "inspect", "--format", "{{.Size}}", image])?
            .parse()
            .with_context(|| format!("size of {image}"))
    }

    /// Image id (`sha256:...`).
    pub fn image_id(&self, image: &str) -> Result<String> {
        self.run(&["image", "inspect", "--format", "{{.Id}}", image])
    }
}

/// A container of the private daemon; removed (with its anonymous volumes) when dropped.
#[derive(Debug)]
pub struct Container {
    docker: DockerClient,
    pub name: String,
    pub id: String,
}

impl Container {
    /// Its IP address on `network`.
    pub fn ip(&self, network: &str) -> Result<String> {
        let ip = self.docker.run(&[
            "inspect",
            "--format",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
            &self.name,
        ])?;
        ensure!(!ip.is_empty(), "{} has no address on {network}", self.name);
        Ok(ip)
    }

    /// The host pid of its main process (0 when it is not running).
    pub fn pid(&self) -> Result<u32> {
        self.docker
            .run(&["inspect", "--format", "{{.State.Pid}}", &self.name])?
            .parse()
            .context("docker inspect .State.Pid")
    }

    /// Its log (stdout and stderr).
    pub fn logs(&self) -> String {
        let out = self.docker.command().args(["logs", &self.name]).output();
        match out {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("(docker logs failed: {e})"),
        }
    }

    /// `running`, `exited`, ... and the exit code.
    pub fn state(&self) -> Result<(String, i64)> {
        let s = self.docker.run(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            &self.name,
        ])?;
        let (status, code) = s.split_once(' ').context("docker inspect state")?;
        Ok((status.to_string(), code.parse().unwrap_or(-1)))
    }

    /// Fails with its log when it is not running.
    pub fn ensure_running(&self) -> Result<()> {
        let (status, code) = self.state()?;
        if status != "running" {
            bail!(
                "container {} is {status} (exit {code}); its log:\n{}",
                self.name,
                tail(&self.logs(), 40)
            );
        }
        Ok(())
    }

    /// `docker exec <container> <args>`: (exit code, stdout + stderr).
    pub fn exec(&self, args: &[&str]) -> Result<(i32, String)> {
        let out = self
            .docker
            .command()
            .arg("exec")
            .arg(&self.name)
            .args(args)
            .output()
            .context("docker exec")?;
        Ok((
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Err(e) = self.docker.run(&["rm", "--force", "--volumes", &self.name]) {
            say!("docker: removing container {} failed: {e:#}", self.name);
        }
    }
}

/// A user-defined network of the private daemon; removed when dropped (after its containers).
#[derive(Debug)]
pub struct Network {
    docker: DockerClient,
    pub name: String,
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Err(e) = self.docker.run(&["network", "rm", &self.name]) {
            say!("docker: removing network {} failed: {e:#}", self.name);
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Takes the data root's lock (one daemon per data root), waiting with progress lines.
async fn lock_data_root(data_root: &Path) -> Result<File> {
    let path = data_root.with_extension("lock");
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let fd = file.as_raw_fd();
    wait_until(
        &format!(
            "docker: the lock on {} (another `make images` or test run uses it)",
            data_root.display()
        ),
        Duration::from_secs(1800),
        || async move { Ok(crate::process::try_lock(fd)) },
    )
    .await?;
    Ok(file)
}

/// `(pid, command name)` of the children of `pid`.
fn children(pid: u32) -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let close = stat.rfind(')')?;
            let comm = stat[stat.find('(')? + 1..close].to_string();
            let ppid: u32 = stat[close + 1..].split_whitespace().nth(1)?.parse().ok()?;
            (ppid == pid).then_some((p, comm))
        })
        .collect()
}

/// `/sys/fs/cgroup/<controller>/journey-docker` for every mounted cgroup v1 controller.
fn cgroup_dirs() -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path().join(CGROUP_PARENT))
        .collect()
}

fn clone_command(cmd: &Command) -> Command {
    let mut c = Command::new(cmd.get_program());
    c.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}
