//! Image formats, detected from the bytes (never from the file name), and the
//! policy that decides whether a detected format may be written.

/// A compression wrapped around the disk image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// xz (LZMA2).
    Xz,
    /// Zstandard.
    Zstd,
    /// bzip2.
    Bzip2,
}

impl Compression {
    /// Detects a compression from the first bytes of a stream.
    pub fn detect(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Self::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else if head.len() >= 10
            && head.starts_with(b"BZh")
            && (b'1'..=b'9').contains(&head[3])
            && (head[4..10] == [0x31, 0x41, 0x59, 0x26, 0x53, 0x59]
                || head[4..10] == [0x17, 0x72, 0x45, 0x38, 0x50, 0x90])
        {
            Self::Bzip2
        } else {
            Self::None
        }
    }

    /// A short name for logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Xz => "xz",
            Self::Zstd => "zstd",
            Self::Bzip2 => "bzip2",
        }
    }
}

/// A disk image format this agent writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    /// A raw disk image.
    Raw,
    /// QEMU copy-on-write v2 or v3.
    Qcow2,
}

impl DiskFormat {
    /// The name used in `disk_format` and `permitted_image_formats`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }
}

/// Bytes needed to tell the formats apart.
pub const DETECT_BYTES: usize = 512;

/// Why an image's format is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// A known format this agent does not write.
    #[error("the image is in {0} format, which this agent does not write; convert it with `qemu-img convert -O qcow2` (or `-O raw`) and deploy that")]
    Unsupported(&'static str),
    /// The detected format differs from `disk_format`.
    #[error("the image data is {detected} but image_info declares disk_format {declared:?}; fix the image's disk_format (the format is detected from the bytes, not the name)")]
    Mismatch {
        /// What the bytes say.
        detected: &'static str,
        /// What image_info says.
        declared: String,
    },
    /// The format is not in `permitted_image_formats`.
    #[error("the image is {detected}, which is not among the permitted image formats {permitted:?}; ask the operator to permit it or convert the image")]
    NotPermitted {
        /// What the bytes say.
        detected: &'static str,
        /// The permitted formats.
        permitted: Vec<String>,
    },
}

/// Detects the disk format from the first bytes of the (decompressed) image.
///
/// Formats that are recognised but not written (VMDK, VHD, VHDX, VDI, QED,
/// LUKS) are refused, so that they are never written to disk as if raw.
pub fn detect_disk_format(head: &[u8]) -> Result<DiskFormat, FormatError> {
    if head.starts_with(b"QFI\xfb") {
        return Ok(DiskFormat::Qcow2);
    }
    let refused: &[(&[u8], usize, &'static str)] = &[
        (b"KDMV", 0, "vmdk"),
        (b"# Disk DescriptorFile", 0, "vmdk"),
        (b"vhdxfile", 0, "vhdx"),
        (b"conectix", 0, "vpc (vhd)"),
        (b"QED\0", 0, "qed"),
        (b"LUKS\xba\xbe", 0, "luks"),
        (&[0x7f, 0x10, 0xda, 0xbe], 0x40, "vdi"),
    ];
    for (magic, at, name) in refused {
        if head.len() >= at + magic.len() && &head[*at..at + magic.len()] == *magic {
            return Err(FormatError::Unsupported(name));
        }
    }
    Ok(DiskFormat::Raw)
}

/// Default `permitted_image_formats` when the controller sends none.
pub const DEFAULT_PERMITTED: &[&str] = &["raw", "qcow2"];

fn same(name: &str, format: DiskFormat) -> bool {
    let name = name.trim().to_ascii_lowercase();
    match format {
        // IPA's inspector calls a raw disk with a GPT "gpt"; both mean raw bytes here.
        DiskFormat::Raw => name == "raw" || name == "gpt",
        DiskFormat::Qcow2 => name == "qcow2",
    }
}

/// Checks the detected format against `disk_format` and the permitted formats.
pub fn check_format(
    detected: DiskFormat,
    declared: Option<&str>,
    permitted: Option<&[String]>,
) -> Result<(), FormatError> {
    if let Some(declared) = declared {
        let d = declared.trim();
        if !d.is_empty() && d != "unknown" && !same(d, detected) {
            return Err(FormatError::Mismatch {
                detected: detected.name(),
                declared: declared.to_owned(),
            });
        }
    }
    let permitted: Vec<String> = match permitted {
        Some(list) if !list.is_empty() => list.to_vec(),
        _ => DEFAULT_PERMITTED.iter().map(|s| (*s).to_owned()).collect(),
    };
    if !permitted.iter().any(|p| same(p, detected)) {
        return Err(FormatError::NotPermitted {
            detected: detected.name(),
            permitted,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressions_by_magic() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(Compression::detect(b"\xfd7zXZ\0\0\x04"), Compression::Xz);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"BZh91AY&SY\0\0"), Compression::Bzip2);
        // "BZh" alone (e.g. text) is not bzip2.
        assert_eq!(Compression::detect(b"BZh9 hello world"), Compression::None);
        assert_eq!(Compression::detect(b"hello"), Compression::None);
    }

    #[test]
    fn disk_formats_and_policy() {
        assert_eq!(
            detect_disk_format(b"QFI\xfb\0\0\0\x03"),
            Ok(DiskFormat::Qcow2)
        );
        assert_eq!(detect_disk_format(&[0u8; 512]), Ok(DiskFormat::Raw));
        assert!(matches!(
            detect_disk_format(b"KDMV\x01\0\0\0"),
            Err(FormatError::Unsupported("vmdk"))
        ));
        assert!(check_format(DiskFormat::Raw, Some("raw"), None).is_ok());
        assert!(check_format(DiskFormat::Raw, None, None).is_ok());
        assert!(check_format(DiskFormat::Qcow2, Some("unknown"), None).is_ok());
        let e = check_format(DiskFormat::Qcow2, Some("raw"), None).unwrap_err();
        assert!(e.to_string().contains("disk_format"));
        let only_raw = vec!["raw".to_owned()];
        assert!(matches!(
            check_format(DiskFormat::Qcow2, Some("qcow2"), Some(&only_raw)),
            Err(FormatError::NotPermitted { .. })
        ));
        let gpt = vec!["gpt".to_owned()];
        assert!(check_format(DiskFormat::Raw, Some("gpt"), Some(&gpt)).is_ok());
    }
}
