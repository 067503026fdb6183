//! Ramdisk profiles: which kernel package and which modules go into a ramdisk.

use std::fmt;
use std::str::FromStr;

/// A ramdisk profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// virtio only, on Debian's cloud kernel: the smallest ramdisk, for the QEMU lab.
    Qemu,
    /// Common NIC and storage drivers for real servers, on Debian's generic kernel.
    Server,
}

/// Modules every profile needs: virtio, entropy, and the ACPI power button.
const VIRTIO: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "virtio_rng",
    "button",
    "evdev",
];

/// Modules for real hardware: Intel, Broadcom and Mellanox NICs; AHCI, NVMe,
/// MegaRAID and SAS HBAs; bonding and VLANs; filesystems a config drive uses.
const SERVER: &[&str] = &[
    // NICs
    "e1000",
    "e1000e",
    "igb",
    "igc",
    "ixgbe",
    "i40e",
    "ice",
    "tg3",
    "bnx2",
    "bnx2x",
    "bnxt_en",
    "mlx4_en",
    "mlx5_core",
    // storage
    "ahci",
    "nvme",
    "megaraid_sas",
    "mpt3sas",
    "sd_mod",
    "sr_mod",
    "usb_storage",
    "uas",
    "xhci_pci",
    "ehci_pci",
    // networking features
    "bonding",
    "8021q",
    // config drive and virtual media
    "isofs",
    "vfat",
    "nls_cp437",
    "nls_iso8859_1",
    // IPMI
    "ipmi_si",
    "ipmi_devintf",
];

impl Profile {
    /// The profile's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Qemu => "qemu",
            Profile::Server => "server",
        }
    }

    /// The Debian package whose kernel the profile boots.
    pub fn kernel_package(self) -> &'static str {
        match self {
            // LZ4-compressed and virtio-focused: reaches /init about 3 s sooner under TCG.
            Profile::Qemu => "linux-image-cloud-amd64",
            Profile::Server => "linux-image-amd64",
        }
    }

    /// The modules the profile asks for (their dependencies are added).
    pub fn modules(self) -> Vec<&'static str> {
        match self {
            Profile::Qemu => VIRTIO.to_vec(),
            Profile::Server => VIRTIO.iter().chain(SERVER).copied().collect(),
        }
    }

    /// The size the profile promises for kernel plus initramfs.
    pub fn size_budget(self) -> u64 {
        match self {
            Profile::Qemu => 24 * 1024 * 1024,
            Profile::Server => 64 * 1024 * 1024,
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A profile name that does not exist.
#[derive(Debug, thiserror::Error)]
#[error("unknown profile {0:?}: use qemu or server")]
pub struct UnknownProfile(String);

impl FromStr for Profile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "qemu" => Ok(Profile::Qemu),
            "server" => Ok(Profile::Server),
            other => Err(UnknownProfile(other.to_owned())),
        }
    }
}
