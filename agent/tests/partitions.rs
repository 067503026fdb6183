//! Config drives and partition-image layouts on file-backed disks, checked by
//! reading the tables back with the `gpt` crate and by parsing the MBR.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ironclad_agent::disk::BlockDevice;
use ironclad_agent::image::checksum::Hasher;
use ironclad_agent::image::configdrive;
use ironclad_agent::image::partitions::{self, Role, TableKind, CONFIGDRIVE_PART, MIB};
use ironclad_agent::image::ImageWriter;
use ironclad_versioning::image_info::{ChecksumAlgorithm, ImageInfo};

fn disk_file(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(size).unwrap();
    p
}

fn device(path: &Path, size: u64) -> BlockDevice {
    BlockDevice {
        name: "/dev/sda".into(),
        path: path.to_owned(),
        size,
        model: String::new(),
        vendor: String::new(),
        serial: None,
        wwn: None,
        rotational: false,
    }
}

fn sha256(data: &[u8]) -> String {
    let mut h = Hasher::new(ChecksumAlgorithm::Sha256);
    h.update(data);
    h.finalize_hex()
}

/// Writes `image` to a fresh 256 MiB disk through the real pipeline (file:// URL).
async fn deploy(dir: &Path, image: &[u8]) -> (PathBuf, u64) {
    let img = dir.join("image.raw");
    std::fs::write(&img, image).unwrap();
    let size = 256 * MIB;
    let disk = disk_file(dir, "disk", size);
    let info = ImageInfo {
        id: "img".into(),
        urls: vec![format!("file://{}", img.display())],
        ..Default::default()
    };
    ImageWriter::new(reqwest::Client::new())
        .write_whole_disk(
            &info,
            ChecksumAlgorithm::Sha256,
            &sha256(image),
            &device(&disk, size),
            None,
        )
        .await
        .unwrap();
    (disk, size)
}

/// A fake ISO 9660 image: the primary volume descriptor with the given volume id.
fn iso(volume_id: &str) -> Vec<u8> {
    let mut v = vec![0u8; 0x8800];
    v[0x8000] = 1;
    v[0x8001..0x8006].copy_from_slice(b"CD001");
    let mut id = [b' '; 32];
    id[..volume_id.len()].copy_from_slice(volume_id.as_bytes());
    v[0x8028..0x8048].copy_from_slice(&id);
    v.extend((0..100_000u32).map(|i| (i % 251) as u8));
    v
}

fn gpt_image(size: u64, parts: &[(&str, u64)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = disk_file(dir.path(), "gpt.img", size);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    gpt::mbr::ProtectiveMBR::with_lb_size((size / 512 - 1) as u32)
        .overwrite_lba0(&mut f)
        .unwrap();
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .create_from_device(f, None)
        .unwrap();
    for (name, mib) in parts {
        disk.add_partition(
            name,
            mib * MIB,
            gpt::partition_types::LINUX_FS,
            0,
            Some(2048),
        )
        .unwrap();
    }
    disk.write().unwrap();
    std::fs::read(&p).unwrap()
}

#[tokio::test]
async fn configdrive_on_gpt_image_gets_a_partition_at_the_disk_end() {
    let dir = tempfile::tempdir().unwrap();
    let image = gpt_image(32 * MIB, &[("root", 20)]);
    let (disk, size) = deploy(dir.path(), &image).await;
    let drive = iso("config-2");
    let part = configdrive::write_whole_disk(&disk, size, &drive).unwrap();

    let g = gpt::GptConfig::new().writable(false).open(&disk).unwrap();
    // The backup header moved to the last sector of the (bigger) disk.
    assert_eq!(g.primary_header().unwrap().backup_lba, size / 512 - 1);
    assert!(g.backup_header().is_ok());
    let cd = g
        .partitions()
        .values()
        .find(|p| p.name == "config-2")
        .unwrap();
    assert_eq!((cd.last_lba + 1 - cd.first_lba) * 512, CONFIGDRIVE_PART);
    assert!(cd.last_lba <= g.header().last_usable);
    assert!(cd.first_lba * 512 >= size - CONFIGDRIVE_PART - 2 * MIB);
    assert_eq!(cd.first_lba % 2048, 0);
    assert_eq!(part.start, cd.first_lba * 512);
    let on_disk = std::fs::read(&disk).unwrap();
    assert_eq!(&on_disk[part.start as usize..][..drive.len()], &drive[..]);
    // The original partition is untouched.
    assert!(g.partitions().values().any(|p| p.name == "root"));

    // A second write reuses the config-2 partition (found by name and label).
    let again = configdrive::write_whole_disk(&disk, size, &iso("config-2")).unwrap();
    assert_eq!(again.start, part.start);
    let g = gpt::GptConfig::new().writable(false).open(&disk).unwrap();
    assert_eq!(g.partitions().values().filter(|p| p.is_used()).count(), 2);
}

fn mbr_image(size: u64, parts: &[(u32, u32)]) -> Vec<u8> {
    let mut img = vec![0u8; size as usize];
    img[440..444].copy_from_slice(&0xdead_beefu32.to_le_bytes());
    for (i, (lba, sectors)) in parts.iter().enumerate() {
        let e = &mut img[446 + 16 * i..462 + 16 * i];
        e[4] = 0x83;
        e[8..12].copy_from_slice(&lba.to_le_bytes());
        e[12..16].copy_from_slice(&sectors.to_le_bytes());
    }
    img[510] = 0x55;
    img[511] = 0xaa;
    img
}

#[tokio::test]
async fn configdrive_on_mbr_image_is_a_primary_in_the_last_64_mib() {
    let dir = tempfile::tempdir().unwrap();
    let image = mbr_image(8 * MIB, &[(2048, 8192)]);
    let (disk, size) = deploy(dir.path(), &image).await;
    let drive = iso("config-2");
    configdrive::write_whole_disk(&disk, size, &drive).unwrap();

    let f = std::fs::File::open(&disk).unwrap();
    let mut mbr = [0u8; 512];
    f.read_exact_at(&mut mbr, 0).unwrap();
    assert_eq!(&mbr[440..444], &0xdead_beefu32.to_le_bytes());
    let e = &mbr[462..478];
    assert_eq!(e[4], 0x0c);
    let lba = u64::from(u32::from_le_bytes(e[8..12].try_into().unwrap()));
    let len = u64::from(u32::from_le_bytes(e[12..16].try_into().unwrap()));
    assert_eq!(len * 512, CONFIGDRIVE_PART);
    assert_eq!((lba + len) * 512, size);
    let mut got = vec![0u8; drive.len()];
    f.read_exact_at(&mut got, lba * 512).unwrap();
    assert_eq!(got, drive);
}

#[tokio::test]
async fn configdrive_refused_when_four_primaries_exist() {
    let dir = tempfile::tempdir().unwrap();
    let image = mbr_image(
        8 * MIB,
        &[(2048, 2048), (4096, 2048), (6144, 2048), (8192, 2048)],
    );
    let (disk, size) = deploy(dir.path(), &image).await;
    let err = configdrive::write_whole_disk(&disk, size, &iso("config-2")).unwrap_err();
    assert!(err.to_string().contains("4 primary partitions"), "{err}");
}

#[test]
fn partition_image_layout_uefi_gpt_and_msdos() {
    let dir = tempfile::tempdir().unwrap();
    let size = 2048 * MIB;
    let disk = disk_file(dir.path(), "disk", size);
    let mut plan = partitions::plan_layout(
        TableKind::Gpt,
        true,
        &[
            (Role::Ephemeral, 100),
            (Role::Swap, 64),
            (Role::ConfigDrive, 1),
        ],
        1000,
        size,
    )
    .unwrap();
    let roles: Vec<Role> = plan.iter().map(|p| p.role).collect();
    assert_eq!(
        roles,
        [
            Role::Esp,
            Role::Ephemeral,
            Role::Swap,
            Role::ConfigDrive,
            Role::Root
        ]
    );
    assert_eq!(plan[0].start, MIB);
    assert_eq!(plan[0].size, 550 * MIB);
    partitions::write_layout(&disk, TableKind::Gpt, true, &mut plan).unwrap();
    let g = gpt::GptConfig::new().writable(false).open(&disk).unwrap();
    let esp = &g.partitions()[&1];
    assert_eq!(esp.part_type_guid, gpt::partition_types::EFI);
    assert_eq!(esp.part_guid.to_string(), plan[0].part_uuid);
    assert_eq!(g.partitions()[&5].first_lba * 512, plan[4].start);
    assert_eq!(g.partitions()[&4].name, "config-2");

    // BIOS + gpt: a 1 MiB BIOS boot partition first.
    let bios = partitions::plan_layout(TableKind::Gpt, false, &[], 100, size).unwrap();
    assert_eq!(bios[0].role, Role::BiosBoot);
    assert_eq!(bios[0].size, MIB);

    // msdos: root bootable, at most 4 primaries, too big refused.
    let mut plan =
        partitions::plan_layout(TableKind::Msdos, false, &[(Role::Swap, 64)], 500, size).unwrap();
    partitions::write_layout(&disk, TableKind::Msdos, false, &mut plan).unwrap();
    let f = std::fs::File::open(&disk).unwrap();
    let (entries, sig) = partitions::read_mbr(&f).unwrap().unwrap();
    assert_eq!(entries[0].kind, 0x82);
    assert_eq!((entries[1].kind, entries[1].boot), (0x83, 0x80));
    assert_eq!(plan[1].part_uuid, format!("{sig:08x}-02"));
    assert!(partitions::plan_layout(TableKind::Msdos, false, &[], 5000, size).is_err());
    assert!(partitions::plan_layout(
        TableKind::Msdos,
        true,
        &[
            (Role::Ephemeral, 1),
            (Role::Swap, 1),
            (Role::ConfigDrive, 1)
        ],
        10,
        size
    )
    .is_err());
}
