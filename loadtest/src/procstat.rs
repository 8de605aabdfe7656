//! CPU and memory of a process from `/proc`, for computing CPU-seconds over a window.
//!
//! Scripts sample before and after a measurement and divide the work done (requests,
//! probes) by the CPU-seconds spent, which compares fairly across processes even when
//! they share a 2-core machine.

use std::fs;
use std::io;

/// One sample of a process's resource use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// Process id.
    pub pid: u32,
    /// User CPU time, seconds.
    pub utime_s: f64,
    /// System CPU time, seconds.
    pub stime_s: f64,
    /// User + system CPU of reaped children, seconds (how a shell measures a child that
    /// has exited: sample the parent before and after `wait`).
    pub children_s: f64,
    /// Resident set size, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Threads.
    pub threads: u64,
    /// Wall-clock time of the sample, seconds since the Unix epoch.
    pub at_unix_s: f64,
}

impl ProcSample {
    /// User + system CPU-seconds of the process itself.
    pub fn cpu_s(&self) -> f64 {
        self.utime_s + self.stime_s
    }

    /// The sample as one line of JSON.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"pid\":{},\"cpu_seconds\":{:.3},\"utime_seconds\":{:.3},\"stime_seconds\":{:.3},\"children_cpu_seconds\":{:.3},\"rss_kib\":{},\"threads\":{},\"at\":{:.3}}}",
            self.pid,
            self.cpu_s(),
            self.utime_s,
            self.stime_s,
            self.children_s,
            self.rss_kib,
            self.threads,
            self.at_unix_s
        )
    }
}

/// CPU time of the calling thread (for a loop timed from the inside, like `send_floor`'s).
pub fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Clock ticks per second for `/proc/*/stat` times.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Samples process `pid`.
pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let at_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    parse(pid, &stat, &status, clock_ticks(), at_unix_s)
}

/// Parses the contents of `/proc/PID/stat` and `/proc/PID/status`.
pub fn parse(
    pid: u32,
    stat: &str,
    status: &str,
    ticks: f64,
    at_unix_s: f64,
) -> io::Result<ProcSample> {
    let bad =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("/proc stat: {what}"));
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| bad("no ')'"))?;
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // rest starts at field 3 (state): field N is f[N - 3].
    let field = |n: usize| -> io::Result<u64> {
        f.get(n - 3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(&format!("field {n}")))
    };
    let (utime, stime) = (field(14)?, field(15)?);
    let (cutime, cstime) = (field(16)?, field(17)?);
    let threads = field(20)?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(ProcSample {
        pid,
        utime_s: utime as f64 / ticks,
        stime_s: stime as f64 / ticks,
        children_s: (cutime + cstime) as f64 / ticks,
        rss_kib,
        threads,
        at_unix_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_comm() {
        let stat = "42 (we ird) (x)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 10 5 20 0 3 0 1000 123456 789 18446744073709551615";
        let status = "Name:\tx\nVmRSS:\t  2048 kB\nThreads:\t3\n";
        let s = parse(42, stat, status, 100.0, 1.0).expect("parse");
        assert_eq!(s.utime_s, 2.5);
        assert_eq!(s.stime_s, 0.5);
        assert_eq!(s.cpu_s(), 3.0);
        assert_eq!(s.children_s, 0.15);
        assert_eq!(s.threads, 3);
        assert_eq!(s.rss_kib, 2048);
        assert!(s.to_json().contains("\"cpu_seconds\":3.000"));
    }

    #[test]
    fn samples_self() {
        let s = sample(std::process::id()).expect("sample self");
        assert!(s.rss_kib > 0);
        assert!(s.threads >= 1);
        assert!(parse(1, "garbage", "", 100.0, 0.0).is_err());
    }
}
