//! CPU time (user + system) of a process tree and of this process, from `/proc`.

use anyhow::{Context, Result};

/// Linux reports `/proc/*/stat` times in USER_HZ, which is 100 on every architecture.
const TICKS_PER_SECOND: f64 = 100.0;

struct Stat {
    pid: u32,
    parent: u32,
    ticks: u64,
}

fn stat(path: &str) -> Result<Stat> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    let (head, rest) = text.rsplit_once(')').context("malformed stat")?;
    let pid = head
        .split_whitespace()
        .next()
        .context("no pid in stat")?
        .parse()?;
    // After the command name: state, ppid, ..., utime (12th), stime (13th).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> { Ok(fields.get(i).context("short stat")?.parse()?) };
    Ok(Stat {
        pid,
        parent: u32::try_from(field(1)?)?,
        ticks: field(11)? + field(12)?,
    })
}

/// CPU seconds used so far by `root` and every live descendant of it.
pub fn process_tree_seconds(root: u32) -> Result<f64> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").context("list /proc")? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.bytes().all(|b| b.is_ascii_digit()) {
            // A process may end between listing and reading: skip it.
            if let Ok(stat) = stat(&format!("/proc/{name}/stat")) {
                all.push(stat);
            }
        }
    }
    let mut tree = vec![root];
    let mut ticks = 0;
    let mut i = 0;
    while let Some(&pid) = tree.get(i) {
        for process in &all {
            if process.pid == pid {
                ticks += process.ticks;
            }
            if process.parent == pid {
                tree.push(process.pid);
            }
        }
        i += 1;
    }
    anyhow::ensure!(all.iter().any(|p| p.pid == root), "no process {root}");
    Ok(ticks as f64 / TICKS_PER_SECOND)
}

/// CPU seconds used so far by this process (all threads).
pub fn own_seconds() -> Result<f64> {
    Ok(stat("/proc/self/stat")?.ticks as f64 / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_its_own_tree() {
        let mut spin = 0u64;
        for i in 0..20_000_000u64 {
            spin = spin.wrapping_add(i ^ spin);
        }
        assert!(spin != 1);
        let own = own_seconds().unwrap();
        let tree = process_tree_seconds(std::process::id()).unwrap();
        assert!(tree >= own);
    }
}
