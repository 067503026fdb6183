//! In-memory capture of the agent's own log output, for `log.collect_system_logs`.
//!
//! [`LogBuffer`] is a bounded ring of bytes that a `tracing_subscriber` fmt layer
//! writes into (it implements [`MakeWriter`]); the oldest lines are dropped first.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use flate2::write::GzEncoder;
use flate2::Compression;
use tracing_subscriber::fmt::MakeWriter;

/// Default capacity of the log buffer (bytes).
pub const DEFAULT_CAPACITY: usize = 4 * 1024 * 1024;

/// A bounded, shared buffer of log text.
#[derive(Debug, Clone)]
pub struct LogBuffer {
    inner: Arc<Mutex<VecDeque<u8>>>,
    capacity: usize,
}

/// Why the log archive could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Writing the tar.gz in memory failed.
    #[error("could not build the log archive: {0}")]
    Archive(#[from] io::Error),
}

impl LogBuffer {
    /// A buffer keeping at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(VecDeque::with_capacity(capacity.min(64 * 1024)))),
            capacity,
        }
    }

    /// Appends bytes, dropping the oldest whole lines when full.
    pub fn append(&self, data: &[u8]) {
        let mut buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let data = if data.len() > self.capacity {
            &data[data.len() - self.capacity..]
        } else {
            data
        };
        let overflow = (buf.len() + data.len()).saturating_sub(self.capacity);
        if overflow > 0 {
            buf.drain(..overflow);
            // Drop the rest of a cut line so the text starts cleanly.
            if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                buf.drain(..=nl);
            }
        }
        buf.extend(data);
    }

    /// A copy of the current contents.
    pub fn snapshot(&self) -> Vec<u8> {
        let buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        buf.iter().copied().collect()
    }
}

/// A writer handed out by [`LogBuffer`] to the fmt layer.
#[derive(Debug)]
pub struct LogBufferWriter {
    buffer: LogBuffer,
}

impl Write for LogBufferWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = LogBufferWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogBufferWriter {
            buffer: self.clone(),
        }
    }
}

/// Builds a gzip-compressed tar archive holding the given files (name, contents).
pub fn tar_gz(files: &[(&str, &[u8])]) -> Result<Vec<u8>, LogError> {
    let encoder = GzEncoder::new(Vec::new(), Compression::default());
    let mut builder = tar::Builder::new(encoder);
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_cksum();
        builder.append_data(&mut header, name, *data)?;
    }
    let encoder = builder.into_inner()?;
    Ok(encoder.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn buffer_drops_oldest_lines() {
        let b = LogBuffer::new(20);
        b.append(b"first line\n");
        b.append(b"second line\n");
        b.append(b"third\n");
        let text = String::from_utf8(b.snapshot()).unwrap();
        assert!(!text.contains("first"), "{text}");
        assert!(text.ends_with("third\n"));
        assert!(text.len() <= 20);
    }

    #[test]
    fn archive_round_trips() {
        let gz = tar_gz(&[("agent.log", b"hello log\n")]).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        let mut entries = archive.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some("agent.log"));
        let mut s = String::new();
        entry.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello log\n");
    }
}
