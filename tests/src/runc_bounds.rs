//! An OCI runtime in front of runc that keeps a container's capabilities inside the host's
//! bounding set (`runc-in-bounds`, registered with the tests' dockerd as its default runtime).
//!
//! Why: the machines the tests run on have a capability bounding set without
//! `CAP_SYS_RESOURCE`. Docker 20.10 gives a `--privileged` container every capability the kernel
//! knows, runc then fails with "unable to apply caps: operation not permitted", and kind starts
//! every node `--privileged`. This runtime removes, from the spec runc receives, each capability
//! the bounding set lacks — the bundle's `config.json` for `create`/`run`, the `--process` file
//! for `exec` — then execs runc with the same arguments. On a host whose bounding set is full
//! it changes nothing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result};
use caps::{CapSet, Capability, CapsHashSet};
use serde_json::Value;

/// The five sets of an OCI `process.capabilities` object.
const SETS: [&str; 5] = [
    "bounding",
    "effective",
    "inheritable",
    "permitted",
    "ambient",
];

/// runc's global options that take a value (`--root /x` or `--root=/x`).
const GLOBAL_WITH_VALUE: [&str; 5] = ["--root", "--log", "--log-format", "--criu", "--rootless"];

/// A spec file runc reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// A bundle's `config.json` (`create`, `run`): capabilities under `process`.
    Config(PathBuf),
    /// An `exec --process` file: capabilities at the top.
    Process(PathBuf),
}

/// The spec file runc will read for this invocation, if it reads one: `config.json` of the
/// bundle (`--bundle`/`-b`, default the working directory) for `create` and `run`, the
/// `--process`/`-p` file for `exec`.
pub fn spec_file(args: &[OsString], cwd: &Path) -> Option<Spec> {
    let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap_or("")).collect();
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') {
        let takes_value = GLOBAL_WITH_VALUE.contains(&args[i]);
        i += if takes_value { 2 } else { 1 };
    }
    let command = *args.get(i)?;
    let rest = &args[i + 1..];
    match command {
        "create" | "run" => Some(Spec::Config(
            option_value(rest, &["--bundle", "-b"])
                .map(PathBuf::from)
                .unwrap_or_else(|| cwd.to_path_buf())
                .join("config.json"),
        )),
        "exec" => option_value(rest, &["--process", "-p"]).map(|p| Spec::Process(p.into())),
        _ => None,
    }
}

/// The value of the first of `names` in `args` (`--name value`, `--name=value`, `-n value`).
fn option_value<'a>(args: &[&'a str], names: &[&str]) -> Option<&'a str> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if *a == "--" {
            return None;
        }
        for name in names {
            if a == name {
                return it.next().copied();
            }
            if let Some(v) = a.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
                return Some(v);
            }
        }
    }
    None
}

/// Removes from `caps` (an OCI capabilities object) every capability not in `bounding`.
/// Names this crate does not know are kept: runc decides about them as before. Returns the
/// names removed (each once).
pub fn keep_within(caps: &mut Value, bounding: &CapsHashSet) -> Vec<String> {
    let mut removed: Vec<String> = Vec::new();
    for set in SETS {
        let Some(list) = caps.get_mut(set).and_then(Value::as_array_mut) else {
            continue;
        };
        list.retain(|name| {
            let Some(name) = name.as_str() else {
                return true;
            };
            match Capability::from_str(name) {
                Ok(cap) if !bounding.contains(&cap) => {
                    if !removed.iter().any(|r| r == name) {
                        removed.push(name.to_string());
                    }
                    false
                }
                _ => true,
            }
        });
    }
    removed
}

/// Rewrites the spec runc is about to read (see [`spec_file`]) so that its capabilities fit the
/// bounding set of this process. Returns the capabilities removed.
pub fn bound_spec(spec: &Spec) -> Result<Vec<String>> {
    let (path, is_process_file) = match spec {
        Spec::Config(p) => (p.as_path(), false),
        Spec::Process(p) => (p.as_path(), true),
    };
    let bounding = caps::read(None, CapSet::Bounding).context("reading the bounding set")?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut spec: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let caps = if is_process_file {
        spec.get_mut("capabilities")
    } else {
        spec.get_mut("process")
            .and_then(|p| p.get_mut("capabilities"))
    };
    let Some(caps) = caps else {
        return Ok(Vec::new());
    };
    let removed = keep_within(caps, &bounding);
    if !removed.is_empty() {
        let tmp = path.with_extension("in-bounds.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&spec)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn create_reads_the_bundles_config_whatever_the_global_options() {
        let cwd = Path::new("/cwd");
        assert_eq!(
            spec_file(
                &args(
                    "--root /run/r --log /l.json --log-format json --systemd-cgroup create --bundle /b --pid-file /p id"
                ),
                cwd
            ),
            Some(Spec::Config("/b/config.json".into()))
        );
        assert_eq!(
            spec_file(&args("--root=/r create -b /b2 id"), cwd),
            Some(Spec::Config("/b2/config.json".into()))
        );
        assert_eq!(
            spec_file(&args("run --bundle=/b3 id"), cwd),
            Some(Spec::Config("/b3/config.json".into()))
        );
        assert_eq!(
            spec_file(&args("create id"), cwd),
            Some(Spec::Config("/cwd/config.json".into()))
        );
    }

    #[test]
    fn exec_reads_its_process_file_and_other_commands_read_none() {
        let cwd = Path::new("/cwd");
        assert_eq!(
            spec_file(
                &args("--root /r exec --process /tmp/p.json --detach --pid-file /p id"),
                cwd
            ),
            Some(Spec::Process("/tmp/p.json".into()))
        );
        assert_eq!(
            spec_file(&args("--root /r exec -p=/x.json id"), cwd),
            Some(Spec::Process("/x.json".into()))
        );
        for other in [
            "--root /r start id",
            "--root /r delete --force id",
            "state id",
            "--version",
        ] {
            assert_eq!(spec_file(&args(other), cwd), None, "{other}");
        }
    }

    #[test]
    fn capabilities_outside_the_bounding_set_are_removed_from_every_set() {
        let mut caps = json!({
            "bounding": ["CAP_CHOWN", "CAP_SYS_RESOURCE", "CAP_NET_ADMIN"],
            "effective": ["CAP_SYS_RESOURCE", "CAP_CHOWN"],
            "permitted": ["CAP_SYS_RESOURCE"],
            "inheritable": [],
        });
        let bounding: CapsHashSet = [Capability::CAP_CHOWN, Capability::CAP_NET_ADMIN]
            .into_iter()
            .collect();
        let removed = keep_within(&mut caps, &bounding);
        assert_eq!(removed, ["CAP_SYS_RESOURCE"]);
        assert_eq!(
            caps,
            json!({
                "bounding": ["CAP_CHOWN", "CAP_NET_ADMIN"],
                "effective": ["CAP_CHOWN"],
                "permitted": [],
                "inheritable": [],
            })
        );
    }

    #[test]
    fn a_full_bounding_set_or_an_unknown_name_changes_nothing() {
        let original = json!({"bounding": ["CAP_SYS_RESOURCE", "CAP_FUTURE_THING"]});
        let mut caps = original.clone();
        assert!(keep_within(&mut caps, &caps::all()).is_empty());
        assert_eq!(caps, original);
        let mut caps = original.clone();
        let removed = keep_within(&mut caps, &CapsHashSet::new());
        assert_eq!(removed, ["CAP_SYS_RESOURCE"]);
        assert_eq!(caps, json!({"bounding": ["CAP_FUTURE_THING"]}));
    }

    #[test]
    fn the_spec_file_is_rewritten_only_when_something_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        let bounding = caps::read(None, CapSet::Bounding).unwrap();
        let outside: Vec<String> = caps::all()
            .difference(&bounding)
            .map(|c| c.to_string())
            .collect();
        let mut all: Vec<String> = bounding.iter().map(|c| c.to_string()).collect();
        all.extend(outside.iter().cloned());
        let spec = json!({"ociVersion": "1.0.2", "process": {"capabilities": {"bounding": all, "effective": all}}});
        std::fs::write(&config, serde_json::to_vec(&spec).unwrap()).unwrap();
        let removed = bound_spec(&Spec::Config(config.clone())).unwrap();
        let mut expected = outside.clone();
        expected.sort();
        let mut got = removed.clone();
        got.sort();
        assert_eq!(got, expected);
        let after: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        let kept = after["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert_eq!(kept.len(), bounding.len());
        assert_eq!(after["ociVersion"], "1.0.2");
    }
}
