//! The write side of the image pipeline: small synchronous adapters that each
//! do one thing and pass the bytes on (progress → hash → first-MiB-last writer).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::checksum::Hasher;

/// Size of the head of the disk held back until the checksum is verified.
pub const HEAD_BYTES: u64 = 1024 * 1024;

/// How many bytes the writer gathers before one `pwrite`.
const WRITE_BATCH: usize = 1024 * 1024;

/// Why writing failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// An I/O error on the device.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The device.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The image does not fit.
    #[error("the image is larger than the disk {path} ({capacity} bytes); choose a bigger disk with root device hints or a smaller image")]
    TooLarge {
        /// The device.
        path: PathBuf,
        /// Its size.
        capacity: u64,
    },
}

/// A consumer of image bytes, in order.
pub trait ImageSink {
    /// Consumes the next chunk.
    fn write_chunk(&mut self, data: &[u8]) -> Result<(), SinkError>;
}

/// Hashes every byte on its way to the inner sink.
#[derive(Debug)]
pub struct HashingSink<S> {
    inner: S,
    hasher: Hasher,
}

impl<S: ImageSink> HashingSink<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, hasher: Hasher) -> Self {
        Self { inner, hasher }
    }

    /// The inner sink and the hex digest of everything written.
    pub fn finish(self) -> (S, String) {
        (self.inner, self.hasher.finalize_hex())
    }
}

impl<S: ImageSink> ImageSink for HashingSink<S> {
    fn write_chunk(&mut self, data: &[u8]) -> Result<(), SinkError> {
        self.hasher.update(data);
        self.inner.write_chunk(data)
    }
}

/// Logs the amount written and the rate every few seconds.
#[derive(Debug)]
pub struct ProgressSink<S> {
    inner: S,
    label: String,
    written: u64,
    started: Instant,
    last_report: Instant,
    every: Duration,
}

impl<S: ImageSink> ProgressSink<S> {
    /// Wraps `inner`, reporting under `label` every `every`.
    pub fn new(inner: S, label: impl Into<String>, every: Duration) -> Self {
        let now = Instant::now();
        Self {
            inner,
            label: label.into(),
            written: 0,
            started: now,
            last_report: now,
            every,
        }
    }

    /// Bytes seen so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Logs the final figures and returns the inner sink.
    pub fn finish(self) -> S {
        let secs = self.started.elapsed().as_secs_f64().max(1e-6);
        tracing::info!(
            "{}: received {} bytes in {:.1} s ({:.1} MiB/s)",
            self.label,
            self.written,
            secs,
            self.written as f64 / (1024.0 * 1024.0) / secs
        );
        self.inner
    }
}

impl<S: ImageSink> ImageSink for ProgressSink<S> {
    fn write_chunk(&mut self, data: &[u8]) -> Result<(), SinkError> {
        self.inner.write_chunk(data)?;
        self.written += data.len() as u64;
        if self.last_report.elapsed() >= self.every {
            self.last_report = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(1e-6);
            tracing::info!(
                "{}: {} MiB written ({:.1} MiB/s)",
                self.label,
                self.written / (1024 * 1024),
                self.written as f64 / (1024.0 * 1024.0) / secs
            );
        }
        Ok(())
    }
}

/// Writes an image to a device with its first MiB written last.
///
/// On creation the first MiB of the device is zeroed and synced, so that a
/// half-written disk can never boot. Bytes past the first MiB are written as
/// they arrive (batched); the first MiB is held in memory and written only by
/// [`FirstMibWriter::commit`], after the caller verified the checksum.
#[derive(Debug)]
pub struct FirstMibWriter {
    file: File,
    path: PathBuf,
    capacity: u64,
    head: Vec<u8>,
    batch: Vec<u8>,
    batch_offset: u64,
    offset: u64,
}

impl FirstMibWriter {
    /// Opens `path` (which must exist) of `capacity` bytes and zeroes its first MiB.
    pub fn create(path: &Path, capacity: u64) -> Result<Self, SinkError> {
        let io = |op: &'static str| {
            let path = path.to_owned();
            move |source| SinkError::Io { op, path, source }
        };
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io("opening"))?;
        let zeros = vec![0u8; HEAD_BYTES.min(capacity) as usize];
        file.write_all_at(&zeros, 0)
            .map_err(io("zeroing the first MiB of"))?;
        file.sync_data().map_err(io("syncing"))?;
        Ok(Self {
            file,
            path: path.to_owned(),
            capacity,
            head: Vec::with_capacity(HEAD_BYTES as usize),
            batch: Vec::with_capacity(WRITE_BATCH),
            batch_offset: HEAD_BYTES,
            offset: 0,
        })
    }

    fn io_err(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> SinkError {
        let path = self.path.clone();
        move |source| SinkError::Io { op, path, source }
    }

    fn flush_batch(&mut self) -> Result<(), SinkError> {
        if !self.batch.is_empty() {
            self.file
                .write_all_at(&self.batch, self.batch_offset)
                .map_err(self.io_err("writing"))?;
            self.batch_offset += self.batch.len() as u64;
            self.batch.clear();
        }
        Ok(())
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.offset
    }

    /// True when nothing was received.
    pub fn is_empty(&self) -> bool {
        self.offset == 0
    }

    /// Writes the held-back first MiB and syncs: the image is complete.
    pub fn commit(mut self) -> Result<u64, SinkError> {
        self.flush_batch()?;
        self.file.sync_data().map_err(self.io_err("syncing"))?;
        self.file
            .write_all_at(&self.head, 0)
            .map_err(self.io_err("writing the first MiB of"))?;
        self.file.sync_all().map_err(self.io_err("syncing"))?;
        Ok(self.offset)
    }

    /// Gives up: the first MiB stays zeroed.
    pub fn abort(mut self) {
        if let Err(e) = self.flush_batch() {
            tracing::debug!("ignoring write error while aborting: {e}");
        }
        if let Err(e) = self.file.sync_all() {
            tracing::debug!("ignoring sync error while aborting: {e}");
        }
    }
}

impl ImageSink for FirstMibWriter {
    fn write_chunk(&mut self, mut data: &[u8]) -> Result<(), SinkError> {
        if self.offset + data.len() as u64 > self.capacity {
            return Err(SinkError::TooLarge {
                path: self.path.clone(),
                capacity: self.capacity,
            });
        }
        if self.offset < HEAD_BYTES {
            let take = ((HEAD_BYTES - self.offset) as usize).min(data.len());
            self.head.extend_from_slice(&data[..take]);
            self.offset += take as u64;
            data = &data[take..];
        }
        while !data.is_empty() {
            let room = WRITE_BATCH - self.batch.len();
            let take = room.min(data.len());
            self.batch.extend_from_slice(&data[..take]);
            self.offset += take as u64;
            data = &data[take..];
            if self.batch.len() == WRITE_BATCH {
                self.flush_batch()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironclad_versioning::image_info::ChecksumAlgorithm;

    fn disk(size: u64, fill: u8) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![fill; size as usize]).unwrap();
        f
    }

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 + 1).collect()
    }

    #[test]
    fn first_mib_zeroed_until_commit() {
        let d = disk(4 * HEAD_BYTES, 0xee);
        let img = image(3 * HEAD_BYTES as usize + 12345);
        let mut w = FirstMibWriter::create(d.path(), 4 * HEAD_BYTES).unwrap();
        for chunk in img.chunks(70_001) {
            w.write_chunk(chunk).unwrap();
        }
        w.flush_batch().unwrap();
        let mid = std::fs::read(d.path()).unwrap();
        assert!(mid[..HEAD_BYTES as usize].iter().all(|&b| b == 0));
        assert_eq!(
            &mid[HEAD_BYTES as usize..img.len()],
            &img[HEAD_BYTES as usize..]
        );
        assert_eq!(w.commit().unwrap(), img.len() as u64);
        let done = std::fs::read(d.path()).unwrap();
        assert_eq!(&done[..img.len()], &img[..]);
        assert!(done[img.len()..].iter().all(|&b| b == 0xee));
    }

    #[test]
    fn abort_leaves_head_zero() {
        let d = disk(2 * HEAD_BYTES, 0xee);
        let img = image(HEAD_BYTES as usize + 10);
        let mut w = FirstMibWriter::create(d.path(), 2 * HEAD_BYTES).unwrap();
        w.write_chunk(&img).unwrap();
        w.abort();
        let done = std::fs::read(d.path()).unwrap();
        assert!(done[..HEAD_BYTES as usize].iter().all(|&b| b == 0));
        assert_eq!(
            &done[HEAD_BYTES as usize..img.len()],
            &img[HEAD_BYTES as usize..]
        );
    }

    #[test]
    fn small_image_and_too_large() {
        let d = disk(HEAD_BYTES / 2, 0xee);
        let mut w = FirstMibWriter::create(d.path(), HEAD_BYTES / 2).unwrap();
        w.write_chunk(b"hello").unwrap();
        assert!(matches!(
            w.write_chunk(&vec![1; HEAD_BYTES as usize]),
            Err(SinkError::TooLarge { .. })
        ));
        assert_eq!(w.commit().unwrap(), 5);
        assert_eq!(&std::fs::read(d.path()).unwrap()[..6], b"hello\0");
    }

    #[test]
    fn adapters_compose() {
        let d = disk(2 * HEAD_BYTES, 0);
        let w = FirstMibWriter::create(d.path(), 2 * HEAD_BYTES).unwrap();
        let h = HashingSink::new(w, Hasher::new(ChecksumAlgorithm::Sha256));
        let mut p = ProgressSink::new(h, "test", Duration::from_secs(5));
        p.write_chunk(b"abc").unwrap();
        assert_eq!(p.written(), 3);
        let (w, digest) = p.finish().finish();
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        w.commit().unwrap();
    }
}
