//! The `config-2` config drive (ISO 9660 or VFAT) that virtual-media boots
//! carry: found by its volume label, mounted read-only, and its
//! `openstack/latest/network_data.json` read.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::plan::{self, NetworkPlan, PlanError};

/// The label OpenStack config drives carry.
pub const LABEL: &str = "config-2";
/// Where the config drive is mounted.
pub const MOUNT_POINT: &str = "/run/config-2";
/// Offset of the ISO 9660 primary volume descriptor.
const ISO_PVD: usize = 32768;
/// Bytes needed to see both kinds of labels.
pub const PROBE_LEN: usize = ISO_PVD + 72;

/// The file system type and volume label in a device's first [`PROBE_LEN`] bytes.
pub fn detect_label(head: &[u8]) -> Option<(&'static str, String)> {
    let text = |range: std::ops::Range<usize>| {
        head.get(range)
            .map(|b| String::from_utf8_lossy(b).trim_end().to_owned())
    };
    if head.get(ISO_PVD + 1..ISO_PVD + 6) == Some(b"CD001") {
        return Some(("iso9660", text(ISO_PVD + 40..ISO_PVD + 72)?));
    }
    if head.get(510..512) == Some(&[0x55, 0xaa]) {
        // FAT32 extended boot record: "FAT32   " at 82, label at 71.
        if head.get(82..87) == Some(b"FAT32") {
            return Some(("vfat", text(71..82)?));
        }
        // FAT12/16: "FAT1" at 54, label at 43.
        if head.get(54..57) == Some(b"FAT") {
            return Some(("vfat", text(43..54)?));
        }
    }
    None
}

fn probe(device: &Path) -> Option<(&'static str, String)> {
    let mut file = std::fs::File::open(device).ok()?;
    let mut head = vec![0u8; PROBE_LEN];
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_exact(&mut head).ok()?;
    detect_label(&head)
}

/// Finds, mounts and reads the config drive's `network_data.json`; `None` when
/// there is no config drive or it has no network data.
pub fn network_plan() -> Option<Result<NetworkPlan, PlanError>> {
    let entries = std::fs::read_dir("/sys/class/block").ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("loop") || name.starts_with("ram") {
            continue;
        }
        let device = Path::new("/dev").join(&name);
        let Some((fstype, label)) = probe(&device) else {
            continue;
        };
        if !label.eq_ignore_ascii_case(LABEL) {
            continue;
        }
        tracing::info!("config drive found on {} ({fstype})", device.display());
        let _ = std::fs::create_dir_all(MOUNT_POINT);
        let mounted = nix::mount::mount(
            Some(&device),
            MOUNT_POINT,
            Some(fstype),
            nix::mount::MsFlags::MS_RDONLY | nix::mount::MsFlags::MS_NODEV,
            None::<&str>,
        );
        if let Err(e) = mounted {
            if e != nix::errno::Errno::EBUSY {
                tracing::warn!(
                    "mounting the config drive {}: {e} (is the {fstype} module in the ramdisk?)",
                    device.display()
                );
                continue;
            }
        }
        let path = Path::new(MOUNT_POINT).join("openstack/latest/network_data.json");
        return match std::fs::read_to_string(&path) {
            Ok(json) => Some(plan::from_network_data(&json)),
            Err(e) => {
                tracing::info!("config drive has no usable {}: {e}", path.display());
                None
            }
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_and_fat_labels_are_found() {
        let mut iso = vec![0u8; PROBE_LEN];
        iso[ISO_PVD] = 1;
        iso[ISO_PVD + 1..ISO_PVD + 6].copy_from_slice(b"CD001");
        iso[ISO_PVD + 40..ISO_PVD + 72].copy_from_slice(format!("{:<32}", "config-2").as_bytes());
        assert_eq!(detect_label(&iso), Some(("iso9660", "config-2".to_owned())));

        let mut fat = vec![0u8; PROBE_LEN];
        fat[510] = 0x55;
        fat[511] = 0xaa;
        fat[82..90].copy_from_slice(b"FAT32   ");
        fat[71..82].copy_from_slice(b"CONFIG-2   ");
        assert_eq!(detect_label(&fat), Some(("vfat", "CONFIG-2".to_owned())));

        assert_eq!(detect_label(&vec![0u8; PROBE_LEN]), None);
    }
}
