//! The virtual-media ISO: BIOS-bootable (isolinux) ISO 9660 image carrying the
//! kernel and initramfs, labelled `config-2` and holding the config drive when one
//! is given. Built with xorriso; the boot loader comes from the distribution's
//! `isolinux` and `syslinux-common` packages.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::debian::{fetch_package, PackageError};

/// Volume label of an ISO without a config drive.
pub const PLAIN_LABEL: &str = "IRONCLAD";
/// Volume label that makes the ISO a config drive.
pub const CONFIG_DRIVE_LABEL: &str = "config-2";

/// Why the ISO could not be built.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    /// A boot-loader package could not be fetched.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// xorriso is missing or failed.
    #[error(
        "xorriso failed ({0}); install it with `apt-get install xorriso` (./scripts/setup does)"
    )]
    Xorriso(String),
}

/// What goes into the ISO.
#[derive(Debug, Clone)]
pub struct IsoInputs<'a> {
    /// Kernel image.
    pub kernel: &'a Path,
    /// Compressed initramfs.
    pub initramfs: &'a Path,
    /// Kernel command line.
    pub cmdline: &'a str,
    /// A config-drive tree (`openstack/latest/...`) to include, if any.
    pub config_drive: Option<&'a Path>,
    /// Where downloaded packages are cached.
    pub cache: &'a Path,
    /// Fixed timestamp for every file, for reproducible output.
    pub source_date_epoch: u64,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> IsoError {
    move |source| IsoError::Io { context, source }
}

fn copy(from: &Path, to: &Path) -> Result<(), IsoError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    std::fs::copy(from, to).map_err(io(format!(
        "copying {} to {}",
        from.display(),
        to.display()
    )))?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), IsoError> {
    for entry in std::fs::read_dir(from).map_err(io(format!("reading {}", from.display())))? {
        let entry = entry.map_err(io(format!("reading {}", from.display())))?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            copy(&entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Builds the ISO at `output` from a staging directory next to it.
pub fn build(inputs: &IsoInputs<'_>, output: &Path) -> Result<(), IsoError> {
    let isolinux = fetch_package("isolinux", inputs.cache)?;
    let syslinux = fetch_package("syslinux-common", inputs.cache)?;
    let staging: PathBuf = output.with_extension("staging");
    let _ = std::fs::remove_dir_all(&staging);
    copy(
        &isolinux.join("usr/lib/ISOLINUX/isolinux.bin"),
        &staging.join("isolinux/isolinux.bin"),
    )?;
    copy(
        &syslinux.join("usr/lib/syslinux/modules/bios/ldlinux.c32"),
        &staging.join("isolinux/ldlinux.c32"),
    )?;
    copy(inputs.kernel, &staging.join("ironclad/vmlinuz"))?;
    copy(inputs.initramfs, &staging.join("ironclad/initramfs"))?;
    let config = format!(
        "DEFAULT ironclad\nPROMPT 0\nTIMEOUT 0\nLABEL ironclad\n  KERNEL /ironclad/vmlinuz\n  APPEND initrd=/ironclad/initramfs boot_method=vmedia {}\n",
        inputs.cmdline
    );
    std::fs::write(staging.join("isolinux/isolinux.cfg"), config)
        .map_err(io("writing isolinux.cfg".to_owned()))?;
    let label = match inputs.config_drive {
        Some(tree) => {
            copy_tree(tree, &staging)?;
            CONFIG_DRIVE_LABEL
        }
        None => PLAIN_LABEL,
    };
    let _ = std::fs::remove_file(output);
    let result = Command::new("xorriso")
        .env("SOURCE_DATE_EPOCH", inputs.source_date_epoch.to_string())
        .args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(output)
        .args(["-V", label, "-J", "-R"])
        .arg("--set_all_file_dates")
        .arg(format!("={}", inputs.source_date_epoch))
        .args(["-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat"])
        .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table"])
        .arg(&staging)
        .output();
    let _ = std::fs::remove_dir_all(&staging);
    match result {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(IsoError::Xorriso(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        )),
        Err(e) => Err(IsoError::Xorriso(e.to_string())),
    }
}
