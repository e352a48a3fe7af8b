//! A local OCI registry (distribution's `registry`, `scripts/install-tools.sh registry`) on
//! 127.0.0.1, as kind's local-registry guide runs one on localhost:5001: docker (and skaffold)
//! push to `localhost:<port>`; a kind node reaches it through an address of the host's
//! ([`Registry::expose_on`], the kind network's gateway), which its containerd is told about in
//! a `hosts.toml` ([`crate::kind::KindCluster::trust_registry`]).

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::ledger::{self, Resource};
use crate::process::{Managed, free_port, wait_until};
use crate::say;
use crate::stack::TempDirOrKept;
use crate::tools::Tools;

/// A registry process with its storage in a temp dir; stopped when dropped.
#[derive(Debug)]
pub struct Registry {
    forwarders: Vec<Forwarder>,
    process: Managed,
    port: u16,
    dir: TempDirOrKept,
}

impl Registry {
    /// Starts the registry on a free port of 127.0.0.1 and waits until its API answers.
    pub async fn start() -> Result<Registry> {
        let bin = Tools::load()?.path("REGISTRY", "registry")?;
        let dir = TempDirOrKept::with_prefix("journey-registry-")?;
        ledger::record(&Resource::Root(dir.path().to_path_buf()));
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
",
                dir.path().join("data").display()
            ),
        )?;
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("serve").arg(&config);
        let mut process = Managed::spawn(
            "registry",
            cmd,
            &dir.path().join("logs"),
            Duration::from_secs(5),
        )?;
        let url = format!("http://127.0.0.1:{port}/v2/");
        let http = reqwest::Client::new();
        wait_until("registry /v2/", Duration::from_secs(30), || {
            let early = process.ensure_running();
            let req = http.get(&url).timeout(Duration::from_secs(2)).send();
            async move {
                early?;
                Ok(req.await?.status().is_success())
            }
        })
        .await?;
        say!("registry: localhost:{port} ready");
        Ok(Registry {
            forwarders: Vec::new(),
            process,
            port,
            dir,
        })
    }

    /// `localhost:<port>`: the name images are pushed to and pulled by.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The registry's temp dir (`logs/` holds its log).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn process(&self) -> &Managed {
        &self.process
    }

    /// Also serves the registry on `addr:<port>` (an address another network namespace can
    /// reach), by forwarding connections to 127.0.0.1.
    pub fn expose_on(&mut self, addr: IpAddr) -> Result<()> {
        self.forwarders.push(Forwarder::start(
            SocketAddr::new(addr, self.port),
            SocketAddr::from(([127, 0, 0, 1], self.port)),
        )?);
        Ok(())
    }

    /// The repositories in the registry (`/v2/_catalog`).
    pub async fn catalog(&self) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Catalog {
            repositories: Vec<String>,
        }
        let url = format!("http://127.0.0.1:{}/v2/_catalog", self.port);
        let c: Catalog = reqwest::get(&url)
            .await?
            .json()
            .await
            .context("/v2/_catalog")?;
        Ok(c.repositories)
    }
}

/// A TCP forwarder on its own threads (it outlives any one test's async runtime).
#[derive(Debug)]
struct Forwarder {
    listen: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    fn start(listen: SocketAddr, to: SocketAddr) -> Result<Forwarder> {
        let listener =
            TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("forward-{listen}"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(inbound) = conn else { continue };
                    let Ok(outbound) = TcpStream::connect(to) else {
                        continue;
                    };
                    pipe(inbound, outbound);
                }
            })?;
        Ok(Forwarder {
            listen,
            stop,
            thread: Some(thread),
        })
    }
}

/// Copies both ways between two connections, each direction on a thread of its own.
fn pipe(a: TcpStream, b: TcpStream) {
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 64 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            // The other side sees the end of this direction; errors mean it is gone already.
            let _ = to.shutdown(Shutdown::Write);
        });
    };
    if let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) {
        copy(a, b2);
        copy(b, a2);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        // (If the connect fails the listener is gone already.)
        let _ = TcpStream::connect_timeout(&self.listen, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            // A panicked forwarder thread has nothing left to clean up.
            let _ = t.join();
        }
    }
}
