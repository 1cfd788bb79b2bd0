//! The worker's host, table `host`: a slow job is often a full disk, a swapping host or a
//! flapping network, not the GPU.
//!
//! | field | unit | type | source (Linux) |
//! |---|---|---|---|
//! | `cpu_utilization` | % of all CPUs | float | `/proc/stat` `cpu` line: 100 − (idle + iowait) over the interval |
//! | `cpu_iowait` | % | float | `/proc/stat` iowait over the interval |
//! | `cpu_count` | CPUs | integer | `/proc/stat` `cpuN` lines |
//! | `load1` | runnable tasks | float | `/proc/loadavg`, first number |
//! | `memory_total_mib` | MiB | integer | `/proc/meminfo` `MemTotal` |
//! | `memory_used_mib` | MiB | integer | `MemTotal` − `MemAvailable` |
//! | `swap_total_mib`, `swap_used_mib` | MiB | integer | `SwapTotal`, `SwapTotal` − `SwapFree` |
//! | `swap_in_pages_per_s`, `swap_out_pages_per_s` | pages/s | float | `/proc/vmstat` `pswpin`, `pswpout` |
//! | `disk_total_bytes`, `disk_used_bytes` | B | integer | `statvfs` of `--host-disk` (`/`) |
//! | `disk_read_bytes_per_s`, `disk_write_bytes_per_s` | B/s | float | `/proc/diskstats`, whole disks, 512-byte sectors |
//! | `disk_busy_percent` | % | float | `/proc/diskstats` time doing I/O, the busiest disk |
//! | `net_rx_bytes_per_s`, `net_tx_bytes_per_s` | B/s | float | `/proc/net/dev`, every interface but `lo` |
//! | `net_rx_errors_total`, `net_tx_errors_total` | count | integer | `/proc/net/dev` errs |
//! | `net_rx_dropped_total`, `net_tx_dropped_total` | count | integer | `/proc/net/dev` drop |
//!
//! Tags: `region` (optional), plus `supplier` and `worker`, which the server stamps. A
//! reading the host does not offer (no swap file, a container without `/proc/diskstats`) is
//! omitted, never zero; rates need two readings, so the first row has none.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rigwatch_storage::batch::FieldType;

use super::fields::push_escaped_tag;

macro_rules! host_fields {
    ($($variant:ident => $name:literal, $ty:ident;)*) => {
        /// The fields of a `host` row, in the order written.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum HostField { $($variant),* }

        /// Every field of table `host` with its type, indexed by `HostField as usize`.
        pub const FIELDS: &[(&str, FieldType)] = &[$(($name, FieldType::$ty)),*];

        impl HostField {
            /// Every field, in order.
            pub const ALL: &[HostField] = &[$(HostField::$variant),*];
        }
    };
}

host_fields! {
    CpuUtilization => "cpu_utilization", F64;
    CpuIowait => "cpu_iowait", F64;
    CpuCount => "cpu_count", I64;
    Load1 => "load1", F64;
    MemoryTotalMib => "memory_total_mib", I64;
    MemoryUsedMib => "memory_used_mib", I64;
    SwapTotalMib => "swap_total_mib", I64;
    SwapUsedMib => "swap_used_mib", I64;
    SwapInPagesPerS => "swap_in_pages_per_s", F64;
    SwapOutPagesPerS => "swap_out_pages_per_s", F64;
    DiskTotalBytes => "disk_total_bytes", I64;
    DiskUsedBytes => "disk_used_bytes", I64;
    DiskReadBytesPerS => "disk_read_bytes_per_s", F64;
    DiskWriteBytesPerS => "disk_write_bytes_per_s", F64;
    DiskBusyPercent => "disk_busy_percent", F64;
    NetRxBytesPerS => "net_rx_bytes_per_s", F64;
    NetTxBytesPerS => "net_tx_bytes_per_s", F64;
    NetRxErrorsTotal => "net_rx_errors_total", I64;
    NetTxErrorsTotal => "net_tx_errors_total", I64;
    NetRxDroppedTotal => "net_rx_dropped_total", I64;
    NetTxDroppedTotal => "net_tx_dropped_total", I64;
}

/// The table host rows go to.
pub const TABLE: &str = rigwatch_common::tables::HOST;

const FIELD_COUNT: usize = FIELDS.len();
const _: () = assert!(FIELD_COUNT <= 32);

impl HostField {
    pub fn name(self) -> &'static str {
        FIELDS[self as usize].0
    }
}

/// One reading of the host: a value per field it could read.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSample {
    values: [f64; FIELD_COUNT],
    present: u32,
}

impl Default for HostSample {
    fn default() -> Self {
        HostSample {
            values: [0.0; FIELD_COUNT],
            present: 0,
        }
    }
}

impl HostSample {
    pub fn clear(&mut self) {
        self.present = 0;
    }

    pub fn set(&mut self, f: HostField, value: f64) {
        if value.is_finite() {
            self.values[f as usize] = value;
            self.present |= 1 << f as usize;
        }
    }

    pub fn get(&self, f: HostField) -> Option<f64> {
        (self.present & (1 << f as usize) != 0).then_some(self.values[f as usize])
    }

    pub fn is_empty(&self) -> bool {
        self.present == 0
    }

    /// Appends the `host` row (`tags` is `,region=…` or empty) at `time_ns`; nothing when
    /// the sample is empty.
    pub fn push_line(&self, out: &mut String, tags: &str, time_ns: i64) {
        if self.is_empty() {
            return;
        }
        out.push_str(TABLE);
        out.push_str(tags);
        let mut sep = ' ';
        for &f in HostField::ALL {
            let Some(v) = self.get(f) else { continue };
            out.push(sep);
            sep = ',';
            let _ = match FIELDS[f as usize].1 {
                FieldType::I64 => write!(out, "{}={}i", f.name(), v.round() as i64),
                _ => write!(out, "{}={}", f.name(), v),
            };
        }
        let _ = writeln!(out, " {time_ns}");
    }
}

/// The `,region=…` tags of a `host` row.
pub fn tags(region: Option<&str>) -> String {
    let mut s = String::new();
    if let Some(r) = region {
        s.push_str(",region=");
        push_escaped_tag(&mut s, r);
    }
    s
}

/// Cumulative counters, kept between readings to turn them into rates.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    time_ns: i64,
    cpu: Option<CpuTimes>,
    swap: Option<(u64, u64)>,
    disk: Option<DiskTotals>,
    net: Option<NetTotals>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct CpuTimes {
    total: u64,
    idle: u64,
    iowait: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct DiskTotals {
    read_sectors: u64,
    write_sectors: u64,
    /// Time doing I/O (ms), per disk, for the busiest.
    io_ms: [(u64, u64); MAX_DISKS],
    disks: usize,
}

/// Most disks whose busy time is compared (arrays up to 32 have `Default`).
const MAX_DISKS: usize = 32;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct NetTotals {
    rx_bytes: u64,
    tx_bytes: u64,
    rx_errors: u64,
    tx_errors: u64,
    rx_dropped: u64,
    tx_dropped: u64,
}

/// Reads the host from `/proc` (and `statvfs` for the disk), keeping the counters of the
/// last reading for rates. `root` is `/` except in tests.
#[derive(Debug)]
pub struct ProcHost {
    root: PathBuf,
    disk: PathBuf,
    last: Option<Counters>,
    text: String,
}

impl ProcHost {
    /// The real host; disk use is of the file system holding `disk`.
    pub fn new(disk: impl Into<PathBuf>) -> Self {
        Self::with_root("/", disk)
    }

    /// A host whose `/proc` and `/sys` live under `root`.
    pub fn with_root(root: impl Into<PathBuf>, disk: impl Into<PathBuf>) -> Self {
        ProcHost {
            root: root.into(),
            disk: disk.into(),
            last: None,
            text: String::new(),
        }
    }

    fn read(&mut self, rel: &str) -> Option<&str> {
        self.text.clear();
        let path = self.root.join(rel);
        let mut f = std::fs::File::open(path).ok()?;
        std::io::Read::read_to_string(&mut f, &mut self.text).ok()?;
        Some(&self.text)
    }

    /// Reads the host at `now_ns` into `out` (cleared first).
    pub fn sample(&mut self, now_ns: i64, out: &mut HostSample) {
        out.clear();
        let mut now = Counters {
            time_ns: now_ns,
            ..Counters::default()
        };
        if let Some(text) = self.read("proc/stat") {
            let (cpu, count) = parse_stat(text);
            now.cpu = cpu;
            if count > 0 {
                out.set(HostField::CpuCount, count as f64);
            }
        }
        if let Some(load) = self
            .read("proc/loadavg")
            .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        {
            out.set(HostField::Load1, load);
        }
        if let Some(text) = self.read("proc/meminfo") {
            parse_meminfo(text, out);
        }
        if let Some(text) = self.read("proc/vmstat") {
            now.swap = parse_vmstat(text);
        }
        let whole_disks = self.whole_disks();
        if let Some(text) = self.read("proc/diskstats") {
            now.disk = Some(parse_diskstats(text, |name| {
                whole_disks.iter().any(|d| d == name)
            }));
        }
        if let Some(text) = self.read("proc/net/dev") {
            now.net = parse_net_dev(text);
        }
        if let Some(n) = now.net {
            out.set(HostField::NetRxErrorsTotal, n.rx_errors as f64);
            out.set(HostField::NetTxErrorsTotal, n.tx_errors as f64);
            out.set(HostField::NetRxDroppedTotal, n.rx_dropped as f64);
            out.set(HostField::NetTxDroppedTotal, n.tx_dropped as f64);
        }
        if let Ok(fs) = rustix::fs::statvfs(&self.disk) {
            let frsize = fs.f_frsize;
            out.set(
                HostField::DiskTotalBytes,
                fs.f_blocks.saturating_mul(frsize) as f64,
            );
            out.set(
                HostField::DiskUsedBytes,
                fs.f_blocks
                    .saturating_sub(fs.f_bfree)
                    .saturating_mul(frsize) as f64,
            );
        }
        if let Some(before) = self.last {
            rates(&before, &now, out);
        }
        self.last = Some(now);
    }

    /// The names of whole disks (`/sys/block`), without loop, RAM and device-mapper or RAID
    /// devices, which would count the same I/O twice.
    fn whole_disks(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.root.join("sys/block")) else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| {
                !["loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd"]
                    .iter()
                    .any(|p| n.starts_with(p))
            })
            .collect()
    }
}

/// Rates over the interval between two readings.
fn rates(before: &Counters, now: &Counters, out: &mut HostSample) {
    let dt_s = (now.time_ns - before.time_ns) as f64 / 1e9;
    if dt_s <= 0.0 {
        return;
    }
    let per_s = |a: u64, b: u64| b.checked_sub(a).map(|d| d as f64 / dt_s);
    if let (Some(a), Some(b)) = (before.cpu, now.cpu)
        && b.total > a.total
    {
        let total = (b.total - a.total) as f64;
        let idle = b.idle.saturating_sub(a.idle) as f64;
        let iowait = b.iowait.saturating_sub(a.iowait) as f64;
        out.set(
            HostField::CpuUtilization,
            (100.0 * (1.0 - (idle + iowait) / total)).clamp(0.0, 100.0),
        );
        out.set(
            HostField::CpuIowait,
            (100.0 * iowait / total).clamp(0.0, 100.0),
        );
    }
    if let (Some((ai, ao)), Some((bi, bo))) = (before.swap, now.swap) {
        if let Some(v) = per_s(ai, bi) {
            out.set(HostField::SwapInPagesPerS, v);
        }
        if let Some(v) = per_s(ao, bo) {
            out.set(HostField::SwapOutPagesPerS, v);
        }
    }
    if let (Some(a), Some(b)) = (before.disk, now.disk) {
        if let Some(v) = per_s(a.read_sectors, b.read_sectors) {
            out.set(HostField::DiskReadBytesPerS, v * 512.0);
        }
        if let Some(v) = per_s(a.write_sectors, b.write_sectors) {
            out.set(HostField::DiskWriteBytesPerS, v * 512.0);
        }
        let mut busiest: Option<f64> = None;
        for (key, ms) in &b.io_ms[..b.disks] {
            let Some((_, prev)) = a.io_ms[..a.disks].iter().find(|(k, _)| k == key) else {
                continue;
            };
            if let Some(d) = ms.checked_sub(*prev) {
                let pct = (d as f64 / (dt_s * 1000.0) * 100.0).min(100.0);
                busiest = Some(busiest.map_or(pct, |b: f64| b.max(pct)));
            }
        }
        if let Some(b) = busiest {
            out.set(HostField::DiskBusyPercent, b);
        }
    }
    if let (Some(a), Some(b)) = (before.net, now.net) {
        if let Some(v) = per_s(a.rx_bytes, b.rx_bytes) {
            out.set(HostField::NetRxBytesPerS, v);
        }
        if let Some(v) = per_s(a.tx_bytes, b.tx_bytes) {
            out.set(HostField::NetTxBytesPerS, v);
        }
    }
}

/// The aggregate CPU times and the number of CPUs of `/proc/stat`.
fn parse_stat(text: &str) -> (Option<CpuTimes>, usize) {
    let mut cpu = None;
    let mut count = 0;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("cpu") => {
                // user nice system idle iowait irq softirq steal (guest time is in user).
                let v: Vec<u64> = words.take(8).filter_map(|w| w.parse().ok()).collect();
                if v.len() >= 5 {
                    cpu = Some(CpuTimes {
                        total: v.iter().sum(),
                        idle: v[3],
                        iowait: v[4],
                    });
                }
            }
            Some(w) if w.starts_with("cpu") && w[3..].bytes().all(|b| b.is_ascii_digit()) => {
                count += 1;
            }
            _ => {}
        }
    }
    (cpu, count)
}

fn parse_meminfo(text: &str, out: &mut HostSample) {
    let kib = |key: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        line[key.len()..]
            .trim_start_matches(':')
            .split_whitespace()
            .next()?
            .parse::<f64>()
            .ok()
    };
    let total = kib("MemTotal");
    let available = kib("MemAvailable");
    let swap_total = kib("SwapTotal");
    let swap_free = kib("SwapFree");
    let mib = |k: f64| (k / 1024.0).round();
    if let Some(t) = total {
        out.set(HostField::MemoryTotalMib, mib(t));
        if let Some(a) = available {
            out.set(HostField::MemoryUsedMib, mib((t - a).max(0.0)));
        }
    }
    if let Some(t) = swap_total {
        out.set(HostField::SwapTotalMib, mib(t));
        if let Some(f) = swap_free {
            out.set(HostField::SwapUsedMib, mib((t - f).max(0.0)));
        }
    }
}

/// `pswpin` and `pswpout` of `/proc/vmstat`.
fn parse_vmstat(text: &str) -> Option<(u64, u64)> {
    let get = |key: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse::<u64>().ok())?
        })
    };
    Some((get("pswpin")?, get("pswpout")?))
}

/// Sectors read and written and time doing I/O, over the disks `whole` accepts.
fn parse_diskstats(text: &str, whole: impl Fn(&str) -> bool) -> DiskTotals {
    let mut t = DiskTotals::default();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        // major minor name reads merged sectors_read ms writes merged sectors_written ms
        // in_flight io_ms ...
        if w.len() < 13 || !whole(w[2]) {
            continue;
        }
        let n = |i: usize| w[i].parse::<u64>().unwrap_or(0);
        t.read_sectors += n(5);
        t.write_sectors += n(9);
        if t.disks < MAX_DISKS {
            let key = (n(0) << 32) | n(1);
            t.io_ms[t.disks] = (key, n(12));
            t.disks += 1;
        }
    }
    t
}

/// Totals over every interface but loopback.
fn parse_net_dev(text: &str) -> Option<NetTotals> {
    let mut t = NetTotals::default();
    let mut any = false;
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .map(|w| w.parse().unwrap_or(0))
            .collect();
        if v.len() < 12 {
            continue;
        }
        // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs drop
        t.rx_bytes += v[0];
        t.rx_errors += v[2];
        t.rx_dropped += v[3];
        t.tx_bytes += v[8];
        t.tx_errors += v[10];
        t.tx_dropped += v[11];
        any = true;
    }
    any.then_some(t)
}

/// Where a disk path given on the command line is checked: it must exist.
pub fn check_disk(path: &Path) -> Result<(), String> {
    rustix::fs::statvfs(path)
        .map(|_| ())
        .map_err(|e| format!("--host-disk {}: {e}", path.display()))
}

/// The host name, reduced to the characters a worker name may hold.
pub fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "worker".to_string()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root(stat: &str, diskstats: &str, net: &str, vmstat: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("proc/net")).unwrap();
        std::fs::create_dir_all(p.join("sys/block/sda")).unwrap();
        std::fs::create_dir_all(p.join("sys/block/loop0")).unwrap();
        std::fs::write(p.join("proc/stat"), stat).unwrap();
        std::fs::write(p.join("proc/diskstats"), diskstats).unwrap();
        std::fs::write(p.join("proc/net/dev"), net).unwrap();
        std::fs::write(p.join("proc/vmstat"), vmstat).unwrap();
        std::fs::write(p.join("proc/loadavg"), "2.50 1.00 0.50 3/400 1234\n").unwrap();
        std::fs::write(
            p.join("proc/meminfo"),
            "MemTotal:       16384000 kB\nMemFree:         1000000 kB\nMemAvailable:    8192000 kB\nSwapTotal:       2048000 kB\nSwapFree:        1024000 kB\n",
        )
        .unwrap();
        dir
    }

    const NET_HEAD: &str = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n";

    fn net(rx: u64, tx: u64, errs: u64) -> String {
        format!(
            "{NET_HEAD}    lo: 999999 10 0 0 0 0 0 0 999999 10 0 0 0 0 0 0\n  eth0: {rx} 100 {errs} 1 0 0 0 0 {tx} 100 0 2 0 0 0 0\n"
        )
    }

    fn disks(read: u64, written: u64, io_ms: u64) -> String {
        format!(
            "   8       0 sda 100 0 {read} 50 200 0 {written} 70 0 {io_ms} 120\n   8       1 sda1 100 0 {read} 50 200 0 {written} 70 0 {io_ms} 120\n   7       0 loop0 1 0 999999 0 0 0 999999 0 0 999999 0\n"
        )
    }

    #[test]
    fn a_host_reads_into_fields_and_rates_need_two_readings() {
        let stat1 = "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\ncpu1 50 0 50 350 50 0 0 0 0 0\nintr 1\n";
        let root = fake_root(
            stat1,
            &disks(0, 0, 0),
            &net(1000, 2000, 3),
            "pswpin 10\npswpout 20\n",
        );
        let mut host = ProcHost::with_root(root.path(), root.path());
        let mut s = HostSample::default();
        host.sample(0, &mut s);
        assert_eq!(s.get(HostField::CpuCount), Some(2.0));
        assert_eq!(s.get(HostField::Load1), Some(2.5));
        assert_eq!(s.get(HostField::MemoryTotalMib), Some(16000.0));
        assert_eq!(s.get(HostField::MemoryUsedMib), Some(8000.0));
        assert_eq!(s.get(HostField::SwapUsedMib), Some(1000.0));
        assert_eq!(s.get(HostField::NetRxErrorsTotal), Some(3.0));
        assert_eq!(s.get(HostField::NetTxDroppedTotal), Some(2.0));
        assert!(s.get(HostField::DiskTotalBytes).unwrap() > 0.0);
        // The first reading has no rates.
        assert_eq!(s.get(HostField::CpuUtilization), None);
        assert_eq!(s.get(HostField::NetRxBytesPerS), None);

        // Two seconds later: 1000 more CPU ticks, 600 of them busy and 100 iowait.
        let stat2 = "cpu  400 0 400 1000 200 0 0 0 0 0\ncpu0 1 0 0 0 0 0 0 0 0 0\ncpu1 1 0 0 0 0 0 0 0 0 0\n";
        let p = root.path();
        std::fs::write(p.join("proc/stat"), stat2).unwrap();
        std::fs::write(p.join("proc/diskstats"), disks(4000, 8000, 500)).unwrap();
        std::fs::write(p.join("proc/net/dev"), net(3000, 2000, 3)).unwrap();
        std::fs::write(p.join("proc/vmstat"), "pswpin 30\npswpout 20\n").unwrap();
        host.sample(2_000_000_000, &mut s);
        assert_eq!(s.get(HostField::CpuUtilization), Some(60.0));
        assert_eq!(s.get(HostField::CpuIowait), Some(10.0));
        // Partitions and loop devices are not counted: sda only.
        assert_eq!(
            s.get(HostField::DiskReadBytesPerS),
            Some(4000.0 * 512.0 / 2.0)
        );
        assert_eq!(
            s.get(HostField::DiskWriteBytesPerS),
            Some(8000.0 * 512.0 / 2.0)
        );
        assert_eq!(s.get(HostField::DiskBusyPercent), Some(25.0));
        assert_eq!(s.get(HostField::NetRxBytesPerS), Some(1000.0));
        assert_eq!(s.get(HostField::NetTxBytesPerS), Some(0.0));
        assert_eq!(s.get(HostField::SwapInPagesPerS), Some(10.0));
        assert_eq!(s.get(HostField::SwapOutPagesPerS), Some(0.0));
    }

    #[test]
    fn what_a_host_cannot_tell_is_omitted() {
        let dir = tempfile::tempdir().unwrap();
        let mut host = ProcHost::with_root(dir.path(), dir.path().join("missing"));
        let mut s = HostSample::default();
        host.sample(0, &mut s);
        host.sample(1_000_000_000, &mut s);
        assert!(s.is_empty(), "{s:?}");
        let mut out = String::new();
        s.push_line(&mut out, "", 1);
        assert_eq!(out, "");
    }

    #[test]
    fn the_line_has_integer_suffixes_and_region() {
        let mut s = HostSample::default();
        s.set(HostField::CpuUtilization, 12.5);
        s.set(HostField::MemoryUsedMib, 1024.0);
        let mut out = String::new();
        s.push_line(&mut out, &tags(Some("eu west")), 7);
        assert_eq!(
            out,
            "host,region=eu\\ west cpu_utilization=12.5,memory_used_mib=1024i 7\n"
        );
    }

    #[test]
    fn the_real_host_reads_on_linux() {
        let mut host = ProcHost::new("/");
        let mut s = HostSample::default();
        host.sample(0, &mut s);
        std::thread::sleep(std::time::Duration::from_millis(200));
        host.sample(200_000_000, &mut s);
        for f in [
            HostField::CpuCount,
            HostField::MemoryTotalMib,
            HostField::DiskTotalBytes,
            HostField::CpuUtilization,
        ] {
            assert!(s.get(f).is_some(), "{} missing: {s:?}", f.name());
        }
    }
}
