//! Following JSON-lines files (a service's log) into an event stream, as `tail -F` would:
//! new complete lines are read every poll; a file that is replaced or truncated (log
//! rotation) is read again from its start. A line that is not a JSON object is counted and
//! skipped.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::health::Health;
use crate::intake::EventBatcher;

const POLL: Duration = Duration::from_millis(250);
/// Longest line kept; longer ones are skipped (and counted).
const MAX_LINE: usize = 256 * 1024;

struct Follower {
    path: PathBuf,
    inode: u64,
    offset: u64,
    partial: Vec<u8>,
}

impl Follower {
    /// Starts at the end of the file as it is now: only new lines are events.
    fn new(path: PathBuf) -> Self {
        let (inode, offset) = std::fs::metadata(&path)
            .map(|m| (m.ino(), m.len()))
            .unwrap_or((0, 0));
        Follower {
            path,
            inode,
            offset,
            partial: Vec::new(),
        }
    }

    /// Complete lines appended since the last call.
    fn read_lines(&mut self) -> Vec<Vec<u8>> {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return Vec::new();
        };
        if meta.ino() != self.inode || meta.len() < self.offset {
            // Rotated or truncated: the new file is read from its start.
            self.inode = meta.ino();
            self.offset = 0;
            self.partial.clear();
        }
        if meta.len() == self.offset {
            return Vec::new();
        }
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let Ok(n) = file.take(16 << 20).read_to_end(&mut buf) else {
            return Vec::new();
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let mut lines = Vec::new();
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            lines.push(line[..line.len() - 1].to_vec());
        }
        if self.partial.len() > MAX_LINE {
            self.partial.clear();
        }
        lines
    }
}

/// Follows `path` into `stream` until the task is dropped.
pub async fn run(path: PathBuf, stream: String, events: Arc<EventBatcher>, health: Arc<Health>) {
    let mut follower = Follower::new(path);
    let mut tick = tokio::time::interval(POLL);
    loop {
        tick.tick().await;
        let now = crate::intake::now_ms();
        for line in follower.read_lines() {
            let line = line.strip_suffix(b"\r").unwrap_or(&line).to_vec();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if line.len() > MAX_LINE || events.offer(&stream, &line, now).is_err() {
                health.invalid_input.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_appends_and_rotation() {
        let dir = std::env::temp_dir().join(format!("argus-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.log");
        std::fs::write(&path, "{\"old\":1}\n").unwrap();
        let mut f = Follower::new(path.clone());
        assert!(f.read_lines().is_empty());
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"a\":1}\n{\"b\"").unwrap();
        assert_eq!(f.read_lines(), vec![b"{\"a\":1}".to_vec()]);
        file.write_all(b":2}\n").unwrap();
        assert_eq!(f.read_lines(), vec![b"{\"b\":2}".to_vec()]);
        // rotation: a new file at the same path
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "{\"c\":3}\n").unwrap();
        assert_eq!(f.read_lines(), vec![b"{\"c\":3}".to_vec()]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
