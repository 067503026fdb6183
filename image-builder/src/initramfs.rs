//! The initramfs: a cpio (newc) archive with fixed metadata, compressed with zstd,
//! so the same inputs always give the same bytes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use cpio::newc::{Builder, ModeFileType};
use sha2::{Digest, Sha256};

/// zstd level for the initramfs: small, and decompression speed does not depend on it.
pub const ZSTD_LEVEL: i32 = 19;

/// What an archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Directory,
    /// A regular file, read from the host.
    File {
        /// Where its bytes come from.
        source: PathBuf,
        /// Permission bits.
        mode: u32,
    },
    /// A regular file given in memory.
    Bytes {
        /// Its content.
        data: Vec<u8>,
        /// Permission bits.
        mode: u32,
    },
    /// A character device node.
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
}

/// One file of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ManifestFile {
    /// Path inside the initramfs.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the content.
    pub sha256: String,
}

/// Why the initramfs could not be written.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is too large for a newc archive (4 GiB).
    #[error("{0} is too large for a cpio newc archive")]
    TooLarge(String),
}

/// The archive's entries, kept sorted by path; parent directories are added automatically.
#[derive(Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, EntryKind>,
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry at `path` (absolute or relative; stored without the leading `/`),
    /// with its parent directories.
    pub fn add(&mut self, path: &str, kind: EntryKind) {
        let path = path.trim_start_matches('/').to_owned();
        let mut parent = Path::new(&path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            self.entries
                .entry(dir.to_string_lossy().into_owned())
                .or_insert(EntryKind::Directory);
            parent = dir.parent();
        }
        self.entries.insert(path, kind);
    }

    /// Writes the uncompressed newc archive; returns the manifest of regular files.
    pub fn write_cpio<W: Write>(&self, out: W) -> Result<(W, Vec<ManifestFile>), InitramfsError> {
        let mut out = out;
        let mut manifest = Vec::new();
        for (ino, (path, kind)) in (1u32..).zip(&self.entries) {
            let base = Builder::new(path).ino(ino).uid(0).gid(0).mtime(0).nlink(1);
            let io = |context: &str| {
                let context = format!("{context} {path}");
                move |source| InitramfsError::Io { context, source }
            };
            out = match kind {
                EntryKind::Directory => base
                    .mode(0o755)
                    .set_mode_file_type(ModeFileType::Directory)
                    .nlink(2)
                    .write(out, 0)
                    .finish()
                    .map_err(io("writing"))?,
                EntryKind::CharDevice { major, minor } => base
                    .mode(0o600)
                    .set_mode_file_type(ModeFileType::Char)
                    .rdev_major(*major)
                    .rdev_minor(*minor)
                    .write(out, 0)
                    .finish()
                    .map_err(io("writing"))?,
                EntryKind::File { source, mode } => {
                    let data = std::fs::read(source).map_err(io("reading the source of"))?;
                    let (w, file) = write_file(base, out, path, &data, *mode)?;
                    manifest.push(file);
                    w
                }
                EntryKind::Bytes { data, mode } => {
                    let (w, file) = write_file(base, out, path, data, *mode)?;
                    manifest.push(file);
                    w
                }
            };
        }
        let out = cpio::newc::trailer(out).map_err(|source| InitramfsError::Io {
            context: "writing the cpio trailer".to_owned(),
            source,
        })?;
        Ok((out, manifest))
    }

    /// Writes the zstd-compressed archive to `path`; returns the manifest and the
    /// uncompressed size.
    pub fn write_compressed(
        &self,
        path: &Path,
    ) -> Result<(Vec<ManifestFile>, u64), InitramfsError> {
        let io = |context: String| move |source| InitramfsError::Io { context, source };
        let (cpio, manifest) = self.write_cpio(Vec::new())?;
        let compressed = zstd::bulk::compress(&cpio, ZSTD_LEVEL)
            .map_err(io("compressing the initramfs".to_owned()))?;
        std::fs::write(path, compressed).map_err(io(format!("writing {}", path.display())))?;
        Ok((manifest, cpio.len() as u64))
    }
}

fn write_file<W: Write>(
    builder: Builder,
    out: W,
    path: &str,
    data: &[u8],
    mode: u32,
) -> Result<(W, ManifestFile), InitramfsError> {
    let size = u32::try_from(data.len()).map_err(|_| InitramfsError::TooLarge(path.to_owned()))?;
    let mut writer = builder
        .mode(mode)
        .set_mode_file_type(ModeFileType::Regular)
        .write(out, size);
    let io = |source| InitramfsError::Io {
        context: format!("writing {path}"),
        source,
    };
    writer.write_all(data).map_err(io)?;
    let out = writer.finish().map_err(io)?;
    Ok((
        out,
        ManifestFile {
            path: format!("/{path}"),
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Archive {
        let mut archive = Archive::new();
        archive.add(
            "/init",
            EntryKind::Bytes {
                data: b"#!agent".to_vec(),
                mode: 0o755,
            },
        );
        archive.add("/dev/console", EntryKind::CharDevice { major: 5, minor: 1 });
        archive.add(
            "/lib/modules/virtio.ko",
            EntryKind::Bytes {
                data: vec![1, 2, 3],
                mode: 0o644,
            },
        );
        archive
    }

    #[test]
    fn archives_are_reproducible_and_readable() {
        let (first, manifest) = sample().write_cpio(Vec::new()).unwrap();
        let (second, _) = sample().write_cpio(Vec::new()).unwrap();
        assert_eq!(first, second);
        assert_eq!(manifest.len(), 2);

        let mut names = Vec::new();
        let mut cursor = std::io::Cursor::new(first);
        loop {
            let reader = cpio::NewcReader::new(cursor).unwrap();
            if reader.entry().is_trailer() {
                break;
            }
            names.push((reader.entry().name().to_owned(), reader.entry().mtime()));
            cursor = reader.finish().unwrap();
        }
        let paths: Vec<_> = names.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            paths,
            [
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/virtio.ko"
            ]
        );
        assert!(names.iter().all(|(_, mtime)| *mtime == 0));
    }
}
