//! Fixed pools of large, page-aligned buffers shared by the pipeline stages.
//!
//! A [`Pool`] owns a fixed number of buffers; a [`PoolBuf`] taken from it goes
//! back to it when dropped, whichever thread drops it. Taking a buffer waits
//! while all are in use, which is the pipeline's back-pressure: memory stays at
//! `count × size` however fast the network is compared with the disk. The
//! buffers are aligned to [`ALIGN`] so that the disk writer can hand them to
//! `O_DIRECT` writes without copying.

use tokio::sync::mpsc;

/// Alignment of every buffer (the largest logical block size in use).
pub const ALIGN: usize = 4096;

/// A fixed set of aligned buffers.
#[derive(Debug)]
pub struct Pool {
    size: usize,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl Pool {
    /// A pool of `count` buffers of `size` bytes each (allocated lazily, once).
    pub fn new(count: usize, size: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        for _ in 0..count {
            // Allocated zeroed (calloc: pages are only touched when first filled).
            let _ = tx.send(vec![0u8; size + ALIGN]);
        }
        Self { size, tx, rx }
    }

    /// Usable bytes per buffer.
    pub fn size(&self) -> usize {
        self.size
    }

    fn wrap(&self, raw: Vec<u8>) -> PoolBuf {
        let off = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        PoolBuf {
            raw,
            off,
            cap: self.size,
            len: 0,
            home: self.tx.clone(),
        }
    }

    /// Takes a buffer, waiting (asynchronously) until one is free.
    pub async fn get(&mut self) -> Option<PoolBuf> {
        let raw = self.rx.recv().await?;
        Some(self.wrap(raw))
    }

    /// Takes a buffer, blocking the thread until one is free (not on an async worker).
    pub fn blocking_get(&mut self) -> Option<PoolBuf> {
        let raw = self.rx.blocking_recv()?;
        Some(self.wrap(raw))
    }
}

/// A buffer on loan from a [`Pool`]: `cap` usable bytes starting at an
/// [`ALIGN`]-aligned address, of which the first `len` are filled.
#[derive(Debug)]
pub struct PoolBuf {
    raw: Vec<u8>,
    off: usize,
    cap: usize,
    len: usize,
    home: mpsc::UnboundedSender<Vec<u8>>,
}

impl PoolBuf {
    /// The filled bytes.
    pub fn filled(&self) -> &[u8] {
        &self.raw[self.off..self.off + self.len]
    }

    /// Number of filled bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free bytes after the filled ones.
    pub fn remaining(&self) -> usize {
        self.cap - self.len
    }

    /// Appends as much of `data` as fits; returns how much was taken.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.remaining());
        let at = self.off + self.len;
        self.raw[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// The unfilled part, to be filled in place and then [`PoolBuf::advance`]d.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        let at = self.off + self.len;
        &mut self.raw[at..self.off + self.cap]
    }

    /// Marks `n` more bytes of the spare part as filled.
    pub fn advance(&mut self, n: usize) {
        self.len = (self.len + n).min(self.cap);
    }

    /// Empties the buffer (keeping it).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        // The pool may be gone already (pipeline torn down): then the memory is freed.
        let _ = self.home.send(std::mem::take(&mut self.raw));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_come_back() {
        let mut pool = Pool::new(2, 3 * ALIGN);
        let mut a = pool.blocking_get().unwrap();
        assert_eq!(a.filled().as_ptr() as usize % ALIGN, 0);
        assert_eq!(a.push(&[1; 5000]), 5000);
        assert_eq!(a.push(&[2; 9000]), 3 * ALIGN - 5000);
        assert_eq!(a.remaining(), 0);
        let b = pool.blocking_get().unwrap();
        drop(a);
        let mut c = pool.blocking_get().unwrap();
        assert!(c.is_empty());
        c.spare_mut()[0] = 9;
        c.advance(1);
        assert_eq!(c.filled(), &[9]);
        drop((b, c));
        assert!(pool.blocking_get().is_some());
    }
}
