//! Writing whole-disk images: download, hash and write as one streaming pipeline.
//!
//! The pipeline is a stack of small adapters, each testable alone:
//! [`source::ImageSource`] (HTTP(S) or `file://` chunks) →
//! [`sink::ProgressSink`] → [`sink::HashingSink`] → [`sink::FirstMibWriter`].
//! The first MiB of the disk is zeroed before anything is written and only
//! written once the checksum matched, so a failed or tampered download never
//! leaves a bootable half image. Memory stays bounded: chunks flow through a
//! small channel to a blocking writer thread.

pub mod checksum;
pub mod sink;
pub mod source;

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use ironclad_versioning::agent_api::AgentErrorKind;
use ironclad_versioning::image_info::{ChecksumAlgorithm, ExpectedChecksum, ImageInfo};
use tokio::sync::mpsc;

use crate::disk::BlockDevice;
use checksum::{parse_checksum_file, Hasher};
use sink::{FirstMibWriter, HashingSink, ImageSink, ProgressSink, SinkError};
use source::{ImageSource, OpenError, RequestAuth};

/// Chunks in flight between the download and the writer thread.
const CHANNEL_DEPTH: usize = 16;

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
}

impl ImageError {
    /// The `command_error.type` for this error.
    pub fn kind(&self) -> AgentErrorKind {
        match self {
            Self::Download(_) => AgentErrorKind::ImageDownloadError,
            Self::Checksum { .. } => AgentErrorKind::ImageChecksumError,
            Self::Write(_) => AgentErrorKind::ImageWriteError,
        }
    }
}

/// What a successful write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// Bytes written.
    pub bytes: u64,
    /// The verified digest.
    pub digest: String,
    /// Its algorithm.
    pub algorithm: &'static str,
    /// The URL the image came from.
    pub url: String,
}

/// Downloads and writes images.
#[derive(Debug, Clone)]
pub struct ImageWriter {
    client: reqwest::Client,
    /// Extra attempts per URL on 5xx / connection errors.
    pub retries: u32,
    /// Wait between attempts.
    pub retry_delay: Duration,
    /// Interval of progress log lines.
    pub progress_every: Duration,
}

enum AttemptError {
    /// Try again (same URL).
    Retry(String),
    /// Move to the next URL.
    NextUrl(String),
    /// Stop everything.
    Abort(ImageError),
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

impl ImageWriter {
    /// A writer using `client` for HTTP(S).
    pub fn new(client: reqwest::Client) -> Self {
        Self {
            client,
            retries: 3,
            retry_delay: Duration::from_secs(2),
            progress_every: Duration::from_secs(5),
        }
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
                let auth = auth_of(info);
                let src = ImageSource::open(&self.client, url, &auth)
                    .await
                    .map_err(|e| {
                        ImageError::Download(format!("could not fetch the checksum file: {e}"))
                    })?;
                let body = src.read_small(1024 * 1024).await.map_err(|e| {
                    ImageError::Download(format!("could not read the checksum file {url}: {e}"))
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

    /// Downloads the image from its URLs in order and writes it to `device`.
    pub async fn write_whole_disk(
        &self,
        info: &ImageInfo,
        algorithm: ChecksumAlgorithm,
        expected_hex: &str,
        device: &BlockDevice,
    ) -> Result<WriteReport, ImageError> {
        let auth = auth_of(info);
        let mut failures = Vec::new();
        for url in &info.urls {
            let mut attempt = 0;
            loop {
                match self
                    .attempt(info, url, &auth, algorithm, expected_hex, device)
                    .await
                {
                    Ok(report) => return Ok(report),
                    Err(AttemptError::Abort(e)) => return Err(e),
                    Err(AttemptError::NextUrl(msg)) => {
                        tracing::warn!("{msg}");
                        failures.push(msg);
                        break;
                    }
                    Err(AttemptError::Retry(msg)) => {
                        tracing::warn!("{msg} (attempt {} of {})", attempt + 1, self.retries + 1);
                        if attempt >= self.retries {
                            failures.push(msg);
                            break;
                        }
                        attempt += 1;
                        tokio::time::sleep(self.retry_delay).await;
                    }
                }
            }
        }
        Err(ImageError::Download(format!(
            "could not download image {} from any of its URLs: {}. Check that the image server is reachable from the node",
            info.id,
            failures.join("; ")
        )))
    }

    async fn attempt(
        &self,
        info: &ImageInfo,
        url: &str,
        auth: &RequestAuth,
        algorithm: ChecksumAlgorithm,
        expected_hex: &str,
        device: &BlockDevice,
    ) -> Result<WriteReport, AttemptError> {
        let mut src = ImageSource::open(&self.client, url, auth)
            .await
            .map_err(|e| match e {
                OpenError::Fatal(m) => AttemptError::NextUrl(m),
                OpenError::Retryable(m) => AttemptError::Retry(m),
            })?;
        if let Some(len) = src.content_length() {
            if len > device.size {
                return Err(AttemptError::Abort(ImageError::Write(format!(
                    "image {} is {len} bytes but the disk {} has only {} bytes; nothing was written. Choose a bigger disk with root device hints or a smaller image",
                    info.id, device.name, device.size
                ))));
            }
        }
        tracing::info!(
            "writing image {} from {url} to {} ({} bytes)",
            info.id,
            device.name,
            src.content_length()
                .map_or_else(|| "unknown size".to_owned(), |l| l.to_string())
        );

        let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
        let path = device.path.clone();
        let capacity = device.size;
        let label = format!("image {}", info.id);
        let every = self.progress_every;
        let writer = tokio::task::spawn_blocking(move || -> Result<_, SinkError> {
            let w = FirstMibWriter::create(&path, capacity)?;
            let mut sink =
                ProgressSink::new(HashingSink::new(w, Hasher::new(algorithm)), label, every);
            while let Some(chunk) = rx.blocking_recv() {
                if let Err(e) = sink.write_chunk(&chunk) {
                    let (w, _) = sink.finish().finish();
                    w.abort();
                    return Err(e);
                }
            }
            Ok(sink.finish().finish())
        });

        let mut stream_error = None;
        loop {
            match src.next_chunk().await {
                Ok(Some(chunk)) => {
                    if tx.send(chunk).await.is_err() {
                        // The writer stopped; its error is reported below.
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    stream_error = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let joined = writer.await.map_err(|e| {
            AttemptError::Abort(ImageError::Write(format!("writer thread failed: {e}")))
        })?;
        let (w, actual) = joined.map_err(|e| {
            AttemptError::Abort(ImageError::Write(format!(
                "writing image {} to {} failed: {e}",
                info.id, device.name
            )))
        })?;
        if let Some(e) = stream_error {
            tokio::task::spawn_blocking(move || w.abort()).await.ok();
            return Err(AttemptError::Retry(format!("{url}: {e}")));
        }
        if actual != expected_hex {
            tokio::task::spawn_blocking(move || w.abort()).await.ok();
            return Err(AttemptError::Abort(ImageError::Checksum {
                url: url.to_owned(),
                algorithm: algorithm.name(),
                expected: expected_hex.to_owned(),
                actual,
            }));
        }
        let bytes = tokio::task::spawn_blocking(move || w.commit())
            .await
            .map_err(|e| {
                AttemptError::Abort(ImageError::Write(format!("writer thread failed: {e}")))
            })?
            .map_err(|e| {
                AttemptError::Abort(ImageError::Write(format!(
                    "finishing image {} on {} failed: {e}",
                    info.id, device.name
                )))
            })?;
        tracing::info!(
            "image {} written to {}: {bytes} bytes, {} verified",
            info.id,
            device.name,
            algorithm.name()
        );
        Ok(WriteReport {
            bytes,
            digest: actual,
            algorithm: algorithm.name(),
            url: url.to_owned(),
        })
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
            .write_whole_disk(&info, ChecksumAlgorithm::Sha256, &bad, &device)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), AgentErrorKind::ImageChecksumError);
        assert!(err.to_string().contains(&good));
        let on_disk = std::fs::read(&disk_path).unwrap();
        assert!(on_disk[..1 << 20].iter().all(|&b| b == 0));

        let report = w
            .write_whole_disk(&info, ChecksumAlgorithm::Sha256, &good, &device)
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
            .write_whole_disk(&info, ChecksumAlgorithm::Sha256, &good, &small)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), AgentErrorKind::ImageWriteError);
    }
}
