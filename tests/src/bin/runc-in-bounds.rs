//! `runc-in-bounds --runc <path> -- <runc arguments>`: runc, with the capabilities of the spec
//! it reads kept inside the host's bounding set (see `journey_tests::runc_bounds`). The tests'
//! dockerd calls it through a one-line script that names the real runc.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use journey_tests::runc_bounds::{bound_spec, spec_file};

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let runc = match (args.first(), args.get(1), args.get(2)) {
        (Some(flag), Some(path), Some(sep)) if flag == "--runc" && sep == "--" => path.clone(),
        _ => {
            eprintln!("usage: runc-in-bounds --runc <path to runc> -- <runc arguments>");
            return ExitCode::from(2);
        }
    };
    args.drain(..3);
    let cwd = std::env::current_dir().unwrap_or_default();
    if let Some(spec) = spec_file(&args, &cwd) {
        // runc reports a bad spec itself; a failure here must not hide the container's own error.
        if let Err(e) = bound_spec(&spec) {
            eprintln!("runc-in-bounds: {e:#} (running runc unchanged)");
        }
    }
    let err = Command::new(&runc).args(&args).exec();
    eprintln!(
        "runc-in-bounds: cannot run {}: {err}",
        runc.to_string_lossy()
    );
    ExitCode::from(127)
}
