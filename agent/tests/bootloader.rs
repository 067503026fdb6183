//! `image.install_bootloader` and partition-image deploys through the real
//! command code, on a file-backed disk. The UEFI variables live in a temporary
//! directory standing in for `/sys/firmware/efi/efivars` (efivarfs cannot be
//! mounted by an unprivileged test, and the host's NVRAM must not be touched):
//! it has the same file format (4-byte attributes + data, `Name-GUID` names).

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use ironclad_agent::commands::{image, standby, AgentContext};
use ironclad_agent::disk::FileBlockDevices;
use ironclad_agent::image::bootloader::{load_option, option_label, EspLocation, EFI_GLOBAL};
use ironclad_agent::image::checksum::Hasher;
use ironclad_agent::image::partitions::MIB;
use ironclad_agent::image::ImageWriter;
use ironclad_agent::inventory::NicSource;
use ironclad_agent::logs::LogBuffer;
use ironclad_agent::power::HostPower;
use ironclad_versioning::agent_api::AgentErrorKind;
use ironclad_versioning::image_info::{ChecksumAlgorithm, ImageInfo};
use serde_json::{json, Map, Value};

fn context(disk: &Path, sysroot: &Path) -> Arc<AgentContext> {
    Arc::new(AgentContext {
        disks: Arc::new(FileBlockDevices::new(vec![disk.to_owned()])),
        power: Arc::new(HostPower::new()),
        node: None,
        lookup_config: Default::default(),
        logs: LogBuffer::new(64 * 1024),
        sysroot: sysroot.to_owned(),
        nics: NicSource::System,
        image_writer: ImageWriter::new(reqwest::Client::new()),
        written_device: Mutex::new(None),
    })
}

fn var(efivars: &Path, name: &str) -> PathBuf {
    efivars.join(format!("{name}-{EFI_GLOBAL}"))
}

fn put_var(efivars: &Path, name: &str, data: &[u8]) {
    let mut v = 7u32.to_le_bytes().to_vec();
    v.extend_from_slice(data);
    std::fs::write(var(efivars, name), v).unwrap();
}

/// A root filesystem image: an ext4-like superblock (magic and UUID) and data.
fn root_image(uuid: uuid::Uuid) -> Vec<u8> {
    let mut img: Vec<u8> = (0..(6 * MIB) as u32).map(|i| (i % 249) as u8 + 1).collect();
    img[1024 + 56..1024 + 58].copy_from_slice(&[0x53, 0xef]);
    img[1024 + 104..1024 + 120].copy_from_slice(uuid.as_bytes());
    img
}

/// Deploys a UEFI partition image with a config drive; returns the context.
async fn deploy_partition_image(
    dir: &Path,
    sysroot: &Path,
) -> (Arc<AgentContext>, PathBuf, String) {
    let disk = dir.join("disk");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(5 * 1024 * MIB) // sparse; the root device must be at least 4 GiB
        .unwrap();
    let fs_uuid = uuid::Uuid::new_v4();
    let img = root_image(fs_uuid);
    let img_path = dir.join("root.img");
    std::fs::write(&img_path, &img).unwrap();
    let mut h = Hasher::new(ChecksumAlgorithm::Sha256);
    h.update(&img);
    let iso = b"config drive ISO bytes".repeat(1000);
    let info: ImageInfo = serde_json::from_value(json!({
        "id": "part",
        "urls": [format!("file://{}", img_path.display())],
        "os_hash_algo": "sha256",
        "os_hash_value": h.finalize_hex(),
        "image_type": "partition",
        "root_mb": 100,
        "swap_mb": 16,
        "ephemeral_mb": 0,
        "deploy_boot_mode": "uefi",
    }))
    .unwrap();
    let ctx = context(&disk, sysroot);
    let cd = json!(base64::engine::general_purpose::STANDARD.encode(&iso));
    let (info, expected) =
        standby::validate_image(&ctx, &serde_json::to_value(&info).unwrap(), &cd).unwrap();
    let message = standby::write_image(&ctx, &info, &expected).await.unwrap();
    assert!(
        message.contains(&format!("root_uuid={fs_uuid}")),
        "{message}"
    );
    assert!(message.contains("efi_system_partition_uuid="), "{message}");

    let layout = ctx.image_writer.last_layout().unwrap();
    assert_eq!(layout["root uuid"], json!(fs_uuid.to_string()));
    let parts = layout["partitions"].as_object().unwrap();
    assert_eq!(
        parts["efi system partition"],
        json!(format!("{}1", disk.display()))
    );
    assert_eq!(parts["root"], json!(format!("{}4", disk.display())));
    assert!(parts.contains_key("swap") && parts.contains_key("configdrive"));
    let g = gpt::GptConfig::new().writable(false).open(&disk).unwrap();
    let esp = &g.partitions()[&1];
    assert_eq!(esp.part_type_guid, gpt::partition_types::EFI);
    assert_eq!(
        layout["efi system partition uuid"],
        json!(esp.part_guid.to_string())
    );
    // ESP 550 MiB, swap 16, configdrive 1, root 100 (last).
    let root = &g.partitions()[&4];
    assert_eq!(root.first_lba * 512, (1 + 550 + 16 + 1) * MIB);
    let f = std::fs::File::open(&disk).unwrap();
    let mut got = vec![0u8; img.len()];
    f.read_exact_at(&mut got, root.first_lba * 512).unwrap();
    assert_eq!(got, img);
    let mut got = vec![0u8; iso.len()];
    f.read_exact_at(&mut got, g.partitions()[&3].first_lba * 512)
        .unwrap();
    assert_eq!(got, iso);
    let sig = fs_uuid.to_string();
    (ctx, disk, sig)
}

#[tokio::test]
async fn uefi_partition_image_then_boot_entry_in_efivars() {
    let dir = tempfile::tempdir().unwrap();
    let sysroot = dir.path().join("root");
    let efivars = sysroot.join("sys/firmware/efi/efivars");
    std::fs::create_dir_all(&efivars).unwrap();
    let (ctx, disk, root_uuid) = deploy_partition_image(dir.path(), &sysroot).await;

    // An old entry with our label (replaced) and another one (kept, second).
    let old = EspLocation {
        number: 9,
        start_lba: 1,
        size_lba: 1,
        part_guid: uuid::Uuid::nil(),
        loader: r"\old.efi".into(),
    };
    put_var(&efivars, "Boot0000", &load_option("ironic1", &old));
    put_var(&efivars, "Boot0001", &load_option("other OS", &old));
    put_var(&efivars, "BootOrder", &[1, 0, 0, 0]);

    let mut params = Map::new();
    params.insert("root_uuid".into(), json!(root_uuid));
    params.insert("target_boot_mode".into(), json!("uefi"));
    assert_eq!(
        image::install_bootloader(&ctx, &params).unwrap(),
        Value::Null
    );

    let data = std::fs::read(var(&efivars, "Boot0000")).unwrap();
    assert_eq!(&data[..4], &7u32.to_le_bytes());
    let opt = &data[4..];
    assert_eq!(&opt[..4], &1u32.to_le_bytes(), "LOAD_OPTION_ACTIVE");
    assert_eq!(option_label(opt).as_deref(), Some("ironic1"));
    let path_len = u16::from_le_bytes([opt[4], opt[5]]) as usize;
    let path = &opt[opt.len() - path_len..];
    let g = gpt::GptConfig::new().writable(false).open(&disk).unwrap();
    let esp = &g.partitions()[&1];
    // HD(1, GPT, <guid>, start, size)
    assert_eq!(&path[..4], &[4, 1, 42, 0]);
    assert_eq!(u32::from_le_bytes(path[4..8].try_into().unwrap()), 1);
    assert_eq!(
        u64::from_le_bytes(path[8..16].try_into().unwrap()),
        esp.first_lba
    );
    assert_eq!(
        u64::from_le_bytes(path[16..24].try_into().unwrap()),
        esp.last_lba + 1 - esp.first_lba
    );
    assert_eq!(&path[24..40], &esp.part_guid.to_bytes_le());
    assert_eq!(&path[40..42], &[2, 2]);
    // File(\EFI\BOOT\BOOTX64.EFI), then the end node.
    assert_eq!(&path[42..44], &[4, 4]);
    let name: Vec<u16> = path[46..path.len() - 6]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(String::from_utf16(&name).unwrap(), r"\EFI\BOOT\BOOTX64.EFI");
    assert_eq!(&path[path.len() - 4..], &[0x7f, 0xff, 4, 0]);
    // The new entry first, the other kept.
    let order = std::fs::read(var(&efivars, "BootOrder")).unwrap();
    assert_eq!(&order[4..], &[0, 0, 1, 0]);
    assert!(
        option_label(&std::fs::read(var(&efivars, "Boot0001")).unwrap()[4..])
            .is_some_and(|l| l == "other OS")
    );

    // BIOS: partition images are refused unless enabled (or ignored).
    params.insert("target_boot_mode".into(), json!("bios"));
    let err = image::install_bootloader(&ctx, &params).unwrap_err();
    assert_eq!(err.error_type, AgentErrorKind::InvalidImage.type_name());
    assert!(err.details.contains("enable_bios_bootloader_install"));
    params.insert("ignore_bootloader_failure".into(), json!(true));
    assert!(image::install_bootloader(&ctx, &params).is_ok());
    // Whole-disk images (MBR-signature root uuid) need nothing.
    params.insert("root_uuid".into(), json!("0x12345678"));
    params.remove("ignore_bootloader_failure");
    assert!(image::install_bootloader(&ctx, &params).is_ok());
}

#[tokio::test]
async fn uefi_without_efivars_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(5 * 1024 * MIB)
        .unwrap();
    let ctx = context(&disk, dir.path());
    let mut params = Map::new();
    params.insert("target_boot_mode".into(), json!("uefi"));
    let err = image::install_bootloader(&ctx, &params).unwrap_err();
    assert!(
        err.details.contains("did not boot in UEFI mode"),
        "{}",
        err.details
    );
}
