//! Hashing image bytes on the fly, and parsing checksum files.

use ironclad_versioning::image_info::ChecksumAlgorithm;
use md5::Digest as _;

/// A running hash of one of the supported algorithms.
#[derive(Clone)]
pub enum Hasher {
    /// MD5.
    Md5(md5::Md5),
    /// SHA-256.
    Sha256(sha2::Sha256),
    /// SHA-512.
    Sha512(sha2::Sha512),
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hasher({})", self.algorithm().name())
    }
}

impl Hasher {
    /// A fresh hash.
    pub fn new(algorithm: ChecksumAlgorithm) -> Self {
        match algorithm {
            ChecksumAlgorithm::Md5 => Self::Md5(md5::Md5::new()),
            ChecksumAlgorithm::Sha256 => Self::Sha256(sha2::Sha256::new()),
            ChecksumAlgorithm::Sha512 => Self::Sha512(sha2::Sha512::new()),
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> ChecksumAlgorithm {
        match self {
            Self::Md5(_) => ChecksumAlgorithm::Md5,
            Self::Sha256(_) => ChecksumAlgorithm::Sha256,
            Self::Sha512(_) => ChecksumAlgorithm::Sha512,
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Md5(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    /// The lower-case hex digest.
    pub fn finalize_hex(self) -> String {
        match self {
            Self::Md5(h) => hex::encode(h.finalize()),
            Self::Sha256(h) => hex::encode(h.finalize()),
            Self::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// Why a checksum file gave no digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumFileError {
    /// The file has no line for the image.
    #[error("the checksum file has no entry for {0:?}")]
    NoEntry(String),
    /// The file is empty.
    #[error("the checksum file is empty")]
    Empty,
}

fn is_digest(s: &str) -> bool {
    matches!(s.len(), 32 | 64 | 128) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn same_file(listed: &str, wanted: &str) -> bool {
    let listed = listed.trim().trim_start_matches('*');
    let listed = listed.strip_prefix("./").unwrap_or(listed);
    listed == wanted || listed.rsplit('/').next() == Some(wanted)
}

/// Finds the digest of `file_name` in a checksum file.
///
/// Accepted: a file holding a single digest; lines `<hex>  name`, `<hex> *name`,
/// `name <hex>` and `ALGO (name) = <hex>`; `#` comments and blank lines are skipped.
/// The digest is returned in lower case.
pub fn parse_checksum_file(text: &str, file_name: &str) -> Result<String, ChecksumFileError> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if lines.is_empty() {
        return Err(ChecksumFileError::Empty);
    }
    if lines.len() == 1 {
        let words: Vec<&str> = lines[0].split_whitespace().collect();
        if words.len() == 1 && is_digest(words[0]) {
            return Ok(words[0].to_ascii_lowercase());
        }
    }
    for line in &lines {
        // BSD style: SHA256 (name) = hex
        if let (Some(open), Some(close)) = (line.find(" ("), line.rfind(") = ")) {
            if open < close {
                let name = &line[open + 2..close];
                let digest = line[close + 4..].trim();
                if same_file(name, file_name) && is_digest(digest) {
                    return Ok(digest.to_ascii_lowercase());
                }
                continue;
            }
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 2 {
            continue;
        }
        let (first, last) = (words[0], words[words.len() - 1]);
        if is_digest(first) && same_file(&words[1..].join(" "), file_name) {
            return Ok(first.to_ascii_lowercase());
        }
        if is_digest(last) && same_file(&words[..words.len() - 1].join(" "), file_name) {
            return Ok(last.to_ascii_lowercase());
        }
    }
    Err(ChecksumFileError::NoEntry(file_name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    #[test]
    fn all_line_formats() {
        let gnu = format!("# comment\n{A}  other.img\n{B}  disk.raw\n");
        assert_eq!(
            parse_checksum_file(&gnu, "disk.raw").unwrap(),
            B.to_lowercase()
        );
        let binary = format!("{A} *other.img\n{B} *disk.raw\n");
        assert_eq!(
            parse_checksum_file(&binary, "disk.raw").unwrap(),
            B.to_lowercase()
        );
        let reversed = format!("other.img {A}\ndisk.raw {B}\n");
        assert_eq!(
            parse_checksum_file(&reversed, "disk.raw").unwrap(),
            B.to_lowercase()
        );
        let bsd = format!("SHA256 (other.img) = {A}\nSHA256 (disk.raw) = {B}\n");
        assert_eq!(
            parse_checksum_file(&bsd, "disk.raw").unwrap(),
            B.to_lowercase()
        );
        let path = format!("{B}  ./images/disk.raw\n{A}  x\n");
        assert_eq!(
            parse_checksum_file(&path, "disk.raw").unwrap(),
            B.to_lowercase()
        );
    }

    #[test]
    fn single_digest_file() {
        assert_eq!(
            parse_checksum_file(&format!("{A}\n"), "whatever").unwrap(),
            A
        );
    }

    #[test]
    fn missing_entry_and_empty() {
        let gnu = format!("{A}  other.img\n{A}  third.img\n");
        assert_eq!(
            parse_checksum_file(&gnu, "disk.raw"),
            Err(ChecksumFileError::NoEntry("disk.raw".into()))
        );
        assert_eq!(
            parse_checksum_file("# nothing\n\n", "x"),
            Err(ChecksumFileError::Empty)
        );
    }

    #[test]
    fn hashes_known_values() {
        let mut h = Hasher::new(ChecksumAlgorithm::Sha256);
        h.update(b"abc");
        assert_eq!(
            h.finalize_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut h = Hasher::new(ChecksumAlgorithm::Md5);
        h.update(b"abc");
        assert_eq!(h.finalize_hex(), "900150983cd24fb0d6963f7d28e17f72");
    }
}
