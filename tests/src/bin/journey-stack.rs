//! `journey-stack`: the local stack outside of tests.
//!
//! - `journey-stack check-ledger`: proves that no process the harness recorded in the PID
//!   ledger is still alive (run at the end of `make test`); kills and reports any that are.

use std::process::ExitCode;

use journey_tests::process::{is_alive, ledger_entries, ledger_path};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check-ledger") => check_ledger(),
        _ => {
            eprintln!("usage: journey-stack check-ledger");
            ExitCode::from(2)
        }
    }
}

fn check_ledger() -> ExitCode {
    let entries = ledger_entries();
    let alive: Vec<_> = entries.iter().filter(|e| is_alive(e)).collect();
    if alive.is_empty() {
        println!(
            "teardown: {} processes recorded in {}, none alive",
            entries.len(),
            ledger_path().display()
        );
        return ExitCode::SUCCESS;
    }
    for e in &alive {
        eprintln!("teardown: {} (pid {}) is still alive: killing it", e.name, e.pid);
        // Safe through std: no signal API; use the kill command.
        let _ = std::process::Command::new("kill")
            .args(["-9", &e.pid.to_string()])
            .status();
    }
    eprintln!(
        "teardown: FAILED: {} of {} recorded processes outlived the tests (harness bug: a Managed process was leaked)",
        alive.len(),
        entries.len()
    );
    ExitCode::FAILURE
}
