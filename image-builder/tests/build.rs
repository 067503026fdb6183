//! Builds real ramdisks from Debian's kernel package (fetched with apt-get into the
//! package cache, ~27 MB once) and checks what comes out.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::io::Read;
use std::path::{Path, PathBuf};

use ironclad_image_builder::ramdisk::{INITRAMFS_FILE, ISO_FILE, KERNEL_FILE, MANIFEST_FILE};
use ironclad_image_builder::{build, BuildOptions, Profile};

fn cache() -> PathBuf {
    std::env::var_os("IRONCLAD_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ironclad/packages"))
        })
        .expect("HOME or IRONCLAD_CACHE")
}

/// A small file stands in for the agent: the builder copies `/init` byte for byte
/// and never runs it (the real static agent is booted by `tests/tests/ramdisk_boot.rs`).
fn agent() -> PathBuf {
    let path = std::env::temp_dir().join(format!("ironclad-agent-stand-in-{}", std::process::id()));
    if !path.is_file() {
        let bytes: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, bytes).unwrap();
    }
    path
}

fn options(output: &Path, iso: bool, config_drive: Option<PathBuf>) -> BuildOptions {
    BuildOptions {
        agent: agent(),
        profile: Profile::Qemu,
        output: output.to_path_buf(),
        kernel_package: None,
        kernel_tree: None,
        firmware_dirs: Vec::new(),
        iso,
        config_drive,
        cmdline: "console=ttyS0".into(),
        cache: cache(),
    }
}

/// Paths and contents of the regular files in a zstd-compressed newc archive.
fn read_initramfs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let compressed = std::fs::read(path).unwrap();
    let cpio = zstd::stream::decode_all(&compressed[..]).unwrap();
    let mut files = Vec::new();
    let mut cursor = std::io::Cursor::new(cpio);
    loop {
        let mut reader = cpio::NewcReader::new(cursor).unwrap();
        if reader.entry().is_trailer() {
            break;
        }
        let name = reader.entry().name().to_owned();
        let mut data = Vec::new();
        reader.read_to_end(&mut data).unwrap();
        files.push((name, data));
        cursor = reader.finish().unwrap();
    }
    files
}

#[test]
fn qemu_profile_is_small_complete_and_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("a");
    let second = dir.path().join("b");
    let manifest = build(&options(&first, true, None)).unwrap();
    build(&options(&second, true, None)).unwrap();

    for file in [KERNEL_FILE, INITRAMFS_FILE, ISO_FILE, MANIFEST_FILE] {
        assert_eq!(
            std::fs::read(first.join(file)).unwrap(),
            std::fs::read(second.join(file)).unwrap(),
            "{file} differs between two builds from the same inputs"
        );
    }

    assert!(manifest.kernel_package.contains("cloud-amd64"));
    assert!(
        manifest.total_size <= manifest.size_budget,
        "qemu ramdisk is {} bytes, over its budget",
        manifest.total_size
    );
    let position = |name: &str| {
        manifest
            .modules
            .iter()
            .position(|m| m == name)
            .unwrap_or_else(|| panic!("{name} missing from {:?}", manifest.modules))
    };
    // Dependencies come first, as read from the modules' own .modinfo.
    assert!(position("virtio_ring") < position("virtio_net"));
    assert!(position("virtio") < position("virtio_pci"));
    assert!(position("net_failover") < position("virtio_net"));
    position("virtio_blk");
    position("button");

    let files = read_initramfs(&first.join(INITRAMFS_FILE));
    let init = files.iter().find(|(n, _)| n == "init").expect("/init");
    assert_eq!(
        init.1,
        std::fs::read(agent()).unwrap(),
        "/init is the agent"
    );
    for module in &manifest.modules {
        let path = format!("lib/modules/{module}.ko");
        assert!(
            files.iter().any(|(n, _)| *n == path),
            "{path} not in the initramfs"
        );
    }
    assert_eq!(
        manifest.files.len(),
        files.iter().filter(|(_, d)| !d.is_empty()).count(),
        "the manifest lists every file"
    );
    let iso = std::fs::read(first.join(ISO_FILE)).unwrap();
    assert_eq!(&iso[32769..32774], b"CD001", "an ISO 9660 image");
    assert_eq!(&iso[32808..32816], b"IRONCLAD");
}

#[test]
fn a_config_drive_iso_is_labelled_config_2() {
    let dir = tempfile::tempdir().unwrap();
    let drive = dir.path().join("drive");
    std::fs::create_dir_all(drive.join("openstack/latest")).unwrap();
    std::fs::write(
        drive.join("openstack/latest/network_data.json"),
        br#"{"links": [], "networks": [], "services": []}"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    build(&options(&out, true, Some(drive))).unwrap();
    let iso = std::fs::read(out.join(ISO_FILE)).unwrap();
    assert_eq!(&iso[32808..32816], b"config-2");
    let needle = br#""networks": []"#;
    assert!(
        iso.windows(needle.len()).any(|w| w == needle),
        "network_data.json is on the ISO"
    );
}

#[test]
fn an_unknown_kernel_package_fails_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), false, None);
    opts.kernel_package = Some("linux-image-does-not-exist-amd64".into());
    let error = build(&opts).unwrap_err().to_string();
    assert!(
        error.contains("linux-image-does-not-exist-amd64"),
        "{error}"
    );
}
