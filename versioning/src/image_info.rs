//! `image_info`: what the controller tells the agent about the image to write,
//! and the rules that decide which checksum verifies it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Description of an image to write, as sent in `write_image` / `prepare_image`.
///
/// Every field but `id` and `urls` is optional; unknown fields are kept in
/// `extra` so that a newer controller's additions survive a round trip.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Image identifier (Glance UUID or the URL itself).
    pub id: String,
    /// Where to download the image from, tried in order.
    pub urls: Vec<String>,
    /// Legacy checksum: a hex digest (length decides the algorithm) or a URL of a checksum file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Hash algorithm of `os_hash_value` (`sha256`, `sha512`, `md5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_hash_algo: Option<String>,
    /// Hex digest, or a URL of a checksum file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_hash_value: Option<String>,
    /// Declared disk format: `raw`, `qcow2`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_format: Option<String>,
    /// Declared container format, normally `bare`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_format: Option<String>,
    /// Whether raw images are streamed straight to disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_raw_images: Option<bool>,
    /// `partition` for partition images; anything else means whole disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_type: Option<String>,
    /// UUID of the node the image is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_uuid: Option<String>,
    /// Value of an `Authorization` header for the image server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_request_authorization: Option<String>,
    /// `http_basic` when the image server wants basic auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_server_auth_strategy: Option<String>,
    /// Basic-auth user for the image server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_server_user: Option<String>,
    /// Basic-auth password for the image server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_server_password: Option<String>,
    /// Proxies by scheme, e.g. `{"http": "...", "https": "..."}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxies: Option<Map<String, Value>>,
    /// Comma-separated hosts that bypass the proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_proxy: Option<String>,
    /// Config drive (legacy placement inside image_info).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configdrive: Option<String>,
    /// Fields this version does not model (partition layout, boot mode, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A hash algorithm usable for image checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    /// MD5 (only when the controller allows it).
    Md5,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl ChecksumAlgorithm {
    /// Parses an `os_hash_algo` name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "md5" => Some(Self::Md5),
            "sha256" => Some(Self::Sha256),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// Infers the algorithm from the length of a hex digest.
    pub fn from_digest_len(len: usize) -> Option<Self> {
        match len {
            32 => Some(Self::Md5),
            64 => Some(Self::Sha256),
            128 => Some(Self::Sha512),
            _ => None,
        }
    }

    /// The algorithm's name as used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Md5 => "md5",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }
}

/// Where the expected checksum comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedChecksum {
    /// A digest given directly.
    Digest {
        /// Hash algorithm.
        algorithm: ChecksumAlgorithm,
        /// Lower-case hex digest.
        hex: String,
    },
    /// A URL of a checksum file; the algorithm, when known, comes from `os_hash_algo`.
    FileUrl {
        /// Where the checksum file is.
        url: String,
        /// The algorithm named by `os_hash_algo`, if any; otherwise inferred from the digest.
        algorithm: Option<ChecksumAlgorithm>,
    },
}

/// Why an `image_info` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageInfoError {
    /// `id` is empty.
    #[error("image_info is missing the image id")]
    MissingId,
    /// `urls` is empty.
    #[error("image_info has no urls to download the image from")]
    NoUrls,
    /// Only one of `os_hash_algo` and `os_hash_value` was given.
    #[error("os_hash_algo and os_hash_value must be given together")]
    IncompleteOsHash,
    /// `os_hash_algo` names an algorithm the agent does not know.
    #[error("unsupported os_hash_algo {0:?}; use sha256 or sha512")]
    UnknownAlgorithm(String),
    /// A checksum of a length that matches no algorithm.
    #[error("checksum {0:?} is neither an md5, sha256 nor sha512 hex digest")]
    BadDigest(String),
    /// MD5 was given but the controller has not allowed it.
    #[error("an md5 checksum was given but md5 is disabled (agent_md5_checksum_enable is false); give a sha256 or sha512 checksum")]
    Md5Disabled,
    /// No checksum at all.
    #[error("image_info has no checksum: give os_hash_algo and os_hash_value, or checksum")]
    NoChecksum,
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://") || s.starts_with("file://")
}

impl ImageInfo {
    /// True for a partition image (decided only by `image_type`).
    pub fn is_partition_image(&self) -> bool {
        self.image_type.as_deref() == Some("partition")
    }

    /// Validates the fields and picks the checksum that verifies the image.
    ///
    /// Rules, in order: `os_hash_algo` + `os_hash_value` when both are present
    /// (the value may be a checksum-file URL); else `checksum`, a URL or a digest
    /// whose length decides the algorithm. MD5 is accepted only when `md5_allowed`.
    pub fn expected_checksum(&self, md5_allowed: bool) -> Result<ExpectedChecksum, ImageInfoError> {
        if self.id.is_empty() {
            return Err(ImageInfoError::MissingId);
        }
        if self.urls.is_empty() {
            return Err(ImageInfoError::NoUrls);
        }
        let chosen = match (nonempty(&self.os_hash_algo), nonempty(&self.os_hash_value)) {
            (Some(algo), Some(value)) => {
                let algorithm = ChecksumAlgorithm::from_name(algo)
                    .ok_or_else(|| ImageInfoError::UnknownAlgorithm(algo.to_owned()))?;
                if is_url(value) {
                    ExpectedChecksum::FileUrl {
                        url: value.to_owned(),
                        algorithm: Some(algorithm),
                    }
                } else {
                    digest(value, Some(algorithm))?
                }
            }
            (Some(_), None) | (None, Some(_)) => return Err(ImageInfoError::IncompleteOsHash),
            (None, None) => match nonempty(&self.checksum) {
                Some(value) if is_url(value) => ExpectedChecksum::FileUrl {
                    url: value.to_owned(),
                    algorithm: None,
                },
                Some(value) => digest(value, None)?,
                None => return Err(ImageInfoError::NoChecksum),
            },
        };
        match chosen {
            ExpectedChecksum::Digest {
                algorithm: ChecksumAlgorithm::Md5,
                ..
            }
            | ExpectedChecksum::FileUrl {
                algorithm: Some(ChecksumAlgorithm::Md5),
                ..
            } if !md5_allowed => Err(ImageInfoError::Md5Disabled),
            other => Ok(other),
        }
    }
}

fn nonempty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|s| !s.trim().is_empty())
}

/// Parses a hex digest, checking that its length fits the algorithm.
fn digest(
    value: &str,
    algorithm: Option<ChecksumAlgorithm>,
) -> Result<ExpectedChecksum, ImageInfoError> {
    let hex = value.trim().to_ascii_lowercase();
    let by_len = ChecksumAlgorithm::from_digest_len(hex.len());
    let algorithm = match (algorithm, by_len) {
        (Some(named), Some(inferred)) if named == inferred => named,
        (None, Some(inferred)) => inferred,
        _ => return Err(ImageInfoError::BadDigest(value.to_owned())),
    };
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ImageInfoError::BadDigest(value.to_owned()));
    }
    Ok(ExpectedChecksum::Digest { algorithm, hex })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ImageInfo {
        ImageInfo {
            id: "img".into(),
            urls: vec!["http://example/img.raw".into()],
            ..Default::default()
        }
    }

    #[test]
    fn os_hash_pair_wins_over_legacy_checksum() {
        let mut i = info();
        i.checksum = Some("a".repeat(32));
        i.os_hash_algo = Some("sha512".into());
        i.os_hash_value = Some("b".repeat(128));
        assert_eq!(
            i.expected_checksum(false).unwrap(),
            ExpectedChecksum::Digest {
                algorithm: ChecksumAlgorithm::Sha512,
                hex: "b".repeat(128)
            }
        );
    }

    #[test]
    fn digest_length_decides_algorithm() {
        let mut i = info();
        i.checksum = Some("C".repeat(64));
        assert_eq!(
            i.expected_checksum(false).unwrap(),
            ExpectedChecksum::Digest {
                algorithm: ChecksumAlgorithm::Sha256,
                hex: "c".repeat(64)
            }
        );
        i.checksum = Some("c".repeat(40));
        assert!(matches!(
            i.expected_checksum(true),
            Err(ImageInfoError::BadDigest(_))
        ));
    }

    #[test]
    fn md5_needs_permission() {
        let mut i = info();
        i.checksum = Some("d".repeat(32));
        assert_eq!(i.expected_checksum(false), Err(ImageInfoError::Md5Disabled));
        assert!(i.expected_checksum(true).is_ok());
    }

    #[test]
    fn named_algorithm_must_match_digest_length() {
        let mut i = info();
        i.os_hash_algo = Some("sha256".into());
        i.os_hash_value = Some("e".repeat(128));
        assert!(matches!(
            i.expected_checksum(true),
            Err(ImageInfoError::BadDigest(_))
        ));
    }

    #[test]
    fn checksum_url_is_a_file_reference() {
        let mut i = info();
        i.checksum = Some("http://example/SHA256SUMS".into());
        assert_eq!(
            i.expected_checksum(false).unwrap(),
            ExpectedChecksum::FileUrl {
                url: "http://example/SHA256SUMS".into(),
                algorithm: None
            }
        );
    }

    #[test]
    fn missing_pieces_are_named() {
        let mut i = info();
        assert_eq!(i.expected_checksum(true), Err(ImageInfoError::NoChecksum));
        i.os_hash_algo = Some("sha256".into());
        assert_eq!(
            i.expected_checksum(true),
            Err(ImageInfoError::IncompleteOsHash)
        );
        i.urls.clear();
        assert_eq!(i.expected_checksum(true), Err(ImageInfoError::NoUrls));
    }
}
