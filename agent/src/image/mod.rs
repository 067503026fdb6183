//! Writing whole-disk images: download, hash, convert and write as one
//! streaming pipeline, in bounded memory.
//!
//! ```text
//! async:          source::Download (HTTP(S)/file, Range resume, retries)
//!                   → hash (every downloaded byte, while it is hot in the cache)
//!                   → copied once into pooled, aligned 4 MiB buffers
//! convert thread: pipeline::ChannelReader (BufRead over those buffers)
//!                   → decompress (gzip/xz/zstd/bzip2, detected from the bytes)
//!                   → format (raw: the buffers are forwarded as they are;
//!                     qcow2::Streamer converting to raw)
//! disk thread:    pipeline::WriteBehind → sink::DiskWriter (zero scan,
//!                   O_DIRECT pwrite, sparse, first MiB last)
//! ```
//!
//! Formats are detected from the bytes, never the file name, and checked
//! against `disk_format` and `permitted_image_formats` before anything is
//! written. The first MiB of the disk is zeroed before the write starts and
//! written only once the checksum matched, so a failed or tampered download
//! never leaves a bootable half image. Memory stays bounded: at most
//! [`IN_BUFFERS`] + [`OUT_BUFFERS`] buffers of [`BUF_SIZE`] bytes exist, and
//! qcow2 metadata is a small fraction of the virtual size.

pub mod buffers;
pub mod checksum;
pub mod format;
pub mod pipeline;
pub mod progress;
pub mod qcow2;
pub mod sink;
pub mod source;

use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use ironclad_versioning::agent_api::{AgentErrorKind, ImageWriteProgress};
use ironclad_versioning::image_info::{ChecksumAlgorithm, ExpectedChecksum, ImageInfo};
use tokio::sync::mpsc;

use crate::disk::BlockDevice;
use buffers::{Pool, PoolBuf};
use checksum::{parse_checksum_file, Hasher};
use format::{check_format, detect_disk_format, Compression, DiskFormat, DETECT_BYTES};
use pipeline::{ChannelReader, WriteBehind};
use progress::{Progress, Stage};
use qcow2::{Plan, Qcow2Error, Streamer};
use sink::{DiskWriter, GuestSink, SinkError};
use source::{fetch_small, Download, RangeReader, RequestAuth, RetryPolicy};

/// Size of every pipeline buffer (and so of most disk writes).
pub const BUF_SIZE: usize = 4 * 1024 * 1024;
/// Buffers between the download and the converter.
pub const IN_BUFFERS: usize = 4;
/// Buffers between the converter (decompression, qcow2) and the disk thread.
pub const OUT_BUFFERS: usize = 3;

/// Why an image could not be written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    /// The image (or its checksum file) could not be downloaded.
    #[error("{0}")]
    Download(String),
    /// The bytes do not match the expected checksum.
    #[error("image checksum mismatch for {url}: {algorithm} expected {expected}, got {actual}. The disk's first MiB was left zeroed. Check that the image and its checksum belong together and redeploy")]
    Checksum {
        /// The URL the bytes came from.
        url: String,
        /// The algorithm.
        algorithm: &'static str,
        /// The expected digest.
        expected: String,
        /// The digest of what was received.
        actual: String,
    },
    /// The image could not be written to the disk.
    #[error("{0}")]
    Write(String),
    /// The image's format is refused, unsafe or corrupt.
    #[error("{0}")]
    Invalid(String),
}

impl ImageError {
    /// The `command_error.type` for this error.
    pub fn kind(&self) -> AgentErrorKind {
        match self {
            Self::Download(_) => AgentErrorKind::ImageDownloadError,
            Self::Checksum { .. } => AgentErrorKind::ImageChecksumError,
            Self::Write(_) => AgentErrorKind::ImageWriteError,
            Self::Invalid(_) => AgentErrorKind::InvalidImage,
        }
    }
}

/// What a successful write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// Bytes downloaded.
    pub bytes: u64,
    /// Bytes of the disk covered by the image (its virtual size).
    pub image_size: u64,
    /// Bytes of data actually written (zero runs excluded).
    pub data_bytes: u64,
    /// The verified digest.
    pub digest: String,
    /// Its algorithm.
    pub algorithm: &'static str,
    /// The URL the image came from.
    pub url: String,
    /// The detected compression.
    pub compression: &'static str,
    /// The detected disk format.
    pub format: &'static str,
    /// Reconnections during the download.
    pub resumes: u32,
}

/// Downloads and writes images.
#[derive(Debug, Clone)]
pub struct ImageWriter {
    client: reqwest::Client,
    /// Retries, back-off and stall timeout of downloads.
    pub policy: RetryPolicy,
    /// Interval of progress log lines.
    pub progress_every: Duration,
    /// Skip TLS verification when building proxied clients.
    pub insecure: bool,
    /// Extra CA bundle when building proxied clients.
    pub ca_file: Option<PathBuf>,
    current: Arc<Mutex<Option<Arc<Progress>>>>,
}

fn auth_of(info: &ImageInfo) -> RequestAuth {
    let authorization = info.image_request_authorization.as_ref().map(|v| {
        base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_else(|| v.clone())
    });
    let basic = match (
        info.image_server_auth_strategy.as_deref(),
        &info.image_server_user,
        &info.image_server_password,
    ) {
        (Some("http_basic"), Some(u), Some(p)) => Some((u.clone(), p.clone())),
        _ => None,
    };
    RequestAuth {
        authorization,
        basic,
    }
}

fn file_name_of(url: &str) -> String {
    let path = url::Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| url.to_owned());
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

/// Clears the writer's current progress when the write ends.
struct ClearProgress(Arc<Mutex<Option<Arc<Progress>>>>);

impl Drop for ClearProgress {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl ImageWriter {
    /// A writer using `client` for HTTP(S), with IPA's retry defaults.
    pub fn new(client: reqwest::Client) -> Self {
        Self {
            client,
            policy: RetryPolicy::default(),
            progress_every: Duration::from_secs(10),
            insecure: false,
            ca_file: None,
            current: Arc::new(Mutex::new(None)),
        }
    }

    /// Progress of the write under way, if any.
    pub fn progress(&self) -> Option<ImageWriteProgress> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|p| p.snapshot())
    }

    /// The client for `info`: the shared one, or one with the image's proxies.
    fn client_for(&self, info: &ImageInfo) -> Result<reqwest::Client, ImageError> {
        let Some(proxies) = info.proxies.as_ref().filter(|p| !p.is_empty()) else {
            return Ok(self.client.clone());
        };
        let bad = |e: String| ImageError::Download(format!("image proxies: {e}"));
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(self.policy.stall_timeout);
        if self.insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| bad(format!("reading --ca-file {}: {e}", path.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(format!("--ca-file {}: {e}", path.display())))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let no_proxy = info
            .no_proxy
            .as_deref()
            .and_then(reqwest::NoProxy::from_string);
        for (scheme, value) in proxies {
            let Some(url) = value.as_str().filter(|s| !s.is_empty()) else {
                continue;
            };
            let proxy = match scheme.as_str() {
                "http" => reqwest::Proxy::http(url),
                "https" => reqwest::Proxy::https(url),
                other => {
                    tracing::warn!("ignoring image proxy for unknown scheme {other:?}");
                    continue;
                }
            }
            .map_err(|e| bad(format!("{scheme} proxy {url:?}: {e}")))?;
            builder = builder.proxy(proxy.no_proxy(no_proxy.clone()));
        }
        builder.build().map_err(|e| bad(source::chain(&e)))
    }

    /// Turns the expected checksum into an algorithm and a digest, fetching a
    /// checksum file when the checksum is a URL.
    pub async fn resolve_checksum(
        &self,
        info: &ImageInfo,
        expected: &ExpectedChecksum,
        md5_allowed: bool,
    ) -> Result<(ChecksumAlgorithm, String), ImageError> {
        match expected {
            ExpectedChecksum::Digest { algorithm, hex } => Ok((*algorithm, hex.clone())),
            ExpectedChecksum::FileUrl { url, algorithm } => {
                let client = self.client_for(info)?;
                let body = fetch_small(&client, url, &auth_of(info), 1024 * 1024)
                    .await
                    .map_err(|e| {
                        ImageError::Download(format!("could not fetch the checksum file: {e}"))
                    })?;
                let text = String::from_utf8_lossy(&body);
                let name = info
                    .urls
                    .first()
                    .map(|u| file_name_of(u))
                    .unwrap_or_default();
                let hex = parse_checksum_file(&text, &name).map_err(|e| {
                    ImageError::Download(format!(
                        "checksum file {url}: {e}; make sure it lists the image {name:?}"
                    ))
                })?;
                let inferred = ChecksumAlgorithm::from_digest_len(hex.len());
                let algorithm = match (algorithm, inferred) {
                    (Some(named), Some(inferred)) if *named == inferred => *named,
                    (None, Some(inferred)) => inferred,
                    _ => {
                        return Err(ImageError::Download(format!(
                            "checksum file {url} gives digest {hex} which does not fit the algorithm {}",
                            algorithm.map_or("(inferred)", |a| a.name())
                        )))
                    }
                };
                if algorithm == ChecksumAlgorithm::Md5 && !md5_allowed {
                    return Err(ImageError::Download(format!(
                        "checksum file {url} gives an md5 digest but md5 is disabled (agent_md5_checksum_enable is false); publish a sha256 or sha512 checksum"
                    )));
                }
                Ok((algorithm, hex))
            }
        }
    }

    /// Downloads the image from its URLs and writes it to `device`.
    ///
    /// `permitted` is the lookup's `permitted_image_formats` (default raw and qcow2).
    pub async fn write_whole_disk(
        &self,
        info: &ImageInfo,
        algorithm: ChecksumAlgorithm,
        expected_hex: &str,
        device: &BlockDevice,
        permitted: Option<&[String]>,
    ) -> Result<WriteReport, ImageError> {
        let client = self.client_for(info)?;
        let progress = Arc::new(Progress::new());
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(progress.clone());
        let _clear = ClearProgress(self.current.clone());
        let _log = progress.log_every(format!("image {}", info.id), self.progress_every);

        let mut dl = Download::open(client, info.urls.clone(), auth_of(info), self.policy)
            .await
            .map_err(|e| ImageError::Download(e.0))?;
        let total = dl.total();
        progress.set_total(total);
        tracing::info!(
            "writing image {} from {} to {} ({})",
            info.id,
            dl.url(),
            device.name,
            total.map_or_else(|| "unknown size".to_owned(), |l| format!("{l} bytes"))
        );

        let (tx, rx) = mpsc::unbounded_channel::<pipeline::Chunk>();
        let job = WriteJob {
            path: device.path.clone(),
            device: device.name.clone(),
            capacity: device.size,
            image: info.id.clone(),
            declared: info.disk_format.clone(),
            permitted: permitted.map(<[String]>::to_vec),
            total,
            range: Some(dl.range_reader()),
            progress: progress.clone(),
        };
        let writer = tokio::task::spawn_blocking(move || job.run(ChannelReader::new(rx)));

        // The download side: hash each chunk while it is hot in the cache and
        // copy it into the current pooled buffer; full buffers go to the
        // converter. Taking a buffer waits while all are in flight.
        let mut pool = Pool::new(IN_BUFFERS, BUF_SIZE);
        let mut hasher = Hasher::new(algorithm);
        let mut received = 0u64;
        let mut cur: Option<PoolBuf> = None;
        let mut dl_error = None;
        'download: loop {
            let next = tokio::select! {
                r = dl.next_chunk() => r,
                () = tx.closed() => break,
            };
            match next {
                Ok(Some(chunk)) => {
                    hasher.update(&chunk);
                    received += chunk.len() as u64;
                    progress.add_received(chunk.len() as u64);
                    let mut rest = &chunk[..];
                    while !rest.is_empty() {
                        let buf = match cur.as_mut() {
                            Some(b) => b,
                            None => {
                                let got = tokio::select! {
                                    b = pool.get() => b,
                                    () = tx.closed() => None,
                                };
                                let Some(b) = got else { break 'download };
                                cur.insert(b)
                            }
                        };
                        let n = buf.push(rest);
                        rest = &rest[n..];
                        if buf.remaining() == 0 {
                            if let Some(full) = cur.take() {
                                if tx.send(Ok(full)).is_err() {
                                    break 'download;
                                }
                            }
                        }
                    }
                }
                Ok(None) => {
                    if let Some(last) = cur.take().filter(|b| !b.is_empty()) {
                        let _ = tx.send(Ok(last));
                    }
                    break;
                }
                Err(e) => {
                    let _ = tx.send(Err(e.0.clone()));
                    dl_error = Some(e);
                    break;
                }
            }
        }
        drop(cur);
        drop(tx);
        progress.set_stage(Stage::Verifying);
        let joined = writer
            .await
            .map_err(|e| ImageError::Write(format!("the writer thread failed: {e}")))?;
        if let Some(e) = dl_error {
            if let Ok(done) = joined {
                tokio::task::spawn_blocking(move || done.writer.abort())
                    .await
                    .ok();
            }
            return Err(ImageError::Download(format!(
                "downloading image {}: {}",
                info.id, e.0
            )));
        }
        let done = joined?;
        let actual = hasher.finalize_hex();
        let url = dl.url().to_owned();
        if actual != expected_hex {
            tokio::task::spawn_blocking(move || done.writer.abort())
                .await
                .ok();
            return Err(ImageError::Checksum {
                url,
                algorithm: algorithm.name(),
                expected: expected_hex.to_owned(),
                actual,
            });
        }
        progress.set_stage(Stage::Finishing);
        let data_bytes = done.writer.data_bytes();
        let name = device.name.clone();
        let image_size = tokio::task::spawn_blocking(move || done.writer.commit())
            .await
            .map_err(|e| ImageError::Write(format!("the writer thread failed: {e}")))?
            .map_err(|e| ImageError::Write(format!("finishing the image on {name} failed: {e}")))?;
        tracing::info!(
            "image {} ({} {}) written to {}: {received} bytes received, {image_size} bytes of disk, {data_bytes} bytes of data written, {} verified, {} reconnections",
            info.id,
            done.format.name(),
            done.compression.name(),
            device.name,
            algorithm.name(),
            dl.resumes()
        );
        Ok(WriteReport {
            bytes: received,
            image_size,
            data_bytes,
            digest: actual,
            algorithm: algorithm.name(),
            url,
            compression: done.compression.name(),
            format: done.format.name(),
            resumes: dl.resumes(),
        })
    }
}

/// Reads until `buf` is full or the stream ends.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The finished (not yet committed) write.
struct Written {
    writer: DiskWriter,
    compression: Compression,
    format: DiskFormat,
}

/// Everything the writer thread needs.
struct WriteJob {
    path: PathBuf,
    device: String,
    capacity: u64,
    image: String,
    declared: Option<String>,
    permitted: Option<Vec<String>>,
    total: Option<u64>,
    range: Option<RangeReader>,
    progress: Arc<Progress>,
}

/// Counts guest bytes into the progress.
struct Counting<'a, S: GuestSink> {
    inner: &'a mut S,
    progress: &'a Progress,
    done: u64,
}

impl<S: GuestSink> GuestSink for Counting<'_, S> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        self.inner.write_at(offset, data)?;
        self.done += data.len() as u64;
        self.progress.set_written(self.done);
        Ok(())
    }

    fn zero_range(&mut self, offset: u64, len: u64) -> Result<(), SinkError> {
        self.inner.zero_range(offset, len)?;
        self.done += len;
        self.progress.set_written(self.done);
        Ok(())
    }
}

impl WriteJob {
    fn read_error(&self, e: &std::io::Error, compression: Compression) -> ImageError {
        if e.kind() == std::io::ErrorKind::ConnectionAborted {
            ImageError::Download(e.to_string())
        } else if compression != Compression::None {
            ImageError::Invalid(format!(
                "image {}: the {} data is corrupt or truncated: {e}; check the image file",
                self.image,
                compression.name()
            ))
        } else {
            ImageError::Invalid(format!("image {}: reading it failed: {e}", self.image))
        }
    }

    fn write_error(&self, e: SinkError) -> ImageError {
        ImageError::Write(format!(
            "writing image {} to {} failed: {e}",
            self.image, self.device
        ))
    }

    fn too_large(&self, size: u64) -> ImageError {
        ImageError::Write(format!(
            "image {} is {size} bytes but the disk {} has only {} bytes; nothing was written. Choose a bigger disk with root device hints or a smaller image",
            self.image, self.device, self.capacity
        ))
    }

    /// Opens the disk (zeroing its first MiB) and starts the disk thread.
    fn open_disk(&self) -> Result<WriteBehind, ImageError> {
        let w = DiskWriter::open(&self.path, self.capacity).map_err(|e| self.write_error(e))?;
        WriteBehind::start(w, self.capacity, Pool::new(OUT_BUFFERS, BUF_SIZE))
            .map_err(|e| self.write_error(e))
    }

    /// Ends a write: waits for the disk thread, or aborts it on error.
    fn end(
        &self,
        wb: WriteBehind,
        result: Result<(), ImageError>,
    ) -> Result<DiskWriter, ImageError> {
        match result {
            Ok(()) => wb.finish().map_err(|e| self.write_error(e)),
            Err(e) => {
                wb.abort();
                Err(e)
            }
        }
    }

    fn detect(&self, head: &[u8], compression: Compression) -> Result<DiskFormat, ImageError> {
        let format = detect_disk_format(head)
            .map_err(|e| ImageError::Invalid(format!("image {}: {e}", self.image)))?;
        check_format(format, self.declared.as_deref(), self.permitted.as_deref())
            .map_err(|e| ImageError::Invalid(format!("image {}: {e}", self.image)))?;
        tracing::info!(
            "image {}: {} (compression: {})",
            self.image,
            format.name(),
            compression.name()
        );
        Ok(format)
    }

    fn run(self, mut reader: ChannelReader) -> Result<Written, ImageError> {
        // Peek (do not consume) the first bytes: the first buffer holds at
        // least DETECT_BYTES unless the whole image is shorter.
        let head = reader
            .fill_buf()
            .map_err(|e| self.read_error(&e, Compression::None))?;
        if head.is_empty() {
            return Err(ImageError::Invalid(format!(
                "image {} is empty; check the image URL",
                self.image
            )));
        }
        let compression = Compression::detect(head);
        let (format, writer) = match compression {
            Compression::None => {
                let format = self.detect(&head[..head.len().min(DETECT_BYTES)], compression)?;
                let writer = match format {
                    DiskFormat::Raw => self.raw_buffers(reader)?,
                    DiskFormat::Qcow2 => self.qcow2(reader, compression)?,
                };
                (format, writer)
            }
            Compression::Gzip => {
                self.decoded(flate2::bufread::MultiGzDecoder::new(reader), compression)?
            }
            Compression::Xz => self.decoded(
                liblzma::bufread::XzDecoder::new_multi_decoder(reader),
                compression,
            )?,
            Compression::Bzip2 => {
                self.decoded(bzip2::bufread::MultiBzDecoder::new(reader), compression)?
            }
            Compression::Zstd => {
                let dec = zstd::stream::read::Decoder::with_buffer(reader)
                    .map_err(|e| self.read_error(&e, compression))?;
                self.decoded(dec, compression)?
            }
        };
        Ok(Written {
            writer,
            compression,
            format,
        })
    }

    /// A decompressed image: detect its format from the first bytes, then write it.
    fn decoded<R: Read>(
        &self,
        mut r: R,
        compression: Compression,
    ) -> Result<(DiskFormat, DiskWriter), ImageError> {
        let mut head = vec![0u8; DETECT_BYTES];
        let n = read_full(&mut r, &mut head).map_err(|e| self.read_error(&e, compression))?;
        head.truncate(n);
        let format = self.detect(&head, compression)?;
        let chained = Read::chain(std::io::Cursor::new(head), r);
        let writer = match format {
            DiskFormat::Raw => self.raw_stream(chained, compression)?,
            DiskFormat::Qcow2 => self.qcow2(chained, compression)?,
        };
        Ok((format, writer))
    }

    /// An uncompressed raw image: the download's buffers go to the disk
    /// thread as they are, without a copy.
    fn raw_buffers(&self, mut reader: ChannelReader) -> Result<DiskWriter, ImageError> {
        if let Some(total) = self.total.filter(|t| *t > self.capacity) {
            return Err(self.too_large(total));
        }
        let mut wb = self.open_disk()?;
        let mut at = 0u64;
        let result = loop {
            match reader.take_buffer() {
                Ok(Some((buf, start))) => {
                    let n = (buf.len() - start) as u64;
                    if let Err(e) = wb.write_buf(at, buf, start) {
                        break Err(self.write_error(e));
                    }
                    at += n;
                    self.progress.set_written(at);
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(self.read_error(&e, Compression::None)),
            }
        };
        self.end(wb, result)
    }

    /// A decompressed raw image: decoded straight into pooled buffers.
    fn raw_stream<R: Read>(
        &self,
        mut r: R,
        compression: Compression,
    ) -> Result<DiskWriter, ImageError> {
        let mut wb = self.open_disk()?;
        let mut at = 0u64;
        let result = loop {
            let mut buf = match wb.buffer() {
                Ok(b) => b,
                Err(e) => break Err(self.write_error(e)),
            };
            let n = match read_full(&mut r, buf.spare_mut()) {
                Ok(n) => n,
                Err(e) => break Err(self.read_error(&e, compression)),
            };
            if n == 0 {
                break Ok(());
            }
            buf.advance(n);
            if let Err(e) = wb.write_buf(at, buf, 0) {
                break Err(self.write_error(e));
            }
            at += n as u64;
            self.progress.set_written(at);
        };
        self.end(wb, result)
    }

    fn qcow2_error(&self, e: Qcow2Error, compression: Compression) -> ImageError {
        match e {
            Qcow2Error::Read(io) => self.read_error(&io, compression),
            Qcow2Error::Sink(s) => self.write_error(s),
            other => ImageError::Invalid(format!("image {}: {other}", self.image)),
        }
    }

    fn qcow2<R: Read>(&self, r: R, compression: Compression) -> Result<DiskWriter, ImageError> {
        let file_len = if compression == Compression::None {
            self.total
        } else {
            None
        };
        let mut plan = None;
        if let (Some(len), Some(range)) = (file_len, &self.range) {
            let mut range = range.clone();
            match Plan::build(&mut range, len) {
                Ok(p) => plan = Some(p),
                Err(Qcow2Error::Read(e)) => tracing::info!(
                    "image {}: no random access to the qcow2 metadata ({e}); converting in stream order",
                    self.image
                ),
                Err(e) => return Err(self.qcow2_error(e, compression)),
            }
        }
        let mut st =
            Streamer::new(r, file_len, plan).map_err(|e| self.qcow2_error(e, compression))?;
        let size = st.header().size;
        if size > self.capacity {
            return Err(self.too_large(size));
        }
        let mut wb = self.open_disk()?;
        let result = st
            .run(&mut Counting {
                inner: &mut wb,
                progress: &self.progress,
                done: 0,
            })
            .map_err(|e| self.qcow2_error(e, compression));
        self.end(wb, result)
    }
}

/// Reads the MBR disk signature (4 bytes at offset 440, little endian) as `0x%08x`.
pub fn mbr_disk_signature(path: &std::path::Path) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path)?;
    let mut sig = [0u8; 4];
    file.read_exact_at(&mut sig, 440)?;
    Ok(format!("0x{:08x}", u32::from_le_bytes(sig)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_little_endian_hex() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut data = vec![0u8; 512];
        data[440..444].copy_from_slice(&[0x78, 0x56, 0x34, 0x12]);
        std::fs::write(f.path(), &data).unwrap();
        assert_eq!(mbr_disk_signature(f.path()).unwrap(), "0x12345678");
    }

    #[test]
    fn file_names_from_urls() {
        assert_eq!(file_name_of("http://h/a/b/disk.raw?x=1"), "disk.raw");
        assert_eq!(file_name_of("file:///tmp/img"), "img");
    }

    #[tokio::test]
    async fn file_url_written_and_mismatch_keeps_head_zero() {
        let dir = tempfile::tempdir().unwrap();
        let img: Vec<u8> = (0..(3 << 20) + 7).map(|i| (i % 253) as u8 + 1).collect();
        let img_path = dir.path().join("disk.raw");
        std::fs::write(&img_path, &img).unwrap();
        let disk_path = dir.path().join("disk");
        std::fs::write(&disk_path, vec![0xaau8; 8 << 20]).unwrap();
        let device = BlockDevice {
            name: "d".into(),
            path: disk_path.clone(),
            size: 8 << 20,
            model: String::new(),
            vendor: String::new(),
            serial: None,
            wwn: None,
            rotational: false,
        };
        let info = ImageInfo {
            id: "img".into(),
            urls: vec![format!("file://{}", img_path.display())],
            ..Default::default()
        };
        let w = ImageWriter::new(reqwest::Client::new());
        let mut h = Hasher::new(ChecksumAlgorithm::Sha256);
        h.update(&img);
        let good = h.finalize_hex();
        let bad = "0".repeat(64);
        let err = w
            .write_whole_disk(&info, ChecksumAlgorithm::Sha256, &bad, &device, None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), AgentErrorKind::ImageChecksumError);
        assert!(err.to_string().contains(&good));
        let on_disk = std::fs::read(&disk_path).unwrap();
        assert!(on_disk[..1 << 20].iter().all(|&b| b == 0));

        let report = w
            .write_whole_disk(&info, ChecksumAlgorithm::Sha256, &good, &device, None)
            .await
            .unwrap();
        assert_eq!(report.bytes, img.len() as u64);
        let on_disk = std::fs::read(&disk_path).unwrap();
        assert_eq!(&on_disk[..img.len()], &img[..]);

        let small = BlockDevice {
            size: 1 << 20,
            ..device
        };
        let err = w
            .write_whole_disk(&info, ChecksumAlgorithm::Sha256, &good, &small, None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), AgentErrorKind::ImageWriteError);
    }
}
