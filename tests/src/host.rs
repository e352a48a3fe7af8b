//! Host state the harness inspects and cleans up: mounts (from `/proc/self/mountinfo`) and
//! processes (from `/proc/<pid>/cmdline`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Mount points at or under `root`, deepest last in mount order (as the kernel lists them).
pub fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mount_path(m)))
        .filter(|m| m.starts_with(root))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal `\NNN`.
fn unescape_mount_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && let Ok(code) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(code as char);
            i += 4;
            continue;
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

/// Unmounts everything at or under `root`, deepest first; a mount that is busy is detached
/// (lazy unmount) so the tree can be removed.
pub fn unmount_all_under(root: &Path) -> Result<()> {
    let mut mounts = mounts_under(root);
    // Later mounts can sit on top of earlier ones: unmount in reverse order.
    mounts.reverse();
    for m in mounts {
        let out = Command::new("umount")
            .arg("--lazy")
            .arg(&m)
            .output()
            .context("running umount")?;
        // A parent's unmount may already have taken this one with it.
        if !out.status.success() && !mounts_under(&m).is_empty() {
            bail!(
                "umount {} failed: {}",
                m.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

/// Processes (other than this one) whose command line contains `needle`'s path: daemons and
/// their helpers started with paths under a test's directory.
pub fn processes_naming(needle: &Path) -> Vec<(u32, String)> {
    let needle = needle.to_string_lossy().to_string();
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.contains(&needle) {
            out.push((pid, cmd.trim().to_string()));
        }
    }
    out
}

/// SIGKILLs every process whose command line names `needle`; returns how many.
pub fn kill_processes_naming(needle: &Path) -> usize {
    let found = processes_naming(needle);
    for (pid, _) in &found {
        crate::process::kill_pid(*pid, libc::SIGKILL);
    }
    found.len()
}

/// Runs `ip` (iproute2) with `args`; an error with its output if it failed.
pub fn ip(args: &[&str]) -> Result<()> {
    crate::process::run_ok(
        &format!("ip {}", args.join(" ")),
        Command::new("ip").args(args),
    )
    .map(drop)
}

/// SIGKILLs every process in a cgroup tree; returns how many.
pub fn kill_cgroup_tree(dir: &Path) -> usize {
    let n = signal_cgroup_tree(dir);
    // Give the kernel a moment to reap them before the cgroups are removed.
    if n > 0 {
        std::thread::sleep(Duration::from_millis(300));
    }
    n
}

fn signal_cgroup_tree(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
            if crate::process::kill_pid(pid, libc::SIGKILL) {
                n += 1;
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                n += signal_cgroup_tree(&e.path());
            }
        }
    }
    n
}

/// Removes an (empty of processes) cgroup directory tree, deepest first.
pub fn remove_cgroup_tree(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        crate::say!("cgroup {} not removed: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_path(r"/tmp/plain"), "/tmp/plain");
        assert_eq!(unescape_mount_path(r"/x\134y"), r"/x\y");
    }

    #[test]
    fn the_root_file_system_is_listed_as_mounted() {
        assert!(mounts_under(Path::new("/")).contains(&PathBuf::from("/")));
        assert!(mounts_under(Path::new("/no/such/journey/dir")).is_empty());
    }

    #[test]
    fn a_process_is_found_by_a_path_on_its_command_line() {
        use crate::wait::{NotYet, deadline};
        use backon::BlockingRetryable as _;

        let marker = std::env::temp_dir().join(format!("journey-marker-{}", std::process::id()));
        // The marker is the shell's $0: on the command line, unused. The shell waits on a
        // builtin (`read` from a pipe), so no second process (a fork) carries the marker.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("read line")
            .arg(&marker)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        // The child is listed once it has exec'd its command line.
        let found = (|| {
            let found = processes_naming(&marker);
            if found.is_empty() {
                Err(NotYet)
            } else {
                Ok(found)
            }
        })
        .retry(deadline(Duration::from_secs(2), Duration::from_millis(20)))
        .call()
        .unwrap_or_default();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(kill_processes_naming(&marker), 1);
        child.wait().expect("wait");
        assert!(processes_naming(&marker).is_empty());
    }
}
