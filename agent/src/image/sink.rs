//! The write side of the image pipeline: a positional, sparse, first-MiB-last
//! disk writer.
//!
//! * The first MiB of the device is zeroed (and synced) when the writer opens;
//!   writes into it are held in memory and reach the disk only in
//!   [`DiskWriter::commit`], after the caller verified the checksum.
//! * Runs of zeros are never written byte by byte: they are turned into
//!   [`DiskWriter::zero_range`] calls, which punch holes in regular files and
//!   issue `BLKZEROOUT` on block devices, falling back to plain writes of zeros
//!   when the kernel or the device cannot.
//! * Data whose offset, length and memory address are aligned to 4 KiB goes
//!   through a second, `O_DIRECT` descriptor when the target supports it (no
//!   page-cache copy, no write-back to wait for, like `dd oflag=direct`); the
//!   rest (unaligned tails, the first MiB) goes through the page cache.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Size of the head of the disk held back until the checksum is verified.
pub const HEAD_BYTES: u64 = 1024 * 1024;

/// Granularity of zero detection.
const ZERO_BLOCK: usize = 4096;

/// Largest plain write of zeros in the fallback path.
const ZERO_WRITE: usize = 1024 * 1024;

/// Written bytes after which write-back is started (and the window before
/// waited for and dropped from the page cache), so that dirty pages stay
/// bounded and the disk writes while the download goes on.
const FLUSH_WINDOW: u64 = 32 * 1024 * 1024;

/// Alignment (offset, length, address) of writes sent through `O_DIRECT`.
const DIRECT_ALIGN: u64 = 4096;

/// Opens a second, `O_DIRECT` descriptor for aligned writes, when the target
/// supports it (block devices and most file systems; not tmpfs).
fn open_direct(path: &Path, method: ZeroMethod) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if method == ZeroMethod::Write {
        return None;
    }
    match OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::debug!("{}: no O_DIRECT ({e})", path.display());
            None
        }
    }
}

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
    #[error("the image needs {needed} bytes but the disk {path} has only {capacity}; choose a bigger disk with root device hints or a smaller image")]
    TooLarge {
        /// The device.
        path: PathBuf,
        /// Its size.
        capacity: u64,
        /// The end of the write that did not fit.
        needed: u64,
    },
}

/// Where guest (virtual disk) bytes go: positional writes and zeroed ranges.
pub trait GuestSink {
    /// Writes `data` at guest offset `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError>;
    /// Makes `[offset, offset + len)` read as zeros.
    fn zero_range(&mut self, offset: u64, len: u64) -> Result<(), SinkError>;
}

/// How zero ranges are produced on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroMethod {
    /// `fallocate(PUNCH_HOLE)` on a regular file.
    PunchHole,
    /// `BLKZEROOUT` on a block device.
    BlkZeroOut,
    /// Plain writes of zeros.
    Write,
}

/// True when `data` is all zeros (word-wise; vectorised by the compiler).
pub fn is_zero(data: &[u8]) -> bool {
    let mut chunks = data.chunks_exact(256);
    for c in &mut chunks {
        if c.iter().fold(0u8, |a, &b| a | b) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b == 0)
}

/// `sync_file_range(2)` on an open descriptor.
fn sync_file_range(fd: i32, offset: i64, len: i64, flags: u32) -> Result<(), nix::Error> {
    // SAFETY: sync_file_range only reads its integer arguments; `fd` is an open
    // descriptor owned by the caller for the duration of the call.
    let r = unsafe { nix::libc::sync_file_range(fd, offset, len, flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(nix::Error::last())
    }
}

/// Writes an image to a device (or a regular file acting as one).
#[derive(Debug)]
pub struct DiskWriter {
    file: File,
    direct: Option<File>,
    path: PathBuf,
    capacity: u64,
    head: Vec<u8>,
    method: ZeroMethod,
    pending_zero: Option<(u64, u64)>,
    high_water: u64,
    data_bytes: u64,
    zero_bytes: u64,
    dirty: u64,
    data_end: u64,
    started_upto: u64,
    waited_upto: u64,
}

/// The block-device ioctls used for zeroing.
mod ioctl {
    // `BLKZEROOUT` = _IO(0x12, 127); its argument is `[start, length]` in bytes.
    nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);
}
use ioctl::blkzeroout;

impl DiskWriter {
    /// Opens `path` (which must exist) of `capacity` bytes and zeroes its first MiB.
    pub fn open(path: &Path, capacity: u64) -> Result<Self, SinkError> {
        let io = |op: &'static str| {
            let path = path.to_owned();
            move |source| SinkError::Io { op, path, source }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io("opening"))?;
        let meta = file.metadata().map_err(io("inspecting"))?;
        let method = if meta.file_type().is_block_device() {
            ZeroMethod::BlkZeroOut
        } else if meta.file_type().is_file() {
            ZeroMethod::PunchHole
        } else {
            ZeroMethod::Write
        };
        let direct = open_direct(path, method);
        let head_len = HEAD_BYTES.min(capacity) as usize;
        let mut w = Self {
            file,
            direct,
            path: path.to_owned(),
            capacity,
            head: vec![0u8; head_len],
            method,
            pending_zero: None,
            high_water: 0,
            data_bytes: 0,
            zero_bytes: 0,
            dirty: 0,
            data_end: 0,
            started_upto: 0,
            waited_upto: 0,
        };
        w.zero_now(0, head_len as u64)?;
        w.file.sync_data().map_err(io("syncing"))?;
        Ok(w)
    }

    fn io_err(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> SinkError {
        let path = self.path.clone();
        move |source| SinkError::Io { op, path, source }
    }

    /// How zero ranges are produced.
    pub fn method(&self) -> ZeroMethod {
        self.method
    }

    /// Highest guest offset written or zeroed so far (the image size for raw images).
    pub fn high_water(&self) -> u64 {
        self.high_water
    }

    /// Bytes of data written (zero runs excluded).
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Bytes turned into zeroed ranges instead of writes.
    pub fn zero_bytes(&self) -> u64 {
        self.zero_bytes
    }

    fn check_fits(&self, end: u64) -> Result<(), SinkError> {
        if end > self.capacity {
            return Err(SinkError::TooLarge {
                path: self.path.clone(),
                capacity: self.capacity,
                needed: end,
            });
        }
        Ok(())
    }

    fn flush_zero(&mut self) -> Result<(), SinkError> {
        if let Some((start, end)) = self.pending_zero.take() {
            self.zero_now(start, end - start)?;
        }
        Ok(())
    }

    /// Zeroes `[offset, offset+len)` on the device now (offsets past the head only).
    fn zero_now(&mut self, offset: u64, len: u64) -> Result<(), SinkError> {
        if len == 0 {
            return Ok(());
        }
        match self.method {
            ZeroMethod::PunchHole => {
                let r = nix::fcntl::fallocate(
                    self.file.as_raw_fd(),
                    nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                        | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                    offset as i64,
                    len as i64,
                );
                match r {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        tracing::info!(
                            "{}: hole punching unavailable ({e}); writing zeros instead",
                            self.path.display()
                        );
                        self.method = ZeroMethod::Write;
                    }
                }
            }
            ZeroMethod::BlkZeroOut => {
                let aligned = offset.is_multiple_of(512) && len.is_multiple_of(512);
                if aligned {
                    let range = [offset, len];
                    // SAFETY: BLKZEROOUT reads a `[u64; 2]` (start, length) through the
                    // pointer, which points at a live local array for the whole call.
                    let r = unsafe { blkzeroout(self.file.as_raw_fd(), &range) };
                    match r {
                        Ok(_) => return Ok(()),
                        Err(e) => {
                            tracing::info!(
                                "{}: BLKZEROOUT unavailable ({e}); writing zeros instead",
                                self.path.display()
                            );
                            self.method = ZeroMethod::Write;
                        }
                    }
                }
            }
            ZeroMethod::Write => {}
        }
        let zeros = vec![0u8; ZERO_WRITE.min(len as usize)];
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let n = ((end - at) as usize).min(zeros.len());
            self.file
                .write_all_at(&zeros[..n], at)
                .map_err(self.io_err("writing zeros to"))?;
            at += n as u64;
        }
        Ok(())
    }

    /// True when `O_DIRECT` writes are in use.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    fn write_data(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        self.flush_zero()?;
        self.data_bytes += data.len() as u64;
        let aligned = |v: u64| v.is_multiple_of(DIRECT_ALIGN);
        if let Some(direct) = &self.direct {
            if aligned(offset) && aligned(data.len() as u64) && aligned(data.as_ptr() as u64) {
                match direct.write_all_at(data, offset) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                        tracing::info!(
                            "{}: O_DIRECT writes refused ({e}); using the page cache",
                            self.path.display()
                        );
                        self.direct = None;
                    }
                    Err(e) => return Err(self.io_err("writing")(e)),
                }
            }
        }
        self.file
            .write_all_at(data, offset)
            .map_err(self.io_err("writing"))?;
        self.dirty += data.len() as u64;
        self.data_end = self.data_end.max(offset + data.len() as u64);
        if self.dirty >= FLUSH_WINDOW {
            self.write_back();
        }
        Ok(())
    }

    /// Starts write-back up to the highest data written, and waits for (then
    /// drops from the cache) the window started the time before. Best effort:
    /// the final fsync in [`DiskWriter::commit`] is what guarantees durability.
    fn write_back(&mut self) {
        use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
        use nix::libc::{
            SYNC_FILE_RANGE_WAIT_AFTER, SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE,
        };
        self.dirty = 0;
        let fd = self.file.as_raw_fd();
        if self.waited_upto < self.started_upto {
            let (from, len) = (self.waited_upto, self.started_upto - self.waited_upto);
            let wait =
                SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER;
            if let Err(e) = sync_file_range(fd, from as i64, len as i64, wait) {
                tracing::debug!("sync_file_range: {e}");
            }
            if let Err(e) = posix_fadvise(
                fd,
                from as i64,
                len as i64,
                PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            ) {
                tracing::debug!("posix_fadvise: {e}");
            }
            self.waited_upto = self.started_upto;
        }
        if self.data_end > self.started_upto {
            let (from, len) = (self.started_upto, self.data_end - self.started_upto);
            if let Err(e) = sync_file_range(fd, from as i64, len as i64, SYNC_FILE_RANGE_WRITE) {
                tracing::debug!("sync_file_range: {e}");
            }
            self.started_upto = self.data_end;
        }
    }

    fn queue_zero(&mut self, offset: u64, len: u64) -> Result<(), SinkError> {
        self.zero_bytes += len;
        match self.pending_zero {
            Some((s, e)) if e == offset => self.pending_zero = Some((s, offset + len)),
            _ => {
                self.flush_zero()?;
                self.pending_zero = Some((offset, offset + len));
            }
        }
        Ok(())
    }

    /// Writes the held-back first MiB and syncs: the image is complete.
    pub fn commit(mut self) -> Result<u64, SinkError> {
        self.flush_zero()?;
        self.file.sync_data().map_err(self.io_err("syncing"))?;
        self.file
            .write_all_at(&self.head, 0)
            .map_err(self.io_err("writing the first MiB of"))?;
        self.file.sync_all().map_err(self.io_err("syncing"))?;
        Ok(self.high_water)
    }

    /// Gives up: the first MiB stays zeroed.
    pub fn abort(mut self) {
        if let Err(e) = self.flush_zero() {
            tracing::debug!("ignoring error while aborting: {e}");
        }
        if let Err(e) = self.file.sync_all() {
            tracing::debug!("ignoring sync error while aborting: {e}");
        }
    }
}

impl GuestSink for DiskWriter {
    fn write_at(&mut self, offset: u64, mut data: &[u8]) -> Result<(), SinkError> {
        let end = offset + data.len() as u64;
        self.check_fits(end)?;
        self.high_water = self.high_water.max(end);
        let mut at = offset;
        let head = self.head.len() as u64;
        if at < head {
            let take = ((head - at) as usize).min(data.len());
            self.head[at as usize..at as usize + take].copy_from_slice(&data[..take]);
            at += take as u64;
            data = &data[take..];
        }
        // Split into runs of data and runs of zeros at ZERO_BLOCK granularity
        // (aligned to the guest offset so that holes fall on block boundaries).
        while !data.is_empty() {
            let first = (ZERO_BLOCK - (at % ZERO_BLOCK as u64) as usize).min(data.len());
            let zero = is_zero(&data[..first]);
            let mut run = first;
            while run < data.len() {
                let n = ZERO_BLOCK.min(data.len() - run);
                if is_zero(&data[run..run + n]) != zero {
                    break;
                }
                run += n;
            }
            if zero {
                self.queue_zero(at, run as u64)?;
            } else {
                self.write_data(at, &data[..run])?;
            }
            at += run as u64;
            data = &data[run..];
        }
        Ok(())
    }

    fn zero_range(&mut self, offset: u64, len: u64) -> Result<(), SinkError> {
        let end = offset + len;
        self.check_fits(end)?;
        self.high_water = self.high_water.max(end);
        let head = self.head.len() as u64;
        let mut at = offset;
        if at < head {
            let stop = end.min(head);
            self.head[at as usize..stop as usize].fill(0);
            at = stop;
        }
        if at < end {
            self.queue_zero(at, end - at)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn disk(size: u64, fill: u8) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![fill; size as usize]).unwrap();
        f
    }

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 + 1).collect()
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 4099]));
        let mut v = vec![0u8; 4099];
        v[4098] = 1;
        assert!(!is_zero(&v));
        v[4098] = 0;
        v[3] = 1;
        assert!(!is_zero(&v));
    }

    #[test]
    fn first_mib_zeroed_until_commit() {
        let d = disk(4 * HEAD_BYTES, 0xee);
        let img = image(3 * HEAD_BYTES as usize + 12345);
        let mut w = DiskWriter::open(d.path(), 4 * HEAD_BYTES).unwrap();
        let mut at = 0;
        for chunk in img.chunks(70_001) {
            w.write_at(at, chunk).unwrap();
            at += chunk.len() as u64;
        }
        w.flush_zero().unwrap();
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
    fn zero_runs_become_holes() {
        let size = 64 * HEAD_BYTES;
        let d = disk(size, 0xee);
        let mut img = vec![0u8; size as usize];
        img[5 * HEAD_BYTES as usize..6 * HEAD_BYTES as usize].fill(7);
        img[100] = 1;
        let mut w = DiskWriter::open(d.path(), size).unwrap();
        assert_eq!(w.method(), ZeroMethod::PunchHole);
        for (i, chunk) in img.chunks(1 << 20).enumerate() {
            w.write_at((i as u64) << 20, chunk).unwrap();
        }
        assert_eq!(w.data_bytes(), HEAD_BYTES);
        w.commit().unwrap();
        assert_eq!(std::fs::read(d.path()).unwrap(), img);
        let blocks = std::fs::metadata(d.path()).unwrap().blocks() * 512;
        assert!(blocks < 4 * HEAD_BYTES, "{blocks} bytes allocated");
    }

    #[test]
    fn too_large_is_refused() {
        let d = disk(HEAD_BYTES / 2, 0xee);
        let mut w = DiskWriter::open(d.path(), HEAD_BYTES / 2).unwrap();
        w.write_at(0, b"hello").unwrap();
        assert!(matches!(
            w.write_at(5, &vec![1; HEAD_BYTES as usize]),
            Err(SinkError::TooLarge { .. })
        ));
        assert!(w.zero_range(0, HEAD_BYTES).is_err());
        assert_eq!(w.commit().unwrap(), 5);
        assert_eq!(&std::fs::read(d.path()).unwrap()[..6], b"hello\0");
    }
}
