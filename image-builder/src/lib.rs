//! Ironclad's image builder.
//!
//! Builds, reproducibly, the ramdisk a node boots: the distribution's kernel plus a
//! zstd-compressed initramfs (cpio newc) holding the static `ironclad-agent` as
//! `/init` and the kernel modules of a profile (with their dependencies, read from
//! the modules' own metadata), a bootable ISO for virtual media, and a manifest
//! listing every file and its size.

pub mod debian;
pub mod initramfs;
pub mod iso;
pub mod modules;
pub mod profile;
pub mod ramdisk;

pub use profile::Profile;
pub use ramdisk::{build, BuildOptions, Manifest};
