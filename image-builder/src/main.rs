//! `ironclad-image-builder`: builds the ramdisk (kernel, initramfs, ISO, manifest).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use ironclad_image_builder::{build, BuildOptions, Profile};

/// Build an Ironclad ramdisk from the static agent and a distribution kernel.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The static ironclad-agent binary (x86_64-unknown-linux-musl) to use as /init.
    #[arg(long)]
    agent: PathBuf,
    /// Profile: qemu (virtio only) or server (common server NICs and storage).
    #[arg(long, default_value = "qemu")]
    profile: Profile,
    /// Output directory.
    #[arg(long, default_value = "ramdisk")]
    output: PathBuf,
    /// Kernel package to fetch with apt instead of the profile's.
    #[arg(long)]
    kernel_package: Option<String>,
    /// Use an already unpacked kernel package instead of fetching one.
    #[arg(long)]
    kernel_tree: Option<PathBuf>,
    /// Directory searched for firmware files (repeatable).
    #[arg(long = "firmware-dir")]
    firmware_dirs: Vec<PathBuf>,
    /// Also build a bootable ISO for virtual media.
    #[arg(long)]
    iso: bool,
    /// Config-drive tree (openstack/latest/...) to put on the ISO, labelled config-2.
    #[arg(long, requires = "iso")]
    config_drive: Option<PathBuf>,
    /// Kernel command line for the ISO's boot loader.
    #[arg(long, default_value = "console=ttyS0")]
    cmdline: String,
    /// Package download cache.
    #[arg(long, env = "IRONCLAD_CACHE")]
    cache: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let cache = match cli.cache {
        Some(dir) => dir,
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .context("HOME is not set; pass --cache")?
            .join(".cache/ironclad/packages"),
    };
    let options = BuildOptions {
        agent: cli.agent,
        profile: cli.profile,
        output: cli.output,
        kernel_package: cli.kernel_package,
        kernel_tree: cli.kernel_tree,
        firmware_dirs: cli.firmware_dirs,
        iso: cli.iso,
        config_drive: cli.config_drive,
        cmdline: cli.cmdline,
        cache,
    };
    let manifest =
        build(&options).with_context(|| format!("building the {} ramdisk", options.profile))?;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "{} ramdisk in {}: kernel {:.1} MiB + initramfs {:.1} MiB = {:.1} MiB (budget {:.0} MiB), {} modules",
        manifest.profile,
        options.output.display(),
        mib(manifest.kernel.size),
        mib(manifest.initramfs.size),
        mib(manifest.total_size),
        mib(manifest.size_budget),
        manifest.modules.len()
    );
    if let Some(iso) = &manifest.iso {
        println!("ISO {} ({:.1} MiB)", iso.file, mib(iso.size));
    }
    if !manifest.missing_firmware.is_empty() {
        println!(
            "{} firmware files are not available and were left out (see manifest.json)",
            manifest.missing_firmware.len()
        );
    }
    Ok(())
}
