//! Ironclad's image builder.
//!
//! Builds, reproducibly, the ramdisk a node boots: the distribution's kernel plus a
//! zstd-compressed initramfs (cpio newc) holding the static `ironclad-agent` as
//! `/init` and the kernel modules of a profile (`qemu`, `server`), and a bootable
//! ISO for virtual media. The builder itself arrives with the ramdisk issue; this
//! crate holds its place in the workspace and the names it will use.

/// Ramdisk profiles: which kernel modules and firmware go into the initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// virtio only: the smallest ramdisk, for the QEMU lab.
    Qemu,
    /// Common NIC and storage drivers for real servers.
    Server,
}

impl Profile {
    /// The profile's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Qemu => "qemu",
            Profile::Server => "server",
        }
    }
}
