//! Whole-process measurement: wall time, CPU time and peak RSS from `wait4`'s rusage, and peak
//! RssAnon by polling `/proc/PID/status` (the kernel keeps no high-water mark for it).
//!
//! RssAnon is the figure that matters for a streaming tool: RSS also counts the pages of
//! memory-mapped inputs, which the kernel can drop at any time and which grow with the model.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One measured run of a command.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sample {
    /// Wall-clock seconds.
    pub wall_s: f64,
    /// User + system CPU seconds.
    pub cpu_s: f64,
    /// Peak resident set (KiB, `ru_maxrss`).
    pub max_rss_kib: u64,
    /// Peak anonymous resident memory seen while polling (KiB).
    pub max_rss_anon_kib: u64,
}

fn rss_anon_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("RssAnon:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Run `cmd` to completion (stdout and stderr discarded unless it fails) and measure it.
pub fn run(cmd: &mut Command) -> anyhow::Result<Sample> {
    let t0 = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run {cmd:?}: {e}"))?;
    let pid = child.id() as i32;
    // Drain stderr on a thread so a chatty child never blocks on a full pipe.
    let mut stderr = child.stderr.expect("piped stderr");
    let drain = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let mut peak_anon = 0u64;
    let mut status = 0i32;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        if let Some(a) = rss_anon_kib(pid) {
            peak_anon = peak_anon.max(a);
        }
        // SAFETY: plain syscall on our own child; the pointers are valid for the call.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        anyhow::ensure!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        std::thread::sleep(Duration::from_millis(3));
    }
    let wall_s = t0.elapsed().as_secs_f64();
    let err = drain.join().unwrap_or_default();
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    anyhow::ensure!(
        ok,
        "{cmd:?} failed (status {status}):\n{}",
        err.chars().rev().take(2000).collect::<String>().chars().rev().collect::<String>()
    );
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    Ok(Sample {
        wall_s,
        cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss as u64,
        max_rss_anon_kib: peak_anon,
    })
}

/// The sample with the median wall time (the upper median for an even count).
pub fn median(samples: &[Sample]) -> Sample {
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.wall_s.total_cmp(&b.wall_s));
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleeping_child_takes_wall_time_but_little_cpu() {
        let s = run(Command::new("sleep").arg("0.2")).unwrap();
        assert!(s.wall_s >= 0.2, "{s:?}");
        assert!(s.cpu_s < 0.1, "{s:?}");
        assert!(s.max_rss_kib > 0, "{s:?}");
    }

    #[test]
    fn a_failing_child_is_an_error() {
        assert!(run(&mut Command::new("false")).is_err());
    }

    #[test]
    fn median_picks_the_middle_wall_time() {
        let s = |w| Sample { wall_s: w, cpu_s: 0.0, max_rss_kib: 0, max_rss_anon_kib: 0 };
        assert_eq!(median(&[s(3.0), s(1.0), s(2.0)]).wall_s, 2.0);
    }
}
