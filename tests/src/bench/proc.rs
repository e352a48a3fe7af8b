//! What a process used, from `/proc` (the `procfs` crate): CPU time and resident memory.

use std::time::Duration;

use anyhow::{Context, Result};
use procfs::process::Process;

/// CPU time (user + system) and memory of one process at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub cpu: Duration,
    /// Resident set size now, in MiB.
    pub rss_mib: f64,
    /// The highest resident set size so far (`VmHWM`), in MiB.
    pub peak_mib: f64,
}

/// Reads `pid`'s usage now.
pub fn usage(pid: u32) -> Result<Usage> {
    let what = || format!("reading /proc/{pid}");
    let p = Process::new(i32::try_from(pid)?).with_context(what)?;
    let stat = p.stat().with_context(what)?;
    let status = p.status().with_context(what)?;
    let ticks = (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64;
    let mib = |kib: Option<u64>| kib.unwrap_or_default() as f64 / 1024.0;
    Ok(Usage {
        cpu: Duration::from_secs_f64(ticks),
        rss_mib: mib(status.vmrss),
        peak_mib: mib(status.vmhwm),
    })
}

/// Whether `pid` still runs (a process that exited but was not reaped yet does not).
pub fn alive(pid: u32) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(|pid| Process::new(pid).ok())
        .and_then(|p| p.stat().ok())
        .is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// CPU microseconds per unit of work between two readings (0 when there was no work).
pub fn cpu_us_per(before: &Usage, after: &Usage, work: u64) -> f64 {
    if work == 0 {
        return 0.0;
    }
    after.cpu.saturating_sub(before.cpu).as_secs_f64() * 1e6 / work as f64
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn this_process_uses_some_memory_and_cpu_time_grows() {
        let before = usage(std::process::id()).unwrap();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let after = usage(std::process::id()).unwrap();
        assert!(x > 0);
        assert!(after.rss_mib > 1.0, "{after:?}");
        assert!(after.peak_mib >= after.rss_mib, "{after:?}");
        assert!(after.cpu > before.cpu, "{before:?} {after:?}");
        assert!(cpu_us_per(&before, &after, 1) > 50_000.0);
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX / 2));
    }
}
