//! The plumbing between the pipeline's threads: the download side's buffers
//! as a `BufRead` for the converter, and a write-behind sink that runs the
//! [`DiskWriter`] on its own thread.
//!
//! ```text
//! tokio task:    download → hash → fill pooled 4 MiB buffers ──┐
//! convert thread: ChannelReader (BufRead, no copy) → detect     │
//!                 raw: forward the same buffers ────────────────┼─┐
//!                 compressed / qcow2: decode into pooled buffers ┘ │
//! disk thread:    WriteBehind → DiskWriter (zero scan, O_DIRECT pwrite)
//! ```

use std::io::{BufRead, Read};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use super::buffers::{Pool, PoolBuf};
use super::sink::{DiskWriter, GuestSink, SinkError};

/// What the download side sends: a filled buffer, or why the download failed.
pub type Chunk = Result<PoolBuf, String>;

/// The converter's side of the download channel, as a `BufRead` over the
/// download's own buffers (nothing is copied until a decoder reads it).
#[derive(Debug)]
pub struct ChannelReader {
    rx: mpsc::UnboundedReceiver<Chunk>,
    cur: Option<PoolBuf>,
    pos: usize,
}

impl ChannelReader {
    /// Reads from `rx`.
    pub fn new(rx: mpsc::UnboundedReceiver<Chunk>) -> Self {
        Self {
            rx,
            cur: None,
            pos: 0,
        }
    }

    fn next(&mut self) -> std::io::Result<bool> {
        self.cur = None;
        self.pos = 0;
        match self.rx.blocking_recv() {
            Some(Ok(b)) => {
                self.cur = Some(b);
                Ok(true)
            }
            Some(Err(m)) => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                m,
            )),
            None => Ok(false),
        }
    }

    /// The next whole buffer and the offset of its first unread byte, for
    /// forwarding without a copy; `None` at the end of the stream.
    pub fn take_buffer(&mut self) -> std::io::Result<Option<(PoolBuf, usize)>> {
        loop {
            if let Some(b) = self.cur.take() {
                let pos = std::mem::take(&mut self.pos);
                if pos < b.len() {
                    return Ok(Some((b, pos)));
                }
            }
            if !self.next()? {
                return Ok(None);
            }
        }
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.cur.as_ref().is_none_or(|b| self.pos >= b.len()) {
            if !self.next()? {
                return Ok(&[]);
            }
        }
        Ok(self
            .cur
            .as_ref()
            .map_or(&[][..], |b| &b.filled()[self.pos..]))
    }

    fn consume(&mut self, amt: usize) {
        self.pos += amt;
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// One unit of work for the disk thread.
#[derive(Debug)]
enum Job {
    /// Write the buffer's bytes from `start` at guest offset `offset`.
    Data {
        offset: u64,
        buf: PoolBuf,
        start: usize,
    },
    /// Make a range read as zeros.
    Zero { offset: u64, len: u64 },
}

/// Zero-range jobs queued at most (data jobs are bounded by the pool).
const JOB_QUEUE: usize = 1024;

/// A [`GuestSink`] that hands writes to a [`DiskWriter`] on its own thread,
/// coalescing contiguous small writes (qcow2 clusters) into large buffers.
#[derive(Debug)]
pub struct WriteBehind {
    tx: Option<std_mpsc::SyncSender<Job>>,
    handle: Option<JoinHandle<Result<DiskWriter, SinkError>>>,
    pool: Pool,
    cur: Option<(u64, PoolBuf)>,
    capacity: u64,
}

impl WriteBehind {
    /// Starts the disk thread for `writer`; `pool` supplies the coalescing buffers.
    pub fn start(writer: DiskWriter, capacity: u64, pool: Pool) -> Result<Self, SinkError> {
        let (tx, rx) = std_mpsc::sync_channel::<Job>(JOB_QUEUE);
        let handle = std::thread::Builder::new()
            .name("image-disk".into())
            .spawn(move || {
                let mut w = writer;
                for job in rx {
                    let r = match job {
                        Job::Data { offset, buf, start } => {
                            w.write_at(offset, &buf.filled()[start..])
                        }
                        Job::Zero { offset, len } => w.zero_range(offset, len),
                    };
                    if let Err(e) = r {
                        w.abort();
                        return Err(e);
                    }
                }
                Ok(w)
            })
            .map_err(|source| SinkError::Io {
                op: "starting the disk writer thread for",
                path: "the image".into(),
                source,
            })?;
        Ok(Self {
            tx: Some(tx),
            handle: Some(handle),
            pool,
            cur: None,
            capacity,
        })
    }

    /// Waits for the disk thread and returns its writer (or its error).
    fn join(&mut self) -> Result<DiskWriter, SinkError> {
        self.tx = None;
        let Some(handle) = self.handle.take() else {
            return Err(gone());
        };
        handle.join().unwrap_or_else(|_| Err(gone()))
    }

    fn send(&mut self, job: Job) -> Result<(), SinkError> {
        let sent = self.tx.as_ref().map(|tx| tx.send(job));
        match sent {
            Some(Ok(())) => Ok(()),
            // The disk thread stopped: its error explains why.
            _ => Err(self.join().err().unwrap_or_else(gone)),
        }
    }

    fn flush_cur(&mut self) -> Result<(), SinkError> {
        if let Some((offset, buf)) = self.cur.take() {
            if !buf.is_empty() {
                self.send(Job::Data {
                    offset,
                    buf,
                    start: 0,
                })?;
            }
        }
        Ok(())
    }

    /// A free buffer from the pool (blocks while all are queued for the disk).
    pub fn buffer(&mut self) -> Result<PoolBuf, SinkError> {
        self.pool.blocking_get().ok_or_else(gone)
    }

    /// Queues `buf`'s bytes from `start` at guest offset `offset`, without copying.
    pub fn write_buf(&mut self, offset: u64, buf: PoolBuf, start: usize) -> Result<(), SinkError> {
        self.flush_cur()?;
        let end = offset + (buf.len() - start.min(buf.len())) as u64;
        self.check(end)?;
        self.send(Job::Data { offset, buf, start })
    }

    fn check(&self, end: u64) -> Result<(), SinkError> {
        if end > self.capacity {
            return Err(SinkError::TooLarge {
                path: "the disk".into(),
                capacity: self.capacity,
                needed: end,
            });
        }
        Ok(())
    }

    /// Sends what is queued, waits for the disk thread and returns the writer.
    pub fn finish(mut self) -> Result<DiskWriter, SinkError> {
        self.flush_cur()?;
        self.join()
    }

    /// Gives up: waits for the disk thread and leaves the first MiB zeroed.
    pub fn abort(mut self) {
        self.cur = None;
        if let Ok(w) = self.join() {
            w.abort();
        }
    }
}

fn gone() -> SinkError {
    SinkError::Io {
        op: "handing data to the disk writer thread for",
        path: "the image".into(),
        source: std::io::Error::other("the disk writer thread stopped"),
    }
}

impl GuestSink for WriteBehind {
    fn write_at(&mut self, offset: u64, mut data: &[u8]) -> Result<(), SinkError> {
        self.check(offset + data.len() as u64)?;
        let mut at = offset;
        while !data.is_empty() {
            let contiguous = self
                .cur
                .as_ref()
                .is_some_and(|(start, b)| start + b.len() as u64 == at && b.remaining() > 0);
            if !contiguous {
                self.flush_cur()?;
                let buf = self.buffer()?;
                self.cur = Some((at, buf));
            }
            let Some((_, buf)) = self.cur.as_mut() else {
                return Err(gone());
            };
            let n = buf.push(data);
            data = &data[n..];
            at += n as u64;
            if buf.remaining() == 0 {
                self.flush_cur()?;
            }
        }
        Ok(())
    }

    fn zero_range(&mut self, offset: u64, len: u64) -> Result<(), SinkError> {
        self.check(offset + len)?;
        self.flush_cur()?;
        self.send(Job::Zero { offset, len })
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        self.cur = None;
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
