//! The teardown ledger: every process the harness starts, and every host resource it creates
//! outside its temp dirs (a directory tree that may hold mounts or be named by other processes,
//! a network device, a network namespace, a cgroup), one line each, so that a later check
//! (`journey-stack check-ledger`, the end of `make test`) can prove none of it is left.
//!
//! Lines: `<pid> <starttime> <name>` for a process; `<kind> <value>` for a resource, kind one of
//! `root`, `dir`, `netdev`, `netns`, `cgroup`, `sysctl`. `JOURNEY_PID_LEDGER` names the file (the Makefile gives
//! each `make test` run its own); the default lives in the system temp dir.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::host;

/// The ledger file.
pub fn ledger_path() -> PathBuf {
    std::env::var_os("JOURNEY_PID_LEDGER")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("journey-harness-pids"))
}

fn append(line: &str) {
    let path = ledger_path();
    match OpenOptions::new().create(true).append(true).open(&path) {
        Ok(mut f) => {
            if let Err(e) = writeln!(f, "{line}") {
                crate::say!("ledger: could not write {}: {e}", path.display());
            }
        }
        Err(e) => crate::say!("ledger: could not open {}: {e}", path.display()),
    }
}

/// Records a process the harness started (with its start time, so a reused pid is not ours).
pub fn record_process(pid: u32, name: &str) {
    let start = proc_start_time(pid).unwrap_or(0);
    append(&format!("{pid} {start} {name}"));
}

/// A host resource whose absence the teardown check proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A directory tree: nothing may stay mounted under it and no process may name it on its
    /// command line (daemons and their shims are started with paths under their root).
    Root(PathBuf),
    /// A directory the harness made outside its temp dirs, which must be gone again (a
    /// bind-mount source Docker would otherwise create on the host, e.g. `/lib/modules`).
    Dir(PathBuf),
    /// A network device in the host's namespace.
    NetDev(String),
    /// A named network namespace (`/run/netns/<name>`).
    NetNs(String),
    /// A cgroup directory.
    Cgroup(PathBuf),
    /// A kernel setting (`/proc/sys/<key>`) and the value it had before.
    Sysctl(String, String),
}

impl Resource {
    fn line(&self) -> String {
        match self {
            Resource::Root(p) => format!("root {}", p.display()),
            Resource::Dir(p) => format!("dir {}", p.display()),
            Resource::NetDev(n) => format!("netdev {n}"),
            Resource::NetNs(n) => format!("netns {n}"),
            Resource::Cgroup(p) => format!("cgroup {}", p.display()),
            Resource::Sysctl(k, v) => format!("sysctl {k} {v}"),
        }
    }

    fn parse(line: &str) -> Option<Resource> {
        let (kind, value) = line.split_once(' ')?;
        Some(match kind {
            "root" => Resource::Root(value.into()),
            "dir" => Resource::Dir(value.into()),
            "netdev" => Resource::NetDev(value.into()),
            "netns" => Resource::NetNs(value.into()),
            "cgroup" => Resource::Cgroup(value.into()),
            "sysctl" => {
                let (k, v) = value.split_once(' ')?;
                Resource::Sysctl(k.into(), v.into())
            }
            _ => return None,
        })
    }

    /// What is left of this resource, one description per leftover (empty: gone).
    pub fn leftovers(&self) -> Vec<String> {
        match self {
            Resource::Root(root) => {
                let mut out: Vec<String> = host::mounts_under(root)
                    .into_iter()
                    .map(|m| format!("{} is still mounted", m.display()))
                    .collect();
                out.extend(
                    host::processes_naming(root)
                        .into_iter()
                        .map(|(pid, cmd)| format!("pid {pid} is still running: {cmd}")),
                );
                out
            }
            Resource::Dir(p) if p.exists() => {
                vec![format!("directory {} still exists", p.display())]
            }
            Resource::NetDev(n) if Path::new("/sys/class/net").join(n).exists() => {
                vec![format!("network device {n} still exists")]
            }
            Resource::NetNs(n) if Path::new("/run/netns").join(n).exists() => {
                vec![format!("network namespace {n} still exists")]
            }
            Resource::Cgroup(p) if p.exists() => {
                vec![format!("cgroup {} still exists", p.display())]
            }
            Resource::Sysctl(k, v) => {
                let now =
                    std::fs::read_to_string(Path::new("/proc/sys").join(k)).unwrap_or_default();
                if now.trim() == v {
                    Vec::new()
                } else {
                    vec![format!("kernel setting {k} is {} (was {v})", now.trim())]
                }
            }
            _ => Vec::new(),
        }
    }

    /// Removes what is left of this resource (after a harness that was killed before its
    /// teardown): kills the processes naming a root and unmounts what is under it, deletes a
    /// network namespace or device, removes a cgroup, restores a kernel setting.
    pub fn clean(&self) -> Result<(), String> {
        match self {
            Resource::Root(root) => {
                host::kill_processes_naming(root);
                host::unmount_all_under(root).map_err(|e| format!("{e:#}"))
            }
            Resource::Dir(p) if p.exists() => {
                std::fs::remove_dir(p).map_err(|e| format!("removing {}: {e}", p.display()))
            }
            Resource::NetNs(n) if Path::new("/run/netns").join(n).exists() => {
                host::ip(&["netns", "delete", n]).map_err(|e| format!("{e:#}"))
            }
            Resource::NetDev(n) if Path::new("/sys/class/net").join(n).exists() => {
                host::ip(&["link", "delete", n]).map_err(|e| format!("{e:#}"))
            }
            Resource::Cgroup(p) if p.exists() => {
                host::kill_cgroup_tree(p);
                host::remove_cgroup_tree(p);
                Ok(())
            }
            Resource::Sysctl(k, v) => std::fs::write(Path::new("/proc/sys").join(k), v)
                .map_err(|e| format!("restoring {k}: {e}")),
            _ => Ok(()),
        }
    }
}

/// Records a host resource the harness created.
pub fn record(resource: &Resource) {
    append(&resource.line());
}

/// A process recorded in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub pid: u32,
    pub start_time: u64,
    pub name: String,
}

/// The processes in the ledger (missing file = none).
pub fn ledger_entries() -> Vec<LedgerEntry> {
    read()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            Some(LedgerEntry {
                pid: it.next()?.parse().ok()?,
                start_time: it.next()?.parse().ok()?,
                name: it.next()?.to_string(),
            })
        })
        .collect()
}

/// The resources in the ledger, each once.
pub fn resources() -> Vec<Resource> {
    let mut out: Vec<Resource> = Vec::new();
    for r in read().lines().filter_map(Resource::parse) {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

fn read() -> String {
    std::fs::read_to_string(ledger_path()).unwrap_or_default()
}

/// True when `entry`'s process is still alive (same pid AND same start time, so a reused
/// pid is not mistaken for ours). Zombies count as dead.
pub fn is_alive(entry: &LedgerEntry) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", entry.pid)) {
        Ok(stat) => {
            let (state, start) = parse_stat(&stat);
            state != Some('Z') && start == Some(entry.start_time)
        }
        Err(_) => false,
    }
}

fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).1
}

/// (state, starttime) from /proc/<pid>/stat; the command name may contain spaces and ')'.
fn parse_stat(stat: &str) -> (Option<char>, Option<u64>) {
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return (None, None);
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the comm field: state is field 3 (index 0 here), starttime field 22 (index 19).
    let state = fields.first().and_then(|s| s.chars().next());
    let start = fields.get(19).and_then(|s| s.parse().ok());
    (state, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_handles_spaces_and_parens_in_the_command_name() {
        let stat =
            "1234 (java (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 2 0 0 20 0 30 0 987654 0 0";
        assert_eq!(parse_stat(stat), (Some('S'), Some(987654)));
    }

    #[test]
    fn resources_round_trip_through_their_ledger_lines() {
        for r in [
            Resource::Root("/tmp/journey-x y".into()),
            Resource::Dir("/lib/modules".into()),
            Resource::NetDev("jny0".into()),
            Resource::NetNs("journey-node-1".into()),
            Resource::Cgroup("/sys/fs/cgroup/memory/journey".into()),
            Resource::Sysctl("kernel/panic".into(), "1".into()),
        ] {
            assert_eq!(Resource::parse(&r.line()), Some(r));
        }
        assert_eq!(Resource::parse("123 456 kafka"), None);
    }
}
