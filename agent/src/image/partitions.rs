//! Partition tables: reading GPT (with the `gpt` crate) and MBR tables,
//! adding the config-drive partition at the end of a whole-disk image, laying
//! out partition images (IPA's `work_on_disk` order), and probing the few
//! filesystem labels and UUIDs the agent reports.
//!
//! Sizes are in bytes; sectors are 512 bytes (4Kn disks are not handled yet).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes per sector.
pub const SECTOR: u64 = 512;
/// Partitions start and end on MiB boundaries.
pub const MIB: u64 = 1024 * 1024;
/// Size of a config-drive partition added to a whole-disk image.
pub const CONFIGDRIVE_PART: u64 = 64 * MIB;
/// Largest disk an MBR can address.
const MBR_LIMIT: u64 = (1u64 << 32) * SECTOR;

/// Why a partition table could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// An I/O error.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The disk.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The GPT library refused.
    #[error("the GPT of {path}: {message}")]
    Gpt {
        /// The disk.
        path: String,
        /// What it said.
        message: String,
    },
    /// The change cannot be made.
    #[error("{0}")]
    Refused(String),
}

/// The kind of partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// GUID partition table.
    Gpt,
    /// DOS/MBR partition table (`msdos` in parted's words).
    Msdos,
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// Partition number (1-based).
    pub number: u32,
    /// Offset in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// GPT partition name (empty on MBR).
    pub name: String,
    /// PARTUUID: the GPT partition GUID, or `SSSSSSSS-NN` from the MBR signature.
    pub part_uuid: String,
    /// GPT type GUID (upper case) or MBR type byte as two hex digits.
    pub type_id: String,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PartitionError {
    let path = path.display().to_string();
    move |source| PartitionError::Io { op, path, source }
}

fn gpt_err(path: &Path) -> impl FnOnce(gpt::GptError) -> PartitionError {
    let path = path.display().to_string();
    move |e| PartitionError::Gpt {
        path,
        message: e.to_string(),
    }
}

/// An MBR partition entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MbrEntry {
    /// Boot flag (0x80 when active).
    pub boot: u8,
    /// Partition type byte.
    pub kind: u8,
    /// First sector.
    pub lba: u32,
    /// Length in sectors.
    pub sectors: u32,
}

/// Reads sector 0: the MBR's four primary entries and disk signature, if it has the 0x55AA mark.
pub fn read_mbr(file: &File) -> std::io::Result<Option<([MbrEntry; 4], u32)>> {
    let mut s = [0u8; 512];
    file.read_exact_at(&mut s, 0)?;
    if s[510..512] != [0x55, 0xaa] {
        return Ok(None);
    }
    let mut entries = [MbrEntry::default(); 4];
    for (i, e) in entries.iter_mut().enumerate() {
        let b = &s[446 + 16 * i..446 + 16 * (i + 1)];
        *e = MbrEntry {
            boot: b[0],
            kind: b[4],
            lba: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            sectors: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        };
    }
    let sig = u32::from_le_bytes([s[440], s[441], s[442], s[443]]);
    Ok(Some((entries, sig)))
}

/// Writes the four MBR entries, the signature and the 0x55AA mark (boot code is kept).
pub fn write_mbr(file: &File, entries: &[MbrEntry; 4], signature: u32) -> std::io::Result<()> {
    let mut s = [0u8; 512];
    file.read_exact_at(&mut s, 0)?;
    s[440..444].copy_from_slice(&signature.to_le_bytes());
    s[444..446].fill(0);
    for (i, e) in entries.iter().enumerate() {
        let b = &mut s[446 + 16 * i..446 + 16 * (i + 1)];
        b.fill(0);
        if e.sectors == 0 {
            continue;
        }
        b[0] = e.boot;
        // CHS fields: "beyond 1024 cylinders" (0xfe 0xff 0xff), as modern tools write.
        b[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
        b[4] = e.kind;
        b[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
        b[8..12].copy_from_slice(&e.lba.to_le_bytes());
        b[12..16].copy_from_slice(&e.sectors.to_le_bytes());
    }
    s[510] = 0x55;
    s[511] = 0xaa;
    file.write_all_at(&s, 0)
}

fn has_gpt(file: &File) -> std::io::Result<bool> {
    let mut sig = [0u8; 8];
    file.read_exact_at(&mut sig, SECTOR)?;
    Ok(&sig == b"EFI PART")
}

fn gpt_parts(disk: &gpt::GptDisk<File>) -> Vec<PartInfo> {
    disk.partitions()
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(n, p)| PartInfo {
            number: *n,
            start: p.first_lba * SECTOR,
            size: (p.last_lba + 1 - p.first_lba) * SECTOR,
            name: p.name.clone(),
            part_uuid: p.part_guid.to_string(),
            type_id: p.part_type_guid.guid.to_string().to_uppercase(),
        })
        .collect()
}

/// Reads the partition table of `path`: `None` when there is none.
pub fn read_table(path: &Path) -> Result<Option<(TableKind, Vec<PartInfo>)>, PartitionError> {
    let file = File::open(path).map_err(io("opening", path))?;
    if has_gpt(&file).map_err(io("reading", path))? {
        let disk = gpt::GptConfig::new()
            .writable(false)
            .open(path)
            .map_err(gpt_err(path))?;
        return Ok(Some((TableKind::Gpt, gpt_parts(&disk))));
    }
    let Some((entries, sig)) = read_mbr(&file).map_err(io("reading", path))? else {
        return Ok(None);
    };
    let parts = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.sectors > 0 && e.kind != 0)
        .map(|(i, e)| PartInfo {
            number: i as u32 + 1,
            start: u64::from(e.lba) * SECTOR,
            size: u64::from(e.sectors) * SECTOR,
            name: String::new(),
            part_uuid: format!("{sig:08x}-{:02x}", i + 1),
            type_id: format!("{:02X}", e.kind),
        })
        .collect();
    Ok(Some((TableKind::Msdos, parts)))
}

/// The filesystem label at `offset` (ISO 9660 volume id, FAT, ext2/3/4), if any.
pub fn fs_label(file: &File, offset: u64) -> Option<String> {
    let read = |at: u64, len: usize| {
        let mut b = vec![0u8; len];
        file.read_exact_at(&mut b, offset + at).ok().map(|()| b)
    };
    let text = |b: &[u8]| {
        let s = String::from_utf8_lossy(b)
            .trim_end_matches(['\0', ' '])
            .to_owned();
        (!s.is_empty()).then_some(s)
    };
    if let Some(pvd) = read(0x8000, 72) {
        if &pvd[1..6] == b"CD001" {
            return text(&pvd[40..72]);
        }
    }
    let boot = read(0, 512)?;
    if boot[510..512] == [0x55, 0xaa] {
        if &boot[82..87] == b"FAT32" {
            return text(&boot[71..82]);
        }
        if &boot[54..57] == b"FAT" {
            return text(&boot[43..54]);
        }
    }
    let sb = read(1024, 256)?;
    if sb[56..58] == [0x53, 0xef] {
        return text(&sb[120..136]);
    }
    None
}

/// The filesystem UUID at `offset` (ext2/3/4, XFS, btrfs, FAT serial), if any.
pub fn fs_uuid(file: &File, offset: u64) -> Option<String> {
    let read = |at: u64, len: usize| {
        let mut b = vec![0u8; len];
        file.read_exact_at(&mut b, offset + at).ok().map(|()| b)
    };
    let uuid = |b: &[u8]| {
        let bytes: [u8; 16] = b.try_into().ok()?;
        let u = uuid::Uuid::from_bytes(bytes);
        (!u.is_nil()).then(|| u.to_string())
    };
    if let Some(sb) = read(1024, 256) {
        if sb[56..58] == [0x53, 0xef] {
            return uuid(&sb[104..120]);
        }
    }
    if let Some(sb) = read(0, 512) {
        if &sb[0..4] == b"XFSB" {
            return uuid(&sb[32..48]);
        }
        if sb[510..512] == [0x55, 0xaa] {
            let serial = if &sb[82..87] == b"FAT32" {
                &sb[67..71]
            } else if &sb[54..57] == b"FAT" {
                &sb[39..43]
            } else {
                &[][..]
            };
            if serial.len() == 4 {
                return Some(format!(
                    "{:02X}{:02X}-{:02X}{:02X}",
                    serial[3], serial[2], serial[1], serial[0]
                ));
            }
        }
    }
    if let Some(sb) = read(0x10000, 0x48) {
        if &sb[0x40..0x48] == b"_BHRfS_M" {
            return uuid(&sb[0x20..0x30]);
        }
    }
    None
}

/// Finds a partition whose GPT name or filesystem label is `config-2`.
pub fn find_configdrive(path: &Path) -> Result<Option<PartInfo>, PartitionError> {
    let Some((_, parts)) = read_table(path)? else {
        return Ok(None);
    };
    let file = File::open(path).map_err(io("opening", path))?;
    Ok(parts.into_iter().find(|p| {
        p.name.eq_ignore_ascii_case("config-2")
            || fs_label(&file, p.start).is_some_and(|l| l.eq_ignore_ascii_case("config-2"))
    }))
}

/// Moves a GPT's backup header (and last usable sector) to the end of the
/// disk, as `sgdisk -e` does after an image smaller than the disk was written.
pub fn relocate_gpt_backup(path: &Path) -> Result<(), PartitionError> {
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .only_valid_headers(false)
        .open(path)
        .map_err(gpt_err(path))?;
    let parts = disk.take_partitions();
    // Re-setting the partitions rebuilds both headers from the device's size.
    disk.update_partitions(parts).map_err(gpt_err(path))?;
    disk.write().map_err(gpt_err(path))?;
    Ok(())
}

/// Adds a [`CONFIGDRIVE_PART`] partition at the end of the disk (after fixing
/// a GPT's backup header) and returns it.
pub fn add_configdrive_partition(path: &Path, disk_size: u64) -> Result<PartInfo, PartitionError> {
    match read_table(path)? {
        Some((TableKind::Gpt, _)) => {
            relocate_gpt_backup(path)?;
            let mut disk = gpt::GptConfig::new()
                .writable(true)
                .open(path)
                .map_err(gpt_err(path))?;
            let last_usable = disk.header().last_usable;
            let len = CONFIGDRIVE_PART / SECTOR;
            let align = MIB / SECTOR;
            let first = (last_usable + 1).saturating_sub(len) / align * align;
            let clash = disk
                .partitions()
                .values()
                .any(|p| p.is_used() && p.last_lba >= first);
            if clash || first == 0 {
                return Err(PartitionError::Refused(format!(
                    "no free space for a 64 MiB config drive partition at the end of {}; leave room at the end of the image",
                    path.display()
                )));
            }
            let id = disk.find_next_partition_id().ok_or_else(|| {
                PartitionError::Refused(format!(
                    "the GPT of {} has no free partition entry for the config drive",
                    path.display()
                ))
            })?;
            disk.add_partition_at(
                "config-2",
                id,
                first,
                len,
                gpt::partition_types::LINUX_FS,
                0,
            )
            .map_err(gpt_err(path))?;
            let parts = gpt_parts(&disk);
            disk.write().map_err(gpt_err(path))?;
            parts.into_iter().find(|p| p.number == id).ok_or_else(|| {
                PartitionError::Refused("the new config drive partition vanished".into())
            })
        }
        Some((TableKind::Msdos, _)) => {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(io("opening", path))?;
            let (mut entries, sig) = read_mbr(&file)
                .map_err(io("reading", path))?
                .ok_or_else(|| PartitionError::Refused("the MBR disappeared".into()))?;
            let slot = entries.iter().position(|e| e.sectors == 0 || e.kind == 0);
            let Some(slot) = slot else {
                return Err(PartitionError::Refused(format!(
                    "the MBR of {} already has 4 primary partitions; no config drive partition can be added. Use a GPT image or leave a primary slot free",
                    path.display()
                )));
            };
            // On disks past the MBR limit, just below 2 TiB (as IPA does).
            let end = disk_size.min(MBR_LIMIT) / MIB * MIB;
            let start = end.saturating_sub(CONFIGDRIVE_PART);
            let clash = entries.iter().any(|e| {
                e.sectors > 0 && u64::from(e.lba + e.sectors) * SECTOR > start
            });
            if clash || start == 0 {
                return Err(PartitionError::Refused(format!(
                    "no free space for a 64 MiB config drive partition at the end of {}",
                    path.display()
                )));
            }
            entries[slot] = MbrEntry {
                boot: 0,
                kind: 0x0c,
                lba: (start / SECTOR) as u32,
                sectors: (CONFIGDRIVE_PART / SECTOR) as u32,
            };
            write_mbr(&file, &entries, sig).map_err(io("writing the MBR of", path))?;
            file.sync_all().map_err(io("syncing", path))?;
            Ok(PartInfo {
                number: slot as u32 + 1,
                start,
                size: CONFIGDRIVE_PART,
                name: String::new(),
                part_uuid: format!("{sig:08x}-{:02x}", slot + 1),
                type_id: "0C".into(),
            })
        }
        None => Err(PartitionError::Refused(format!(
            "{} has no partition table after the image was written; a config drive needs a GPT or MBR image",
            path.display()
        ))),
    }
}

/// What a partition of a partition-image layout is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// EFI system partition (UEFI).
    Esp,
    /// BIOS boot partition (GPT + BIOS).
    BiosBoot,
    /// Ephemeral partition.
    Ephemeral,
    /// Swap.
    Swap,
    /// Config drive.
    ConfigDrive,
    /// Root (last).
    Root,
}

impl Role {
    /// The key in `get_partition_uuids`' `partitions` map.
    pub fn key(self) -> &'static str {
        match self {
            Self::Esp => "efi system partition",
            Self::BiosBoot => "BIOS Boot partition",
            Self::Ephemeral => "ephemeral",
            Self::Swap => "swap",
            Self::ConfigDrive => "configdrive",
            Self::Root => "root",
        }
    }
}

/// A planned partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Its role.
    pub role: Role,
    /// Its number (1-based, in layout order).
    pub number: u32,
    /// Offset in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// GPT partition GUID, or the MBR PARTUUID once written.
    pub part_uuid: String,
}

/// Plans IPA's partition-image layout from 1 MiB on: sizes in MiB, zero
/// sizes skipped, root last.
pub fn plan_layout(
    label: TableKind,
    uefi: bool,
    sizes_mib: &[(Role, u64)],
    root_mib: u64,
    disk_size: u64,
) -> Result<Vec<Planned>, PartitionError> {
    let mut out = Vec::new();
    let mut at = MIB;
    let mut push = |role, mib: u64, at: &mut u64| {
        let number = out.len() as u32 + 1;
        out.push(Planned {
            role,
            number,
            start: *at,
            size: mib * MIB,
            part_uuid: uuid::Uuid::new_v4().to_string(),
        });
        *at += mib * MIB;
    };
    if uefi {
        push(Role::Esp, 550, &mut at);
    } else if label == TableKind::Gpt {
        push(Role::BiosBoot, 1, &mut at);
    }
    for (role, mib) in sizes_mib {
        if *mib > 0 {
            push(*role, *mib, &mut at);
        }
    }
    if root_mib == 0 {
        return Err(PartitionError::Refused(
            "root_mb (or root_gb) must be given and above zero for a partition image".into(),
        ));
    }
    push(Role::Root, root_mib, &mut at);
    // GPT keeps its backup in the last sectors: leave the last MiB free.
    let limit = disk_size.saturating_sub(MIB) / MIB * MIB;
    if at > limit || (label == TableKind::Msdos && at > MBR_LIMIT) {
        return Err(PartitionError::Refused(format!(
            "the partition layout needs {} MiB but the disk has {} MiB; lower root_mb/swap_mb/ephemeral_mb or choose a bigger disk",
            at / MIB + 1,
            disk_size / MIB
        )));
    }
    if label == TableKind::Msdos && out.len() > 4 {
        return Err(PartitionError::Refused(
            "an msdos label holds 4 primary partitions but this layout needs more; use disk_label gpt".into(),
        ));
    }
    Ok(out)
}

/// Writes the planned partition table (GPT with a protective MBR, or MBR).
pub fn write_layout(
    path: &Path,
    label: TableKind,
    uefi: bool,
    parts: &mut [Planned],
) -> Result<(), PartitionError> {
    use gpt::partition_types as t;
    match label {
        TableKind::Gpt => {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(io("opening", path))?;
            let size = std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0))
                .map_err(io("sizing", path))?;
            let sectors = u32::try_from(size / SECTOR - 1).unwrap_or(u32::MAX);
            gpt::mbr::ProtectiveMBR::with_lb_size(sectors)
                .overwrite_lba0(&mut file)
                .map_err(|e| PartitionError::Gpt {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
            let mut disk = gpt::GptConfig::new()
                .writable(true)
                .create_from_device(file, None)
                .map_err(gpt_err(path))?;
            for p in parts.iter() {
                let (name, kind) = match p.role {
                    Role::Esp => ("efi-part", t::EFI),
                    Role::BiosBoot => ("bios-boot", t::BIOS),
                    Role::Ephemeral => ("ephemeral0", t::LINUX_FS),
                    Role::Swap => ("swap1", t::LINUX_SWAP),
                    Role::ConfigDrive => ("config-2", t::LINUX_FS),
                    Role::Root => ("root", t::LINUX_FS),
                };
                disk.add_partition_at(name, p.number, p.start / SECTOR, p.size / SECTOR, kind, 0)
                    .map_err(gpt_err(path))?;
            }
            // Give each planned partition the GUID the library chose.
            let written = gpt_parts(&disk);
            for p in parts.iter_mut() {
                if let Some(w) = written.iter().find(|w| w.number == p.number) {
                    p.part_uuid.clone_from(&w.part_uuid);
                }
            }
            let file = disk.write().map_err(gpt_err(path))?;
            file.sync_all().map_err(io("syncing", path))?;
        }
        TableKind::Msdos => {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(io("opening", path))?;
            let signature: u32 = rand::random::<u32>() | 1;
            let mut entries = [MbrEntry::default(); 4];
            for (e, p) in entries.iter_mut().zip(parts.iter_mut()) {
                let kind = match p.role {
                    Role::Swap => 0x82,
                    Role::ConfigDrive => 0x0c,
                    Role::Esp => 0xef,
                    _ => 0x83,
                };
                *e = MbrEntry {
                    boot: if p.role == Role::Root && !uefi {
                        0x80
                    } else {
                        0
                    },
                    kind,
                    lba: (p.start / SECTOR) as u32,
                    sectors: (p.size / SECTOR) as u32,
                };
                p.part_uuid = format!("{signature:08x}-{:02x}", p.number);
            }
            write_mbr(&file, &entries, signature).map_err(io("writing the MBR of", path))?;
            file.sync_all().map_err(io("syncing", path))?;
        }
    }
    Ok(())
}

/// The device name of partition `n` of disk `disk` (`/dev/sda` → `/dev/sda1`,
/// `/dev/nvme0n1` → `/dev/nvme0n1p1`).
pub fn partition_device(disk: &str, n: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{n}")
    } else {
        format!("{disk}{n}")
    }
}
