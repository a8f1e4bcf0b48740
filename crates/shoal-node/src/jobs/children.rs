//! The processes an `exec` attempt starts, kept on a short leash.
//!
//! ```text
//!  spawn: own process group, no SHOAL_* variables (the node's key, token) ──► record
//!         <data>/exec-groups/<pgid> = the leader's start time
//!  output: lines of at most LINE_BYTES_MAX, invalid UTF-8 replaced, never stops reading
//!  end:   normal exit → record removed; attempt dropped (worker stopping) → the group
//!         is killed; worker killed (-9) → the next start kills what the records name
//! ```

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};

/// Longest output line kept; the rest of a longer line is dropped and the cut noted.
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// Removes every `SHOAL_*` variable the worker has from a child's environment (the
/// spec's own `env` is applied after, so a job may still set one on purpose).
pub(crate) fn scrub_env(cmd: &mut tokio::process::Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SHOAL_") {
            cmd.env_remove(key);
        }
    }
}

/// Calls `each` with every line `r` yields, at most [`LINE_BYTES_MAX`] bytes each
/// (a longer one is cut and ends with `…[cut N bytes]`), invalid UTF-8 replaced by
/// U+FFFD. Reads to the end whatever comes, so the child never blocks on a full pipe.
pub(crate) async fn read_lines<R: AsyncRead + Unpin>(r: R, mut each: impl FnMut(&str)) {
    let mut reader = BufReader::new(r);
    let mut line: Vec<u8> = Vec::new();
    let mut cut = 0usize;
    loop {
        let chunk = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(chunk) => chunk,
        };
        let (piece, newline) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        let room = LINE_BYTES_MAX - line.len();
        line.extend_from_slice(&piece[..piece.len().min(room)]);
        cut += piece.len().saturating_sub(room);
        let used = newline.unwrap_or(piece.len());
        reader.consume(used);
        if newline.is_some() {
            emit(&mut line, &mut cut, &mut each);
        }
    }
    if !line.is_empty() || cut > 0 {
        emit(&mut line, &mut cut, &mut each);
    }
}

fn emit(line: &mut Vec<u8>, cut: &mut usize, each: &mut impl FnMut(&str)) {
    let mut text = String::from_utf8_lossy(line).into_owned();
    if text.ends_with('\r') {
        text.pop();
    }
    if *cut > 0 {
        text.push_str(&format!("…[cut {cut} bytes]"));
    }
    each(&text);
    line.clear();
    *cut = 0;
}

/// Where a worker records the process groups of its running `exec` attempts.
#[derive(Debug)]
pub struct GroupRecords {
    dir: PathBuf,
}

impl GroupRecords {
    /// `<data_dir>/exec-groups`, created if missing.
    pub fn open(data_dir: &Path) -> std::io::Result<Arc<Self>> {
        let dir = data_dir.join("exec-groups");
        std::fs::create_dir_all(&dir)?;
        Ok(Arc::new(Self { dir }))
    }

    /// Kills every group a previous run of this worker recorded and did not see end
    /// (it was killed, or the machine lost power): each whose leader is the process
    /// recorded (same start time), or whose leader is gone while members remain.
    /// Returns how many groups were killed.
    pub fn kill_leftovers(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut killed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let pgid = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u32>().ok());
            let recorded = std::fs::read_to_string(&path).ok();
            if let (Some(pgid), Some(recorded)) = (pgid, recorded) {
                let ours = match start_time(pgid) {
                    Some(now) => now == recorded.trim(),
                    None => group_exists(pgid),
                };
                if ours {
                    kill_group(Some(pgid));
                    killed += 1;
                    tracing::warn!(
                        pgid,
                        "killed the processes of an attempt a previous run left behind"
                    );
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        killed
    }

    /// Records a started group; the guard kills it if dropped before `finished`.
    pub(crate) fn guard(self: &Arc<Self>, pgid: Option<u32>) -> GroupGuard {
        let record = pgid.and_then(|p| {
            let path = self.dir.join(p.to_string());
            let start = start_time(p)?;
            std::fs::write(&path, start).ok()?;
            Some(path)
        });
        GroupGuard { pgid, record }
    }
}

/// Kills its process group when dropped, unless the attempt ended on its own first.
pub(crate) struct GroupGuard {
    pgid: Option<u32>,
    record: Option<PathBuf>,
}

impl GroupGuard {
    /// A guard that records nothing (no records directory).
    pub(crate) fn unrecorded(pgid: Option<u32>) -> Self {
        Self { pgid, record: None }
    }

    /// The leader was reaped: forget the group (nothing to kill on drop).
    pub(crate) fn finished(mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.pgid.is_some() {
            kill_group(self.pgid);
        }
        if let Some(path) = self.record.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// SIGKILL to a whole process group.
pub(crate) fn kill_group(pgid: Option<u32>) {
    let Some(pid) = pgid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) else {
        return;
    };
    if let Err(e) = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
        tracing::debug!(error = %e, "kill process group");
    }
}

/// Whether any process is in group `pgid` (signal 0 probes without sending).
fn group_exists(pgid: u32) -> bool {
    rustix::process::Pid::from_raw(pgid as i32)
        .is_some_and(|p| rustix::process::test_kill_process_group(p).is_ok())
}

/// A process's start time (clock ticks since boot, /proc/PID/stat field 22): with the
/// pid, it names one process even after pids wrap.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        read_lines(bytes, |l| out.push(l.to_string())).await;
        out
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_bad_utf8_replaced() {
        assert_eq!(lines_of(b"a\nb\r\nc").await, ["a", "b", "c"]);
        let bad = lines_of(b"ok \xff\xfe end\nnext\n").await;
        assert_eq!(bad, ["ok \u{fffd}\u{fffd} end", "next"]);
        let mut big = vec![b'x'; LINE_BYTES_MAX + 1000];
        big.extend_from_slice(b"\nafter\n");
        let cut = lines_of(&big).await;
        assert_eq!(cut.len(), 2);
        assert!(
            cut[0].ends_with("…[cut 1000 bytes]"),
            "{}",
            &cut[0][cut[0].len() - 30..]
        );
        assert_eq!(cut[0].len(), LINE_BYTES_MAX + "…[cut 1000 bytes]".len());
        assert_eq!(cut[1], "after");
        // A megabyte without a newline is read to the end (the child never blocks).
        let huge = vec![b'y'; 1 << 20];
        let one = lines_of(&huge).await;
        assert_eq!(one.len(), 1);
        assert!(one[0].ends_with(&format!("…[cut {} bytes]", (1 << 20) - LINE_BYTES_MAX)));
    }

    /// A worker killed with -9 leaves its attempts' groups running and recorded; the
    /// next start kills them. A record whose pid now names another process is not
    /// acted on.
    #[tokio::test]
    async fn a_restarted_worker_kills_what_its_predecessor_left() {
        use std::os::unix::process::CommandExt as _;
        let dir = std::env::temp_dir().join(format!("shoal-groups-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let records = GroupRecords::open(&dir).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let guard = records.guard(Some(child.id()));
        std::mem::forget(guard); // the worker died: nothing ran its drop
        // A stale record: pid 1's start time is not "1".
        std::fs::write(dir.join("exec-groups").join("1"), "1").unwrap();
        let again = GroupRecords::open(&dir).unwrap();
        assert_eq!(again.kill_leftovers(), 1);
        let status = child.wait().unwrap();
        assert!(!status.success(), "the leftover was killed: {status:?}");
        assert_eq!(
            std::fs::read_dir(dir.join("exec-groups")).unwrap().count(),
            0
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
