//! Host metrics from /proc and statvfs, named as Netflix's Atlas system agent names them:
//! `sys.cpu.utilization{id}`, `sys.load.*`, `mem.*`, `disk.io.*{dev,id}`, `disk.bytes*{id}`,
//! `net.iface.*{iface,id}`, `sys.currentProcesses`, `vmstat.procs{id}`, plus the agent's own
//! `argus.agent.process.*`. Cumulative kernel counters become per-second rates (counters in
//! the registry); levels are gauges. Every reader tolerates missing files and odd lines: one
//! bad line never stops the others.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::config::sanitize;
use crate::registry::Registry;

/// Counters from the previous collection, to take deltas.
#[derive(Default)]
pub struct HostCollector {
    root: PathBuf,
    cpu: Option<[u64; 8]>,
    counters: HashMap<String, u64>,
    self_cpu: Option<(u64, Instant)>,
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn numbers(line: &str) -> impl Iterator<Item = u64> + '_ {
    line.split_ascii_whitespace()
        .map(|t| t.parse::<u64>().unwrap_or(0))
}

impl HostCollector {
    /// `root` is where /proc is mounted (`/proc` except in tests).
    pub fn new(root: PathBuf) -> Self {
        HostCollector {
            root,
            ..HostCollector::default()
        }
    }

    /// The counter's change since the previous call (nothing on the first call or when the
    /// counter went backwards: a reset or a device replaced).
    fn delta(&mut self, key: String, now: u64) -> Option<f64> {
        let prev = self.counters.insert(key, now)?;
        (now >= prev).then(|| (now - prev) as f64)
    }

    fn add_delta(&mut self, r: &Registry, name: &str, tags: &[(&str, &str)], now: u64) {
        let mut key = name.to_string();
        for (k, v) in tags {
            key.push_str(&format!(",{k}={v}"));
        }
        if let Some(d) = self.delta(key, now) {
            r.add(name, tags, d);
        }
    }

    /// Reads everything once and updates the meters.
    pub fn collect(&mut self, r: &Registry) {
        self.cpu(r);
        self.load(r);
        self.memory(r);
        self.processes(r);
        self.disks(r);
        self.filesystems(r);
        self.network(r);
        self.own_process(r);
    }

    fn cpu(&mut self, r: &Registry) {
        let Some(stat) = read(&self.root.join("stat")) else {
            return;
        };
        let mut n_cpus = 0;
        for line in stat.lines() {
            let mut fields = line.split_ascii_whitespace();
            match fields.next() {
                Some("cpu") => {
                    let mut v = [0u64; 8];
                    for (slot, x) in v.iter_mut().zip(fields) {
                        *slot = x.parse().unwrap_or(0);
                    }
                    if let Some(prev) = self.cpu.replace(v) {
                        // user nice system idle iowait irq softirq steal
                        let d: Vec<f64> = v
                            .iter()
                            .zip(prev)
                            .map(|(a, b)| a.saturating_sub(b) as f64)
                            .collect();
                        let total: f64 = d.iter().sum();
                        if total > 0.0 {
                            let pct = |x: f64| 100.0 * x / total;
                            r.set("sys.cpu.utilization", &[("id", "user")], pct(d[0]));
                            r.set("sys.cpu.utilization", &[("id", "nice")], pct(d[1]));
                            r.set("sys.cpu.utilization", &[("id", "system")], pct(d[2]));
                            r.set("sys.cpu.utilization", &[("id", "wait")], pct(d[4]));
                            r.set(
                                "sys.cpu.utilization",
                                &[("id", "interrupt")],
                                pct(d[5] + d[6]),
                            );
                            r.set("sys.cpu.utilization", &[("id", "stolen")], pct(d[7]));
                        }
                    }
                }
                Some(label) if label.starts_with("cpu") => n_cpus += 1,
                Some("procs_running") => {
                    if let Some(n) = fields.next().and_then(|x| x.parse::<f64>().ok()) {
                        r.set("vmstat.procs", &[("id", "running")], n);
                    }
                }
                Some("procs_blocked") => {
                    if let Some(n) = fields.next().and_then(|x| x.parse::<f64>().ok()) {
                        r.set("vmstat.procs", &[("id", "blocked")], n);
                    }
                }
                Some("processes") => {
                    if let Some(n) = fields.next().and_then(|x| x.parse::<u64>().ok()) {
                        self.add_delta(r, "vmstat.procs.count", &[], n);
                    }
                }
                Some("ctxt") => {
                    if let Some(n) = fields.next().and_then(|x| x.parse::<u64>().ok()) {
                        self.add_delta(r, "vmstat.contextSwitches", &[], n);
                    }
                }
                _ => {}
            }
        }
        if n_cpus > 0 {
            r.set("sys.cpu.numProcessors", &[], f64::from(n_cpus));
        }
    }

    fn load(&self, r: &Registry) {
        let Some(text) = read(&self.root.join("loadavg")) else {
            return;
        };
        for (name, v) in ["sys.load.1", "sys.load.5", "sys.load.15"]
            .iter()
            .zip(text.split_ascii_whitespace())
        {
            if let Ok(v) = v.parse::<f64>() {
                r.set(name, &[], v);
            }
        }
    }

    fn memory(&self, r: &Registry) {
        let Some(text) = read(&self.root.join("meminfo")) else {
            return;
        };
        let mut kb: HashMap<&str, f64> = HashMap::new();
        for line in text.lines() {
            let Some((key, rest)) = line.split_once(':') else {
                continue;
            };
            let mut parts = rest.split_ascii_whitespace();
            let Some(v) = parts.next().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            let bytes = if parts.next() == Some("kB") {
                v * 1024.0
            } else {
                v
            };
            kb.insert(key, bytes);
        }
        for (name, key) in [
            ("mem.totalReal", "MemTotal"),
            ("mem.freeReal", "MemFree"),
            ("mem.availReal", "MemAvailable"),
            ("mem.buffer", "Buffers"),
            ("mem.cached", "Cached"),
            ("mem.shared", "Shmem"),
            ("mem.totalSwap", "SwapTotal"),
            ("mem.availSwap", "SwapFree"),
        ] {
            if let Some(&v) = kb.get(key) {
                r.set(name, &[], v);
            }
        }
    }

    fn processes(&self, r: &Registry) {
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            return;
        };
        let n = dir
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            })
            .count();
        r.set("sys.currentProcesses", &[], n as f64);
    }

    fn disks(&mut self, r: &Registry) {
        let Some(text) = read(&self.root.join("diskstats")) else {
            return;
        };
        for line in text.lines() {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            if f.len() < 14 {
                continue;
            }
            let major: u32 = f[0].parse().unwrap_or(0);
            // ram and loop devices are not disks
            if major == 1 || major == 7 {
                continue;
            }
            let dev = sanitize(f[2]);
            let n = |i: usize| f[i].parse::<u64>().unwrap_or(0);
            self.add_delta(
                r,
                "disk.io.ops",
                &[("dev", &dev), ("id", "read")],
                n(3) + n(4),
            );
            self.add_delta(
                r,
                "disk.io.ops",
                &[("dev", &dev), ("id", "write")],
                n(7) + n(8),
            );
            self.add_delta(
                r,
                "disk.io.bytes",
                &[("dev", &dev), ("id", "read")],
                n(5) * 512,
            );
            self.add_delta(
                r,
                "disk.io.bytes",
                &[("dev", &dev), ("id", "write")],
                n(9) * 512,
            );
        }
    }

    fn filesystems(&self, r: &Registry) {
        let Some(mounts) = read(&self.root.join("self/mounts")) else {
            return;
        };
        let skip_types = [
            "proc",
            "sysfs",
            "cgroup",
            "cgroup2",
            "devtmpfs",
            "devpts",
            "mqueue",
            "debugfs",
            "tracefs",
            "securityfs",
            "pstore",
            "bpf",
            "autofs",
            "hugetlbfs",
            "fusectl",
            "binfmt_misc",
            "configfs",
            "nsfs",
            "rpc_pipefs",
            "squashfs",
            "overlay",
            "fuse.lxcfs",
        ];
        let skip_prefixes = ["/dev", "/proc", "/sys", "/run", "/var/lib/docker", "/snap"];
        let mut seen = std::collections::HashSet::new();
        for line in mounts.lines() {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            if f.len() < 3 {
                continue;
            }
            let (device, mount, fstype) = (f[0], f[1].replace("\\040", " "), f[2]);
            if skip_types.contains(&fstype)
                || skip_prefixes.iter().any(|p| mount.starts_with(p))
                || !seen.insert(device.to_string())
            {
                continue;
            }
            let Some(st) = statvfs(&mount) else { continue };
            if st.blocks == 0 {
                continue;
            }
            let id = if mount == "/" {
                "root".to_string()
            } else {
                sanitize(mount.trim_start_matches('/'))
            };
            let tags = [("id", id.as_str())];
            let total = st.blocks as f64 * st.frsize as f64;
            let free = st.bfree as f64 * st.frsize as f64;
            r.set("disk.bytesMax", &tags, total);
            r.set("disk.bytesFree", &tags, free);
            r.set("disk.bytesUsed", &tags, total - free);
            r.set(
                "disk.bytesPercentUsed",
                &tags,
                100.0 * (total - free) / total,
            );
        }
    }

    fn network(&mut self, r: &Registry) {
        let Some(text) = read(&self.root.join("net/dev")) else {
            return;
        };
        for line in text.lines().skip(2) {
            let Some((iface, rest)) = line.split_once(':') else {
                continue;
            };
            let iface = sanitize(iface.trim());
            let v: Vec<u64> = numbers(rest).collect();
            if v.len() < 16 {
                continue;
            }
            let t = |id: &'static str| [("iface", iface.clone()), ("id", id.to_string())];
            for (name, id, value) in [
                ("net.iface.bytes", "in", v[0]),
                ("net.iface.packets", "in", v[1]),
                ("net.iface.errors", "in", v[2] + v[4] + v[5]),
                ("net.iface.droppedPackets", "in", v[3]),
                ("net.iface.bytes", "out", v[8]),
                ("net.iface.packets", "out", v[9]),
                ("net.iface.errors", "out", v[10] + v[11]),
                ("net.iface.droppedPackets", "out", v[11]),
            ] {
                let tags = t(id);
                let tags: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (*k, v.as_str())).collect();
                self.add_delta(r, name, &tags, value);
            }
        }
    }

    /// The agent's own memory and CPU (percent of one core).
    fn own_process(&mut self, r: &Registry) {
        if let Some(status) = read(&self.root.join("self/status"))
            && let Some(kb) = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_ascii_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        {
            r.set("argus.agent.process.rss", &[], kb * 1024.0);
        }
        if let Some(stat) = read(&self.root.join("self/stat"))
            && let Some((_, rest)) = stat.rsplit_once(')')
        {
            let f: Vec<u64> = numbers(rest).collect();
            if f.len() > 13 {
                let ticks = f[11] + f[12];
                let now = Instant::now();
                if let Some((prev, at)) = self.self_cpu.replace((ticks, now)) {
                    let secs = now.duration_since(at).as_secs_f64();
                    if secs > 0.0 {
                        let pct = 100.0 * ticks.saturating_sub(prev) as f64 / clock_ticks() / secs;
                        r.set("argus.agent.process.cpu", &[], pct);
                    }
                }
            }
        }
    }
}

/// Kernel clock ticks per second (USER_HZ).
fn clock_ticks() -> f64 {
    #[allow(unsafe_code)]
    // SAFETY: sysconf only reads a configuration value.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 { n as f64 } else { 100.0 }
}

struct FsStats {
    blocks: u64,
    bfree: u64,
    frsize: u64,
}

fn statvfs(path: &str) -> Option<FsStats> {
    let c = std::ffi::CString::new(path).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    #[allow(unsafe_code)]
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of the
    // right type; statvfs fills it or fails.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    #[allow(unsafe_code)]
    // SAFETY: statvfs returned 0, so it initialized `st`.
    let st = unsafe { st.assume_init() };
    Some(FsStats {
        blocks: st.f_blocks,
        bfree: st.f_bfree,
        frsize: st.f_frsize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Catalog;
    use std::sync::Arc;

    /// A fixture /proc: two collections, the second after the counters moved.
    #[test]
    fn reads_fixture_proc() {
        let dir = std::env::temp_dir().join(format!("argus-agent-proc-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("net")).unwrap();
        std::fs::create_dir_all(dir.join("123")).unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        write("loadavg", "0.29 0.06 0.02 1/659 19214");
        write(
            "meminfo",
            "MemTotal:  1000 kB\nMemAvailable: 500 kB\nHugePages_Total: 0\n",
        );
        write(
            "stat",
            "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 100 0 100 800 0 0 0 0 0 0\nprocs_running 3\nprocesses 10\n",
        );
        write(
            "diskstats",
            "   8       0 sda 10 0 100 0 20 0 200 0 0 0 0 0 0 0\n",
        );
        write(
            "net/dev",
            "Inter-|   Receive\n face |bytes\n  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n",
        );
        let catalog = Arc::new(Catalog::default());
        let r = Registry::new(catalog.clone(), Vec::new());
        let mut c = HostCollector::new(dir.clone());
        c.collect(&r);
        let _ = r.flush(60_000, 60.0);
        write(
            "stat",
            "cpu  150 0 150 900 0 0 0 0 0 0\ncpu0 150 0 150 900 0 0 0 0 0 0\nprocs_running 3\nprocesses 70\n",
        );
        write(
            "diskstats",
            "   8       0 sda 70 0 220 0 20 0 200 0 0 0 0 0 0 0\n",
        );
        write(
            "net/dev",
            "Inter-|   Receive\n face |bytes\n  eth0: 7000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n",
        );
        c.collect(&r);
        let got: HashMap<String, f64> = r
            .flush(120_000, 60.0)
            .into_iter()
            .map(|s| {
                let tags = catalog.tags(s.series).unwrap();
                let key: Vec<String> = tags
                    .iter()
                    .filter(|(k, _)| k != "atlas.dstype")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                (key.join(","), s.value)
            })
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(got["id=user,name=sys.cpu.utilization"], 25.0);
        assert_eq!(got["id=system,name=sys.cpu.utilization"], 25.0);
        assert_eq!(got["name=sys.load.1"], 0.29);
        assert_eq!(got["name=mem.availReal"], 512_000.0);
        assert_eq!(got["name=vmstat.procs.count"], 1.0);
        assert_eq!(got["dev=sda,id=read,name=disk.io.ops"], 1.0);
        assert_eq!(got["dev=sda,id=read,name=disk.io.bytes"], 1024.0);
        assert_eq!(got["id=in,iface=eth0,name=net.iface.bytes"], 100.0);
        assert_eq!(got["name=sys.currentProcesses"], 1.0);
    }
}
