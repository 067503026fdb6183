//! The demo's sample image: generated on disk (an MBR followed by pseudo-random
//! data) and served over HTTP, streamed from the file.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio_util::io::ReaderStream;

/// Disk signature written into the sample image's MBR (what `get_partition_uuids` reports).
pub const DISK_SIGNATURE: u32 = 0x1c0f_fee5;

/// Writes a whole-disk image of `size` bytes to `path`: an MBR with a disk
/// signature and one Linux partition, then pseudo-random data from `seed`.
/// Streams in 1 MiB chunks; returns the image's sha256 hex digest.
pub fn write_sample_image(path: &Path, size: u64, seed: u64) -> std::io::Result<String> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut hasher = Sha256::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut chunk = vec![0u8; 1024 * 1024];
    let mut written = 0u64;
    while written < size {
        let len = usize::try_from((size - written).min(chunk.len() as u64))
            .map_err(std::io::Error::other)?;
        rng.fill_bytes(&mut chunk[..len]);
        if written == 0 && len >= 512 {
            write_mbr(&mut chunk[..512], size);
        }
        hasher.update(&chunk[..len]);
        file.write_all(&chunk[..len])?;
        written += len as u64;
    }
    file.flush()?;
    Ok(hex::encode(hasher.finalize()))
}

/// Fills a 512-byte sector with an MBR: disk signature, one bootable Linux
/// partition from sector 2048 to the end of the image, boot signature.
fn write_mbr(sector: &mut [u8], image_size: u64) {
    sector.fill(0);
    sector[440..444].copy_from_slice(&DISK_SIGNATURE.to_le_bytes());
    sector[446] = 0x80;
    sector[450] = 0x83;
    sector[454..458].copy_from_slice(&2048u32.to_le_bytes());
    let sectors = u32::try_from(image_size / 512)
        .unwrap_or(u32::MAX)
        .saturating_sub(2048);
    sector[458..462].copy_from_slice(&sectors.to_le_bytes());
    sector[510] = 0x55;
    sector[511] = 0xaa;
}

/// sha256 hex digest of the first `len` bytes of a file.
pub fn sha256_prefix(path: &Path, len: u64) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?.take(len), &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// One file served over HTTP on a free loopback port; stops when dropped.
pub struct FileServer {
    addr: SocketAddr,
    name: String,
    task: tokio::task::JoinHandle<()>,
}

impl FileServer {
    /// Serves `path` at `/<file name>`.
    pub async fn start(path: PathBuf) -> std::io::Result<Self> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| std::io::Error::other("the served file has no name"))?
            .to_owned();
        let app = Router::new()
            .route(&format!("/{name}"), get(send_file))
            .with_state(path);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "the demo's image server stopped");
            }
        });
        Ok(Self { addr, name, task })
    }

    /// The URL of the served file.
    pub fn url(&self) -> String {
        format!("http://{}/{}", self.addr, self.name)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn send_file(State(path): State<PathBuf>) -> Response {
    match tokio::fs::File::open(&path).await {
        Ok(file) => {
            let length = file.metadata().await.map(|m| m.len()).ok();
            let mut response = Body::from_stream(ReaderStream::new(file)).into_response();
            if let Some(length) = length {
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, length.into());
            }
            response
        }
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_images_are_deterministic_and_carry_an_mbr() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.raw");
        let b = dir.path().join("b.raw");
        let size = 3 * 1024 * 1024 + 512;
        assert_eq!(
            write_sample_image(&a, size, 1).unwrap(),
            write_sample_image(&b, size, 1).unwrap()
        );
        let bytes = std::fs::read(&a).unwrap();
        assert_eq!(bytes.len() as u64, size);
        assert_eq!(&bytes[510..512], &[0x55, 0xaa]);
        assert_eq!(&bytes[440..444], &DISK_SIGNATURE.to_le_bytes());
        assert_eq!(
            sha256_prefix(&a, size).unwrap(),
            write_sample_image(&b, size, 1).unwrap()
        );
        assert_ne!(
            write_sample_image(&b, size, 2).unwrap(),
            sha256_prefix(&a, size).unwrap()
        );
    }
}
