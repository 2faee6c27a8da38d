//! What the operating system knows about a process: CPU time and resident memory from
//! `/proc/<pid>`, and the open-file limit.

use std::time::Instant;

/// Clock ticks per second of the `utime`/`stime` fields.
fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Online CPUs.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// User + system CPU seconds a process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14 and stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

/// Resident memory of a process, KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// Peak resident memory of a process, KiB (`VmHWM`).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmHWM:")
}

fn status_field(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Raises the soft open-file limit to the hard one; returns (soft, hard) afterwards.
/// Child processes (the emulator, mosquitto) inherit it.
pub fn raise_nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, 0);
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// The ephemeral port range: how many client connections one address can open to one port.
pub fn ephemeral_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<usize>().ok());
            let lo = it.next()??;
            let hi = it.next()??;
            Some(hi.saturating_sub(lo) + 1)
        })
        .unwrap_or(28_000)
}

/// Busy and total jiffies of the whole machine (`/proc/stat`, all CPUs).
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// CPU used by the emulator (or mosquitto) and by this load generator over one phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSplit {
    /// Wall-clock seconds of the phase.
    pub wall: f64,
    /// CPU seconds of the server process.
    pub server: f64,
    /// CPU seconds of this process (the load generator).
    pub load: f64,
    /// Share of all the machine's CPUs busy (anyone), percent.
    pub machine_busy: f64,
    /// Write-type system calls of the server process (`syscw` in `/proc/<pid>/io`): how well
    /// its writes coalesce, whatever else runs on the machine.
    pub server_writes: u64,
}

impl CpuSplit {
    /// Server CPU as a percentage of one core.
    pub fn server_pct(&self) -> f64 {
        pct(self.server, self.wall)
    }

    /// Load-generator CPU as a percentage of one core.
    pub fn load_pct(&self) -> f64 {
        pct(self.load, self.wall)
    }

    /// CPU used by neither process (other programs, unattributed kernel work), in % of one
    /// core. A run with much of it measured a busy machine, not the emulator.
    pub fn other_pct(&self) -> f64 {
        (self.machine_busy * cpus() as f64 - self.server_pct() - self.load_pct()).max(0.0)
    }

    /// A warning for the notes when others took more than a quarter of a core.
    pub fn noise(&self) -> Option<String> {
        let other = self.other_pct();
        (other > 25.0).then(|| {
            format!("BUSY MACHINE: other processes used {other:.0}% of a core; figures are low")
        })
    }

    /// "143% / 52% / 98%": server and load generator in % of one core, then the whole
    /// machine's busy share.
    pub fn text(&self) -> String {
        format!(
            "{:.0}% / {:.0}% / {:.0}%",
            self.server_pct(),
            self.load_pct(),
            self.machine_busy
        )
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "wall_s": round3(self.wall),
            "server_cpu_s": round3(self.server),
            "load_cpu_s": round3(self.load),
            "server_pct_of_core": round1(self.server_pct()),
            "load_pct_of_core": round1(self.load_pct()),
            "machine_busy_pct": round1(self.machine_busy),
            "other_pct_of_core": round1(self.other_pct()),
            "server_write_syscalls": self.server_writes,
        })
    }
}

fn pct(cpu: f64, wall: f64) -> f64 {
    if wall > 0.0 { 100.0 * cpu / wall } else { 0.0 }
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Starts measuring CPU of a server process and of this process.
pub struct CpuMeter {
    server_pid: u32,
    server0: f64,
    load0: f64,
    machine0: (u64, u64),
    writes0: u64,
    t0: Instant,
}

/// Write-type system calls of `pid` so far (`syscw`).
pub fn write_syscalls(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("syscw:"))
        .and_then(|v| v.trim().parse().ok())
}

impl CpuMeter {
    pub fn start(server_pid: u32) -> CpuMeter {
        CpuMeter {
            server_pid,
            server0: cpu_seconds(server_pid).unwrap_or(0.0),
            load0: cpu_seconds(std::process::id()).unwrap_or(0.0),
            machine0: machine_jiffies().unwrap_or((0, 0)),
            writes0: write_syscalls(server_pid).unwrap_or(0),
            t0: Instant::now(),
        }
    }

    pub fn stop(&self) -> CpuSplit {
        let (busy, total) = machine_jiffies().unwrap_or((0, 0));
        let (busy0, total0) = self.machine0;
        let machine_busy = if total > total0 {
            100.0 * (busy - busy0) as f64 / (total - total0) as f64
        } else {
            0.0
        };
        CpuSplit {
            machine_busy,
            wall: self.t0.elapsed().as_secs_f64(),
            server: cpu_seconds(self.server_pid).unwrap_or(0.0) - self.server0,
            load: cpu_seconds(std::process::id()).unwrap_or(0.0) - self.load0,
            server_writes: write_syscalls(self.server_pid)
                .unwrap_or(0)
                .saturating_sub(self.writes0),
        }
    }
}
