//! For tests of a command line that also reads the environment (clap's `env`): parse under
//! exactly the variables a test names, whatever the caller's shell holds, so that no test
//! passes (or fails) because a variable happens to be set.

use std::ffi::OsString;

/// Every variable `cmd` and its subcommands read, sorted, once each.
pub fn env_names(cmd: &clap::Command) -> Vec<OsString> {
    let mut names: Vec<OsString> = crate::config_doc::argument_env(cmd)
        .map(ToOwned::to_owned)
        .collect();
    for sub in cmd.get_subcommands() {
        names.extend(env_names(sub));
    }
    names.sort();
    names.dedup();
    names
}

/// Runs `f` with exactly `env` set among the variables `cmd` reads and the others unset;
/// temp-env restores them afterwards and serialises such changes across tests.
///
/// # Panics
/// When `env` names a variable `cmd` does not read (a typo would make the test vacuous).
pub fn with_only_env<T>(cmd: &clap::Command, env: &[(&str, &str)], f: impl FnOnce() -> T) -> T {
    let names = env_names(cmd);
    for (k, _) in env {
        assert!(
            names.iter().any(|n| n == k),
            "{k} is not read by `{}`",
            cmd.get_name()
        );
    }
    let vars: Vec<(OsString, Option<&str>)> = names
        .into_iter()
        .map(|n| {
            let v = env.iter().find(|(k, _)| n == *k).map(|(_, v)| *v);
            (n, v)
        })
        .collect();
    temp_env::with_vars(vars, f)
}
