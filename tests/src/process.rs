//! Child processes the harness owns.
//!
//! Every [`Managed`] process
//! - runs in its own process group (so its children go with it, and a Ctrl-C on the
//!   terminal reaches only the harness),
//! - gets `PR_SET_PDEATHSIG=SIGKILL`, so it dies even when the harness is killed with SIGKILL
//!   (the spawning thread lives as long as the harness: see [`spawner`]),
//! - has stdout and stderr captured line by line into `<logs>/<name>.log`; `TEST_LOG=1`
//!   also streams them to stderr prefixed with the component name,
//! - is stopped on drop: SIGTERM to the group, a grace period, then SIGKILL, then reaped,
//! - is recorded in the ledger ([`crate::ledger`]) so a later check can prove that nothing
//!   the harness started is still alive.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use backon::{BlockingRetryable as _, Retryable as _};

use crate::say;
use crate::wait::{NotYet, deadline};

/// A child process owned by the harness. Dropping it stops it (and its process group).
#[derive(Debug)]
pub struct Managed {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    grace: Duration,
    pumps: Vec<std::thread::JoinHandle<()>>,
}

impl Managed {
    /// Spawns `cmd` as component `name`, capturing its output to `<logs_dir>/<name>.log`.
    /// `grace` is how long a SIGTERM gets before SIGKILL when the process is stopped.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        logs_dir: &Path,
        grace: Duration,
    ) -> Result<Managed> {
        std::fs::create_dir_all(logs_dir)?;
        let log = logs_dir.join(format!("{name}.log"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let file = Arc::new(Mutex::new(file));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let program = format!("{:?}", cmd.get_program());
        let mut child =
            spawner::spawn(cmd).with_context(|| format!("{name}: starting {program}"))?;
        crate::ledger::record_process(child.id(), name);
        let stream = std::env::var_os("TEST_LOG").is_some_and(|v| v != "0");
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(pump(name, out, file.clone(), stream));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(pump(name, err, file, stream));
        }
        Ok(Managed {
            name: name.to_string(),
            child: Some(child),
            log,
            grace,
            pumps,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The OS process id (also the process group id).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of this component's log.
    pub fn tail(&self, lines: usize) -> String {
        tail_file(&self.log, lines)
    }

    /// `Some(status)` once the process has exited.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Fails with [`Exited`] (and the log tail) if the process has already exited: a wait
    /// ([`wait_until`]) then stops at once.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.try_exit() {
            return Err(Exited {
                name: self.name.clone(),
                status,
                tail: self.tail(40),
            }
            .into());
        }
        Ok(())
    }

    /// Sends `signal` to the process (not its group).
    pub fn signal(&self, signal: i32) -> Result<()> {
        let pid = self.pid() as libc::pid_t;
        if pid == 0 || sys::kill(pid, signal) != 0 {
            bail!("{}: could not send signal {signal} to pid {pid}", self.name);
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let status = (|| self.try_exit().ok_or(NotYet))
            .retry(deadline(timeout, Duration::from_millis(50)))
            .call()
            .with_context(|| format!("{} did not exit within {timeout:?}", self.name))?;
        self.join_pumps();
        Ok(status)
    }

    /// Stops the process group: SIGTERM, up to `grace`, then SIGKILL; always reaps.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id() as libc::pid_t;
        if child.try_wait().ok().flatten().is_none() && !self.grace.is_zero() {
            sys::kill(-pgid, libc::SIGTERM);
            // NotYet at the end of the grace: the SIGKILL below ends it.
            let _ = (|| child.try_wait().ok().flatten().ok_or(NotYet))
                .retry(deadline(self.grace, Duration::from_millis(25)))
                .call();
        }
        // Kill whatever is left of the group (also children of an exited leader).
        sys::kill(-pgid, libc::SIGKILL);
        // Reaping a killed child fails only when it was reaped already.
        let _ = child.wait();
        self.join_pumps();
    }

    /// Kills the process group with SIGKILL (no grace) and reaps it: a crash, an OOM kill.
    pub fn kill(&mut self) {
        self.grace = Duration::ZERO;
        self.stop();
    }

    fn join_pumps(&mut self) {
        for p in self.pumps.drain(..) {
            // A panicked pump thread has only lost log lines; the process is gone either way.
            let _ = p.join();
        }
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pump(
    name: &str,
    src: impl Read + Send + 'static,
    file: Arc<Mutex<File>>,
    stream: bool,
) -> std::thread::JoinHandle<()> {
    let name = name.to_string();
    std::thread::spawn(move || {
        let reader = BufReader::new(src);
        for line in reader.split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line);
            if let Ok(mut f) = file.lock() {
                // A log line that cannot be written (disk full) must not stop the pump, which
                // keeps the child's pipe drained.
                let _ = writeln!(f, "{text}");
            }
            if stream {
                eprintln!("[{name}] {text}");
            }
        }
    })
}

/// The last `lines` lines of a file (empty if it cannot be read).
pub fn tail_file(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    // Ports handed out by this process are remembered so two components never get the same one.
    static GIVEN: OnceLock<Mutex<std::collections::HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(Default::default);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("binding 127.0.0.1:0");
        if given.lock().expect("port set").insert(port) {
            return port;
        }
    }
}

/// Polls `check` until it returns `Ok(true)` or `timeout` passes, printing a progress line
/// every few seconds with the last reason it was not ready. `what` names the component. An
/// error is a reason to wait on, except [`Exited`] (a process the wait depends on is gone),
/// which ends the wait at once.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    let mut last_report = start;
    let outcome = (|| {
        let ready = check();
        async move { Ok::<_, anyhow::Error>(crate::wait::ready(ready.await?)?) }
    })
    .retry(deadline(timeout, Duration::from_millis(200)))
    .when(|e: &anyhow::Error| !exited(e))
    .notify(|e, _| {
        if last_report.elapsed() >= Duration::from_secs(3) {
            say!(
                "{what}: waiting ({:.0}s/{:.0}s): {e:#}",
                start.elapsed().as_secs_f64(),
                timeout.as_secs_f64()
            );
            last_report = Instant::now();
        }
    })
    .await;
    match outcome {
        Ok(()) => {
            say!("{what}: ready after {:.1}s", start.elapsed().as_secs_f64());
            Ok(())
        }
        Err(e) if exited(&e) => Err(e.context(format!("{what}: not ready"))),
        Err(e) => Err(e.context(format!("{what}: not ready after {timeout:?}"))),
    }
}

/// `true` when `e` is (or was caused by) [`Exited`].
fn exited(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Exited>())
}

/// A harness process exited while something waited on it ([`Managed::ensure_running`]).
#[derive(Debug)]
pub struct Exited {
    name: String,
    status: std::process::ExitStatus,
    tail: String,
}

impl std::fmt::Display for Exited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} exited early ({}); last log lines:\n{}",
            self.name, self.status, self.tail
        )
    }
}

impl std::error::Error for Exited {}

/// Runs `cmd` as component `name` to its end (at most `timeout`; its process group is killed
/// after that), its output captured in `<logs_dir>/<name>.log` (streamed with `TEST_LOG=1`).
/// Returns the exit status and the output.
pub fn run_to_end(
    name: &str,
    cmd: Command,
    logs_dir: &Path,
    timeout: Duration,
) -> Result<(std::process::ExitStatus, String)> {
    run_watched(name, cmd, logs_dir, timeout, false)
}

/// [`run_to_end`], printing every line the command writes as it comes (`[harness] <name>:
/// <line>`): for long steps whose own output is their progress (`kind create cluster`, a
/// progress-printing install script). With `TEST_LOG=1` the lines are streamed already.
pub fn run_showing(
    name: &str,
    cmd: Command,
    logs_dir: &Path,
    timeout: Duration,
) -> Result<(std::process::ExitStatus, String)> {
    run_watched(name, cmd, logs_dir, timeout, true)
}

fn run_watched(
    name: &str,
    cmd: Command,
    logs_dir: &Path,
    timeout: Duration,
    show: bool,
) -> Result<(std::process::ExitStatus, String)> {
    let mut p = Managed::spawn(name, cmd, logs_dir, Duration::from_secs(2))?;
    let show = show && std::env::var_os("TEST_LOG").is_none_or(|v| v == "0");
    let started = std::time::Instant::now();
    let mut shown = 0usize;
    // Prints the lines of `text` after `shown` (the last one only when `all`: it may be partial).
    let mut print = |text: &str, all: bool| {
        let upto = if all {
            text.len()
        } else {
            text.rfind('\n').map_or(shown, |i| i + 1)
        };
        if show && upto > shown {
            for line in text[shown..upto].lines().filter(|l| !l.trim().is_empty()) {
                crate::say!("{name}: {}", line.trim_end());
            }
        }
        shown = shown.max(upto);
    };
    let status = loop {
        let exited = p.try_exit();
        if exited.is_some() {
            p.join_pumps();
        }
        let text = std::fs::read_to_string(p.log_path()).unwrap_or_default();
        print(&text, exited.is_some());
        if let Some(status) = exited {
            break Ok(status);
        }
        if started.elapsed() > timeout {
            break Err(anyhow::anyhow!("{name} did not exit within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(if show { 500 } else { 50 }));
    };
    let output = std::fs::read_to_string(p.log_path()).unwrap_or_default();
    match status {
        Ok(status) => Ok((status, output)),
        Err(e) => Err(e.context(format!("{name}'s output:\n{output}"))),
    }
}

/// Sends `signal` to process `pid` (not one the harness spawned itself: a daemon's helper);
/// false when it could not be sent (e.g. the process is gone).
pub fn kill_pid(pid: u32, signal: i32) -> bool {
    sys::kill(pid as libc::pid_t, signal) == 0
}

/// Tries to take an exclusive `flock` on the open file `fd` without waiting; true when taken
/// (it is held until the file is closed).
pub fn try_lock(fd: std::os::fd::RawFd) -> bool {
    sys::flock_exclusive_nonblocking(fd)
}

/// Environment of KEY=VALUE pairs for a child, from a map.
/// Runs `cmd` to the end: its stdout and stderr together, or an error naming `what` with both
/// when it failed.
pub fn run_ok(what: &str, cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{what} failed ({}):\n{text}", out.status);
    }
    Ok(text)
}

pub fn envs(pairs: &BTreeMap<String, String>, cmd: &mut Command) {
    for (k, v) in pairs {
        cmd.env(k, v);
    }
}

// ---------------------------------------------------------------------------------------------

/// Spawns children from one long-lived thread: `PR_SET_PDEATHSIG` fires when the *thread*
/// that forked the child exits, so forking from short-lived test threads would kill children
/// early. This thread lives until the harness process exits.
mod spawner {
    use super::*;

    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);

    pub(super) fn spawn(cmd: Command) -> std::io::Result<Child> {
        static TX: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
        let tx = TX.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("harness-spawner".into())
                .spawn(move || {
                    for (mut cmd, reply) in rx {
                        super::sys::prepare(&mut cmd);
                        // The caller waits on the reply; gone, it no longer needs it.
                        let _ = reply.send(cmd.spawn());
                    }
                })
                .expect("spawning the harness spawner thread");
            Mutex::new(tx)
        });
        let (reply_tx, reply_rx) = mpsc::channel();
        tx.lock()
            .expect("spawner lock")
            .send((cmd, reply_tx))
            .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
        reply_rx
            .recv()
            .map_err(|_| std::io::Error::other("spawner thread is gone"))?
    }
}

/// The few raw system calls the harness needs.
#[allow(unsafe_code)]
mod sys {
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    pub(super) fn kill(pid: libc::pid_t, sig: i32) -> i32 {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, sig) }
    }

    pub(super) fn flock_exclusive_nonblocking(fd: std::os::fd::RawFd) -> bool {
        // SAFETY: flock(2) on a descriptor the caller keeps open; no memory is passed.
        unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) == 0 }
    }

    pub(super) fn prepare(cmd: &mut Command) {
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::ensure;

    #[test]
    fn free_port_never_hands_out_the_same_port_twice() {
        let ports: std::collections::HashSet<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 50);
    }

    #[tokio::test]
    async fn a_wait_retries_failed_checks_until_one_passes() {
        let mut calls = 0;
        wait_until("thing", Duration::from_secs(10), || {
            calls += 1;
            let n = calls;
            async move {
                ensure!(n > 1, "connection refused");
                Ok(n == 3)
            }
        })
        .await
        .unwrap();
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn a_wait_ends_at_once_when_a_process_it_depends_on_exited() {
        use std::os::unix::process::ExitStatusExt as _;
        let started = Instant::now();
        let e = wait_until("thing", Duration::from_secs(30), || async {
            let gone = Exited {
                name: "kafka".into(),
                status: std::process::ExitStatus::from_raw(1 << 8),
                tail: "out of memory".into(),
            };
            Err(anyhow::Error::new(gone).context("checking"))
        })
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let text = format!("{e:#}");
        assert!(text.contains("kafka exited early") && text.contains("out of memory"));
    }

    #[tokio::test]
    async fn a_wait_that_times_out_names_the_component_and_the_last_reason() {
        let e = wait_until("thing", Duration::from_millis(300), || async {
            bail!("connection refused")
        })
        .await
        .unwrap_err();
        let text = format!("{e:#}");
        assert!(text.starts_with("thing: not ready after 300ms"), "{text}");
        assert!(text.contains("connection refused"), "{text}");
    }
}
