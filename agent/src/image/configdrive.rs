//! Config drives: decoding the `configdrive` parameter (base64 of a gzipped
//! ISO, base64 of a plain ISO, or an http(s) URL of either) and writing it to
//! a whole-disk image's `config-2` partition (an existing one, else a new one
//! at the end of the disk).

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use base64::Engine as _;

use super::partitions::{add_configdrive_partition, find_configdrive, PartInfo, PartitionError};

/// Largest config drive accepted, after decompression.
pub const MAX_CONFIGDRIVE: u64 = 64 * 1024 * 1024;

/// Why a config drive could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    /// The value cannot be decoded.
    #[error("the config drive is not valid: {0}")]
    Invalid(String),
    /// It is bigger than 64 MiB after decompression.
    #[error(
        "the config drive is larger than 64 MiB after decompression; shrink its user data or files"
    )]
    TooLarge,
    /// It could not be downloaded.
    #[error("downloading the config drive from {url} failed: {message}")]
    Download {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// It could not be written.
    #[error("writing the config drive failed: {0}")]
    Write(String),
    /// No partition could hold it.
    #[error("{0}")]
    Partition(#[from] PartitionError),
}

/// True when the value is an http(s) URL to download.
pub fn is_url(value: &str) -> bool {
    let v = value.trim_start();
    v.starts_with("http://") || v.starts_with("https://")
}

/// Turns downloaded or inline bytes into the ISO: base64 (required inline,
/// optional for downloads) then gunzip when gzipped, at most [`MAX_CONFIGDRIVE`].
pub fn decode(data: &[u8], downloaded: bool) -> Result<Vec<u8>, ConfigDriveError> {
    let compact: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let bytes = match base64::engine::general_purpose::STANDARD.decode(&compact) {
        Ok(b) => b,
        Err(_) if downloaded => data.to_vec(),
        Err(e) => {
            return Err(ConfigDriveError::Invalid(format!(
                "it must be base64 (of a gzipped ISO 9660 image) or an http(s) URL: {e}"
            )))
        }
    };
    let out = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .take(MAX_CONFIGDRIVE + 1)
            .read_to_end(&mut out)
            .map_err(|e| ConfigDriveError::Invalid(format!("gzip data is corrupt: {e}")))?;
        out
    } else {
        bytes
    };
    if out.len() as u64 > MAX_CONFIGDRIVE {
        return Err(ConfigDriveError::TooLarge);
    }
    if out.is_empty() {
        return Err(ConfigDriveError::Invalid("it is empty".into()));
    }
    Ok(out)
}

/// Resolves the `configdrive` value to ISO bytes, downloading URLs with `client`.
pub async fn resolve(client: &reqwest::Client, value: &str) -> Result<Vec<u8>, ConfigDriveError> {
    if !is_url(value) {
        return decode(value.as_bytes(), false);
    }
    let url = value.trim().to_owned();
    // base64 of gzip of 64 MiB is at most about 86 MiB; anything longer is refused.
    let limit = (MAX_CONFIGDRIVE * 4 / 3 + 4096) as usize;
    let body = super::source::fetch_small(client, &url, &Default::default(), limit)
        .await
        .map_err(|e| ConfigDriveError::Download {
            url: url.clone(),
            message: e.to_string(),
        })?;
    decode(&body, true)
}

/// Writes `iso` at `part`'s start on `path` and syncs.
pub fn write_into(path: &Path, part: &PartInfo, iso: &[u8]) -> Result<(), ConfigDriveError> {
    if iso.len() as u64 > part.size {
        return Err(ConfigDriveError::Write(format!(
            "the config drive ({} bytes) does not fit its partition {} ({} bytes)",
            iso.len(),
            part.number,
            part.size
        )));
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| ConfigDriveError::Write(format!("opening {}: {e}", path.display())))?;
    file.write_all_at(iso, part.start)
        .and_then(|()| file.sync_all())
        .map_err(|e| ConfigDriveError::Write(format!("{}: {e}", path.display())))
}

/// Writes the config drive to a whole-disk image on `path` (`disk_size`
/// bytes): into the existing `config-2` partition, else into a new 64 MiB
/// partition at the end of the disk. Returns the partition used.
pub fn write_whole_disk(
    path: &Path,
    disk_size: u64,
    iso: &[u8],
) -> Result<PartInfo, ConfigDriveError> {
    let part = match find_configdrive(path)? {
        Some(p) => {
            tracing::info!(
                "{}: writing the config drive to the existing config-2 partition {}",
                path.display(),
                p.number
            );
            p
        }
        None => {
            let p = add_configdrive_partition(path, disk_size)?;
            tracing::info!(
                "{}: created config drive partition {} at byte {}",
                path.display(),
                p.number,
                p.start
            );
            p
        }
    };
    write_into(path, &part, iso)?;
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn decodes_base64_gzip_and_plain() {
        let iso = b"CD001 iso bytes".repeat(100);
        let b64 = base64::engine::general_purpose::STANDARD.encode(gz(&iso));
        assert_eq!(decode(b64.as_bytes(), false).unwrap(), iso);
        let plain = base64::engine::general_purpose::STANDARD.encode(&iso);
        assert_eq!(decode(plain.as_bytes(), false).unwrap(), iso);
        // Downloads may be raw bytes.
        assert_eq!(decode(&gz(&iso), true).unwrap(), iso);
        assert!(matches!(
            decode(b"not base64 !!", false),
            Err(ConfigDriveError::Invalid(_))
        ));
    }

    #[test]
    fn over_64_mib_is_refused() {
        let big = vec![0u8; (MAX_CONFIGDRIVE + 1) as usize];
        let b64 = base64::engine::general_purpose::STANDARD.encode(gz(&big));
        let err = decode(b64.as_bytes(), false).unwrap_err();
        assert!(matches!(err, ConfigDriveError::TooLarge));
        assert!(err.to_string().contains("64 MiB"));
    }
}
