//! The hardware inventory (`poll.get_hardware_info`), read from `/proc` and
//! `/sys` under a system root and from the [`BlockDevices`] trait.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::Path;

use ironclad_versioning::inventory::{
    BootInfo, CpuInfo, DiskInfo, FirmwareInfo, InterfaceInfo, Inventory, MemoryInfo,
    SystemVendorInfo,
};
use serde_json::Map;

use crate::disk::BlockDevices;

/// Why the inventory could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The disks could not be listed.
    #[error(transparent)]
    Disks(#[from] crate::disk::DiskError),
}

/// Where the agent's identity comes from for the `interfaces` list.
#[derive(Debug, Clone)]
pub enum NicSource {
    /// Host mode with `--mac`: report these MACs (named `eth0`, `eth1`, ...).
    Given {
        /// The MACs.
        macs: Vec<String>,
        /// IP to report on them.
        address: Option<IpAddr>,
    },
    /// The machine's own NICs from `<root>/sys/class/net`.
    System,
}

fn read(root: &Path, rel: &str) -> Option<String> {
    fs::read_to_string(root.join(rel))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The MACs of the machine's NICs (`lo` and all-zero addresses skipped), sorted by name.
pub fn system_macs(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(root.join("sys/class/net")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "lo" {
                continue;
            }
            if let Some(mac) = read(root, &format!("sys/class/net/{name}/address")) {
                let mac = mac.to_ascii_lowercase();
                if mac.len() == 17 && mac != "00:00:00:00:00:00" {
                    out.push((name, mac));
                }
            }
        }
    }
    out.sort();
    out
}

fn addresses() -> BTreeMap<String, (Option<String>, Option<String>)> {
    let mut map: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(addr) = a.address else { continue };
            let entry = map.entry(a.interface_name.clone()).or_default();
            if let Some(v4) = addr.as_sockaddr_in() {
                entry.0.get_or_insert_with(|| v4.ip().to_string());
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                let ip = v6.ip();
                // Skip link-local (fe80::/10).
                if ip.segments()[0] & 0xffc0 != 0xfe80 {
                    entry.1.get_or_insert_with(|| ip.to_string());
                }
            }
        }
    }
    map
}

fn interfaces(root: &Path, nics: &NicSource) -> Vec<InterfaceInfo> {
    let blank = |name: String, mac: String| InterfaceInfo {
        name,
        mac_address: mac,
        ipv4_address: None,
        ipv6_address: None,
        has_carrier: true,
        vendor: None,
        product: None,
        speed_mbps: None,
        lldp: None,
        extra: Map::new(),
    };
    match nics {
        NicSource::Given { macs, address } => macs
            .iter()
            .enumerate()
            .map(|(i, mac)| {
                let mut nic = blank(format!("eth{i}"), mac.clone());
                match address {
                    Some(IpAddr::V4(v4)) => nic.ipv4_address = Some(v4.to_string()),
                    Some(IpAddr::V6(v6)) => nic.ipv6_address = Some(v6.to_string()),
                    None => {}
                }
                nic
            })
            .collect(),
        NicSource::System => {
            let addrs = addresses();
            system_macs(root)
                .into_iter()
                .map(|(name, mac)| {
                    let base = format!("sys/class/net/{name}");
                    let mut nic = blank(name.clone(), mac);
                    nic.has_carrier =
                        read(root, &format!("{base}/carrier")).as_deref() == Some("1");
                    nic.vendor = read(root, &format!("{base}/device/vendor"));
                    nic.product = read(root, &format!("{base}/device/device"));
                    nic.speed_mbps = read(root, &format!("{base}/speed"))
                        .and_then(|s| s.parse::<i64>().ok())
                        .and_then(|s| u64::try_from(s).ok());
                    if let Some((v4, v6)) = addrs.get(&name) {
                        nic.ipv4_address = v4.clone();
                        nic.ipv6_address = v6.clone();
                    }
                    nic
                })
                .collect()
        }
    }
}

fn cpu(root: &Path) -> CpuInfo {
    let text = read(root, "proc/cpuinfo").unwrap_or_default();
    let mut count = 0u32;
    let mut model = None;
    let mut flags = Vec::new();
    let mut mhz = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => count += 1,
            "model name" | "cpu model" if model.is_none() => model = Some(value.to_owned()),
            "flags" | "Features" if flags.is_empty() => {
                flags = value.split_whitespace().map(str::to_owned).collect();
            }
            "cpu MHz" if mhz.is_none() => mhz = Some(value.to_owned()),
            _ => {}
        }
    }
    CpuInfo {
        model_name: model.unwrap_or_default(),
        count: count.max(1),
        architecture: std::env::consts::ARCH.to_owned(),
        frequency: mhz,
        flags,
        extra: Map::new(),
    }
}

fn memory(root: &Path) -> MemoryInfo {
    let total_kib: u64 = read(root, "proc/meminfo")
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next().map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let total = total_kib * 1024;
    // Installed memory: online memory blocks when the kernel exposes them.
    let block = read(root, "sys/devices/system/memory/block_size_bytes")
        .and_then(|h| u64::from_str_radix(h.trim_start_matches("0x"), 16).ok());
    let online_blocks = fs::read_dir(root.join("sys/devices/system/memory"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("memory"))
                .filter(|e| {
                    fs::read_to_string(e.path().join("online"))
                        .map(|s| s.trim() == "1")
                        .unwrap_or(false)
                })
                .count() as u64
        })
        .unwrap_or(0);
    let physical_mb = match block {
        Some(b) if online_blocks > 0 => b * online_blocks / (1024 * 1024),
        _ => total.div_ceil(1024 * 1024),
    };
    MemoryInfo { total, physical_mb }
}

fn system_vendor(root: &Path) -> SystemVendorInfo {
    let dmi = |f: &str| read(root, &format!("sys/class/dmi/id/{f}"));
    SystemVendorInfo {
        product_name: dmi("product_name"),
        serial_number: dmi("product_serial"),
        manufacturer: dmi("sys_vendor"),
        firmware: Some(FirmwareInfo {
            vendor: dmi("bios_vendor"),
            version: dmi("bios_version"),
            build_date: dmi("bios_date"),
        }),
    }
}

/// Collects the inventory.
pub fn collect(
    root: &Path,
    disks: &dyn BlockDevices,
    nics: &NicSource,
) -> Result<Inventory, InventoryError> {
    let disks = disks
        .list()?
        .into_iter()
        .map(|d| DiskInfo {
            name: d.name,
            model: d.model,
            size: d.size,
            rotational: d.rotational,
            wwn: d.wwn,
            serial: d.serial,
            vendor: Some(d.vendor).filter(|v| !v.is_empty()),
            hctl: None,
            by_path: None,
            extra: Map::new(),
        })
        .collect();
    let boot_mode = if root.join("sys/firmware/efi").exists() {
        "uefi"
    } else {
        "bios"
    };
    Ok(Inventory {
        interfaces: interfaces(root, nics),
        cpu: cpu(root),
        memory: memory(root),
        disks,
        boot: BootInfo {
            current_boot_mode: boot_mode.to_owned(),
            pxe_interface: None,
        },
        system_vendor: system_vendor(root),
        bmc_address: None,
        bmc_v6address: None,
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok()),
        extra: Map::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::FileBlockDevices;

    #[test]
    fn recorded_tree_is_read() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let w = |rel: &str, text: &str| {
            let p = r.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        };
        w(
            "proc/cpuinfo",
            "processor\t: 0\nmodel name\t: Test CPU\nflags\t: fpu sse2\ncpu MHz\t: 2000.0\n\nprocessor\t: 1\nmodel name\t: Test CPU\n",
        );
        w(
            "proc/meminfo",
            "MemTotal:        2048000 kB\nMemFree: 1 kB\n",
        );
        w("sys/class/net/eth0/address", "52:54:00:AA:BB:CC\n");
        w("sys/class/net/eth0/carrier", "1\n");
        w("sys/class/net/lo/address", "00:00:00:00:00:00\n");
        w("sys/class/dmi/id/sys_vendor", "QEMU\n");
        fs::create_dir_all(r.join("sys/firmware/efi")).unwrap();
        let disk = r.join("disk.img");
        fs::write(&disk, vec![0u8; 4096]).unwrap();
        let inv = collect(
            r,
            &FileBlockDevices::new(vec![disk.clone()]),
            &NicSource::System,
        )
        .unwrap();
        assert_eq!(inv.cpu.count, 2);
        assert_eq!(inv.cpu.model_name, "Test CPU");
        assert_eq!(inv.cpu.flags, ["fpu", "sse2"]);
        assert_eq!(inv.memory.total, 2048000 * 1024);
        assert_eq!(inv.memory.physical_mb, 2000);
        assert_eq!(inv.interfaces.len(), 1);
        assert_eq!(inv.interfaces[0].mac_address, "52:54:00:aa:bb:cc");
        assert_eq!(inv.boot.current_boot_mode, "uefi");
        assert_eq!(inv.system_vendor.manufacturer.as_deref(), Some("QEMU"));
        assert_eq!(inv.disks[0].size, 4096);
        assert_eq!(inv.disks[0].name, disk.display().to_string());
    }

    #[test]
    fn given_macs_are_the_identity() {
        let root = tempfile::tempdir().unwrap();
        let inv = collect(
            root.path(),
            &FileBlockDevices::new(vec![]),
            &NicSource::Given {
                macs: vec!["52:54:00:00:00:01".into()],
                address: Some("127.0.0.1".parse().unwrap()),
            },
        )
        .unwrap();
        assert_eq!(inv.interfaces[0].name, "eth0");
        assert_eq!(inv.interfaces[0].ipv4_address.as_deref(), Some("127.0.0.1"));
        assert_eq!(inv.boot.current_boot_mode, "bios");
    }
}
