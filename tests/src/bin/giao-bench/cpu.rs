//! Where a scenario's CPU time goes, read from Linux's `/proc` before and after it: the
//! PostgreSQL server processes, nats-server, this process (the services under test and the
//! bench's own clients run in it), everything else, and the time the machine sat idle.
//! On a machine whose cores are all busy, throughput follows CPU per operation, so this
//! says which part an improvement has to come from. Elsewhere than Linux it reports nothing.

use std::collections::HashMap;

/// `/proc` counts in USER_HZ, which Linux fixes at 100 per second for user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// The parts a scenario's CPU time is split into, in report order.
const PARTS: [&str; 4] = ["postgres", "nats-server", "bench", "other"];

pub struct Snapshot {
    /// user + system ticks by process id, with the part each process belongs to.
    processes: HashMap<u32, (&'static str, u64)>,
    /// Machine-wide busy and idle ticks, over all cores.
    busy: u64,
    idle: u64,
}

impl Snapshot {
    pub fn take() -> Option<Self> {
        let own = std::process::id();
        let mut processes = HashMap::new();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // A process can end between the listing and the read; it is simply left out.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if let Some((name, ticks)) = parse_process(&stat) {
                let part = match name {
                    _ if pid == own => "bench",
                    "postgres" => "postgres",
                    "nats-server" => "nats-server",
                    _ => "other",
                };
                processes.insert(pid, (part, ticks));
            }
        }
        let (busy, idle) = parse_machine(&std::fs::read_to_string("/proc/stat").ok()?)?;
        Some(Self {
            processes,
            busy,
            idle,
        })
    }

    /// CPU seconds per part between `self` and the later snapshot `after`, plus "idle". A
    /// process that started in between counts from zero; the time of one that ended in
    /// between is not counted (the bench keeps its connections open, so none should).
    pub fn until(&self, after: &Snapshot) -> Vec<(&'static str, f64)> {
        let mut seconds: HashMap<&'static str, f64> = HashMap::new();
        for (pid, &(part, ticks)) in &after.processes {
            let before = self
                .processes
                .get(pid)
                .filter(|(earlier, _)| *earlier == part)
                .map_or(0, |&(_, ticks)| ticks);
            *seconds.entry(part).or_default() +=
                ticks.saturating_sub(before) as f64 / TICKS_PER_SECOND;
        }
        let mut parts: Vec<(&'static str, f64)> = PARTS
            .iter()
            .map(|part| (*part, seconds.get(part).copied().unwrap_or_default()))
            .collect();
        parts.push((
            "idle",
            after.idle.saturating_sub(self.idle) as f64 / TICKS_PER_SECOND,
        ));
        parts
    }

    /// Machine-wide busy seconds (all cores) between `self` and `after`.
    pub fn busy_until(&self, after: &Snapshot) -> f64 {
        after.busy.saturating_sub(self.busy) as f64 / TICKS_PER_SECOND
    }
}

/// The command name and user + system ticks of one `/proc/<pid>/stat` line. The name sits
/// in parentheses and may itself hold spaces or parentheses, so fields are counted from the
/// last `)`.
fn parse_process(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    // After the name: state (field 3) ... utime (14) and stime (15).
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// Busy and idle ticks from the `cpu` line of `/proc/stat` (idle includes waiting on I/O).
fn parse_machine(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|value| value.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let idle = values.get(3)? + values.get(4).copied().unwrap_or_default();
    let busy = values.iter().take(8).sum::<u64>() - idle;
    Some((busy, idle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_line_with_spaces_in_the_name() {
        let stat = "4242 (tokio (rt) worker) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0";
        assert_eq!(parse_process(stat), Some(("tokio (rt) worker", 325)));
    }

    #[test]
    fn machine_line() {
        let stat = "cpu  100 5 50 1000 20 3 2 0 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
        assert_eq!(parse_machine(stat), Some((160, 1020)));
    }
}
