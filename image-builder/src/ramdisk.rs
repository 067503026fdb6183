//! Assembles a ramdisk: kernel + initramfs (+ ISO) + manifest, for one profile.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::debian::{fetch_kernel, KernelTree, PackageError};
use crate::initramfs::{Archive, EntryKind, InitramfsError, ManifestFile};
use crate::iso::{IsoError, IsoInputs};
use crate::modules::{index_tree, read_builtin, resolve, ModuleError};
use crate::profile::Profile;

/// File names of the outputs inside the output directory.
pub const KERNEL_FILE: &str = "ironclad.kernel";
/// Initramfs file name.
pub const INITRAMFS_FILE: &str = "ironclad.initramfs";
/// ISO file name.
pub const ISO_FILE: &str = "ironclad.iso";
/// Manifest file name.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Where firmware lives inside the initramfs.
const FIRMWARE_DIR: &str = "/lib/firmware";
/// Where modules live inside the initramfs (flat: the agent loads them in dependency order).
const MODULES_DIR: &str = "/lib/modules";

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The static agent binary that becomes `/init`.
    pub agent: PathBuf,
    /// The profile.
    pub profile: Profile,
    /// Where the outputs go.
    pub output: PathBuf,
    /// Kernel package to fetch instead of the profile's.
    pub kernel_package: Option<String>,
    /// An already unpacked kernel package (root with `boot/` and `lib/modules/`), instead of fetching.
    pub kernel_tree: Option<PathBuf>,
    /// Extra directories searched for firmware files.
    pub firmware_dirs: Vec<PathBuf>,
    /// Whether to build the ISO too.
    pub iso: bool,
    /// A config-drive tree to put on the ISO (labels it `config-2`).
    pub config_drive: Option<PathBuf>,
    /// Kernel command line for the ISO's boot loader.
    pub cmdline: String,
    /// Download cache for packages.
    pub cache: PathBuf,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Fetching packages failed.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// Module resolution failed.
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// Writing the initramfs failed.
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    /// Building the ISO failed.
    #[error(transparent)]
    Iso(#[from] IsoError),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Artifact {
    /// File name in the output directory.
    pub file: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the file.
    pub sha256: String,
}

/// What was built, written as `manifest.json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Manifest {
    /// Profile name.
    pub profile: String,
    /// Kernel package the kernel and modules came from.
    pub kernel_package: String,
    /// Kernel release.
    pub kernel_version: String,
    /// The kernel image.
    pub kernel: Artifact,
    /// The compressed initramfs.
    pub initramfs: Artifact,
    /// The initramfs before compression, in bytes.
    pub initramfs_uncompressed_size: u64,
    /// Kernel plus initramfs, in bytes.
    pub total_size: u64,
    /// What the profile promises for `total_size`.
    pub size_budget: u64,
    /// The ISO, when built.
    pub iso: Option<Artifact>,
    /// Modules in load order.
    pub modules: Vec<String>,
    /// Firmware files modules may ask for that were found nowhere (not in the archive's main component).
    pub missing_firmware: Vec<String>,
    /// Every file in the initramfs.
    pub files: Vec<ManifestFile>,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> BuildError {
    move |source| BuildError::Io { context, source }
}

fn artifact(path: &Path) -> Result<Artifact, BuildError> {
    let data = std::fs::read(path).map_err(io(format!("reading {}", path.display())))?;
    Ok(Artifact {
        file: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        size: data.len() as u64,
        sha256: hex::encode(Sha256::digest(&data)),
    })
}

/// Builds the ramdisk described by `options`; returns its manifest.
pub fn build(options: &BuildOptions) -> Result<Manifest, BuildError> {
    let kernel = match &options.kernel_tree {
        Some(root) => KernelTree::locate(root, "(given tree)")?,
        None => fetch_kernel(
            options
                .kernel_package
                .as_deref()
                .unwrap_or(options.profile.kernel_package()),
            &options.cache,
        )?,
    };
    std::fs::create_dir_all(&options.output)
        .map_err(io(format!("creating {}", options.output.display())))?;

    let index = index_tree(&kernel.modules_dir)?;
    let builtin = read_builtin(&kernel.modules_dir);
    let modules = resolve(&index, &builtin, &options.profile.modules())?;

    let mut archive = Archive::new();
    for dir in ["/proc", "/sys", "/run", "/tmp", "/mnt", "/etc", MODULES_DIR] {
        archive.add(dir, EntryKind::Directory);
    }
    archive.add("/dev/console", EntryKind::CharDevice { major: 5, minor: 1 });
    archive.add("/dev/null", EntryKind::CharDevice { major: 1, minor: 3 });
    archive.add(
        "/init",
        EntryKind::File {
            source: options.agent.clone(),
            mode: 0o755,
        },
    );
    let mut missing_firmware = Vec::new();
    for module in &modules {
        archive.add(
            &format!("{MODULES_DIR}/{}.ko", module.name),
            EntryKind::File {
                source: module.path.clone(),
                mode: 0o644,
            },
        );
        for firmware in &module.firmware {
            let found = options
                .firmware_dirs
                .iter()
                .map(|dir| dir.join(firmware))
                .find(|p| p.is_file());
            match found {
                Some(source) => archive.add(
                    &format!("{FIRMWARE_DIR}/{firmware}"),
                    EntryKind::File {
                        source,
                        mode: 0o644,
                    },
                ),
                None => missing_firmware.push(firmware.clone()),
            }
        }
    }
    missing_firmware.sort();
    missing_firmware.dedup();

    let kernel_out = options.output.join(KERNEL_FILE);
    std::fs::copy(&kernel.vmlinuz, &kernel_out)
        .map_err(io(format!("copying {}", kernel.vmlinuz.display())))?;
    let initramfs_out = options.output.join(INITRAMFS_FILE);
    let (files, uncompressed) = archive.write_compressed(&initramfs_out)?;

    let iso = if options.iso {
        let iso_out = options.output.join(ISO_FILE);
        crate::iso::build(
            &IsoInputs {
                kernel: &kernel_out,
                initramfs: &initramfs_out,
                cmdline: &options.cmdline,
                config_drive: options.config_drive.as_deref(),
                cache: &options.cache,
                source_date_epoch: 946_684_800,
            },
            &iso_out,
        )?;
        Some(artifact(&iso_out)?)
    } else {
        None
    };

    let kernel_artifact = artifact(&kernel_out)?;
    let initramfs_artifact = artifact(&initramfs_out)?;
    let manifest = Manifest {
        profile: options.profile.name().to_owned(),
        kernel_package: kernel.package.clone(),
        kernel_version: kernel.version.clone(),
        total_size: kernel_artifact.size + initramfs_artifact.size,
        size_budget: options.profile.size_budget(),
        kernel: kernel_artifact,
        initramfs: initramfs_artifact,
        initramfs_uncompressed_size: uncompressed,
        iso,
        modules: modules.iter().map(|m| m.name.clone()).collect(),
        missing_firmware,
        files,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| io("encoding the manifest".to_owned())(std::io::Error::other(e)))?;
    let manifest_path = options.output.join(MANIFEST_FILE);
    std::fs::write(&manifest_path, json)
        .map_err(io(format!("writing {}", manifest_path.display())))?;
    Ok(manifest)
}
