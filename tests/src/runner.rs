//! The main of every integration test binary (`harness = false`).
//!
//! One fixture (usually a [`Stack`](crate::stack::Stack)) is set up per binary, shared by its
//! tests, and dropped — every process stopped — before the binary exits. Tests have sentence
//! names and the standard test CLI (filters, `--list`, `--test-threads`) via libtest-mimic.
//! When a test fails, the last lines of every component log are printed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use libtest_mimic::{Arguments, Failed, Trial};

use crate::process::tail_file;
use crate::say;

/// One named test taking the shared fixture.
#[allow(missing_debug_implementations)]
pub struct Test<F> {
    pub name: &'static str,
    pub run: fn(&F) -> Result<()>,
}

/// `tests![a, b, c]` builds the list of [`Test`]s from functions named as sentences.
#[macro_export]
macro_rules! tests {
    ($($f:ident),* $(,)?) => {
        vec![$($crate::runner::Test { name: stringify!($f), run: $f }),*]
    };
}

/// What the runner needs from a fixture: where its component logs are.
pub trait Fixture: Send + Sync + 'static {
    fn logs_dirs(&self) -> Vec<PathBuf>;
}

impl Fixture for crate::stack::Stack {
    fn logs_dirs(&self) -> Vec<PathBuf> {
        vec![self.logs_dir()]
    }
}

impl Fixture for () {
    fn logs_dirs(&self) -> Vec<PathBuf> {
        Vec::new()
    }
}

/// Runs `tests` against the fixture made by `setup` (skipped for `--list`).
pub fn main<F: Fixture>(setup: impl FnOnce() -> Result<F>, tests: Vec<Test<F>>) -> ExitCode {
    run(Arguments::from_args(), setup, tests)
}

/// Like [`main`], one test at a time in the order given: for tests that change the shared
/// fixture (a fault, an uninstall) and build on what earlier ones did.
pub fn main_in_order<F: Fixture>(
    setup: impl FnOnce() -> Result<F>,
    tests: Vec<Test<F>>,
) -> ExitCode {
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    run(args, setup, tests)
}

fn run<F: Fixture>(
    args: Arguments,
    setup: impl FnOnce() -> Result<F>,
    tests: Vec<Test<F>>,
) -> ExitCode {
    if args.list {
        let trials = tests
            .iter()
            .map(|t| Trial::test(t.name, || Ok(())))
            .collect();
        return libtest_mimic::run(&args, trials).exit_code();
    }
    let fixture = match setup() {
        Ok(f) => Arc::new(f),
        Err(e) => {
            eprintln!("[harness] setting up failed: {e:#}");
            let msg = format!("setup failed: {e:#}");
            let trials = tests
                .iter()
                .map(|t| {
                    let msg = msg.clone();
                    Trial::test(t.name, move || Err(msg.into()))
                })
                .collect();
            return libtest_mimic::run(&args, trials).exit_code();
        }
    };
    let trials = tests
        .into_iter()
        .map(|t| {
            let fixture = fixture.clone();
            Trial::test(t.name, move || run_one(t.name, t.run, &fixture))
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    drop(fixture); // stops every process before the exit code is returned
    conclusion.exit_code()
}

fn run_one<F: Fixture>(name: &str, test: fn(&F) -> Result<()>, fixture: &F) -> Result<(), Failed> {
    let outcome = catch_unwind(AssertUnwindSafe(|| test(fixture)));
    let failure = match outcome {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => format!("{e:#}"),
        Err(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into()),
    };
    print_logs(name, fixture);
    hold_on_failure(name);
    Err(failure.into())
}

/// `JOURNEY_HOLD_ON_FAILURE=<seconds>`: keeps a failed test's fixture (stack, cluster) up that
/// long before teardown, to look at it by hand.
fn hold_on_failure(test: &str) {
    let Some(secs) = std::env::var("JOURNEY_HOLD_ON_FAILURE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    say!("{test}: failed; holding the fixture for {secs}s (JOURNEY_HOLD_ON_FAILURE)");
    std::thread::sleep(std::time::Duration::from_secs(secs));
}

/// Prints the tail of every component log of the fixture.
pub fn print_logs<F: Fixture>(test: &str, fixture: &F) {
    for dir in fixture.logs_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut logs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        logs.sort();
        for log in logs {
            eprintln!(
                "----- {test}: last lines of {} -----\n{}",
                log.display(),
                tail_file(&log, 60)
            );
        }
    }
    say!(
        "{test}: failed; full component logs are in the files above (JOURNEY_KEEP_TMP=1 keeps them)"
    );
}

/// Runs a future to completion on a fresh multi-threaded runtime (one per test).
pub fn block_on<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a tokio runtime")
        .block_on(fut)
}
