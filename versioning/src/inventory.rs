//! The hardware inventory an agent reports (`poll.get_hardware_info`, inspection),
//! in ironic-python-agent's shape. Every field a reader may lack is optional;
//! unknown fields are kept in `extra`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The whole inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    /// Network interfaces.
    pub interfaces: Vec<InterfaceInfo>,
    /// Processors.
    pub cpu: CpuInfo,
    /// Memory.
    pub memory: MemoryInfo,
    /// Disks.
    pub disks: Vec<DiskInfo>,
    /// Firmware boot mode.
    pub boot: BootInfo,
    /// DMI system information.
    pub system_vendor: SystemVendorInfo,
    /// BMC IPv4 address, when known.
    #[serde(default)]
    pub bmc_address: Option<String>,
    /// BMC IPv6 address, when known.
    #[serde(default)]
    pub bmc_v6address: Option<String>,
    /// Host name of the ramdisk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterfaceInfo {
    /// Kernel name, e.g. `eth0`.
    pub name: String,
    /// MAC address, lower case.
    pub mac_address: String,
    /// First IPv4 address, when configured.
    #[serde(default)]
    pub ipv4_address: Option<String>,
    /// First IPv6 address, when configured.
    #[serde(default)]
    pub ipv6_address: Option<String>,
    /// Whether the link has carrier.
    #[serde(default)]
    pub has_carrier: bool,
    /// PCI vendor id, when known.
    #[serde(default)]
    pub vendor: Option<String>,
    /// PCI product id, when known.
    #[serde(default)]
    pub product: Option<String>,
    /// Link speed in Mbit/s, when known.
    #[serde(default)]
    pub speed_mbps: Option<u64>,
    /// LLDP TLVs, when collected.
    #[serde(default)]
    pub lldp: Option<Value>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Processors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuInfo {
    /// Model name from `/proc/cpuinfo`.
    pub model_name: String,
    /// Number of logical CPUs.
    pub count: u32,
    /// Architecture, e.g. `x86_64`.
    pub architecture: String,
    /// Highest frequency in MHz, when known.
    #[serde(default)]
    pub frequency: Option<String>,
    /// CPU flags.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryInfo {
    /// Usable memory in bytes (`MemTotal`).
    pub total: u64,
    /// Installed memory in MiB.
    pub physical_mb: u64,
}

/// One disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Device path, e.g. `/dev/sda`.
    pub name: String,
    /// Model string.
    pub model: String,
    /// Size in bytes.
    pub size: u64,
    /// Whether the disk is rotational.
    pub rotational: bool,
    /// World-wide name.
    #[serde(default)]
    pub wwn: Option<String>,
    /// Serial number.
    #[serde(default)]
    pub serial: Option<String>,
    /// Vendor string.
    #[serde(default)]
    pub vendor: Option<String>,
    /// SCSI host:channel:target:lun.
    #[serde(default)]
    pub hctl: Option<String>,
    /// `/dev/disk/by-path` link.
    #[serde(default)]
    pub by_path: Option<String>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Firmware boot mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootInfo {
    /// `uefi` or `bios`.
    pub current_boot_mode: String,
    /// The PXE interface's MAC, when known.
    #[serde(default)]
    pub pxe_interface: Option<String>,
}

/// DMI system information.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemVendorInfo {
    /// Product name.
    #[serde(default)]
    pub product_name: Option<String>,
    /// Serial number.
    #[serde(default)]
    pub serial_number: Option<String>,
    /// Manufacturer.
    #[serde(default)]
    pub manufacturer: Option<String>,
    /// Firmware (BIOS) information.
    #[serde(default)]
    pub firmware: Option<FirmwareInfo>,
}

/// Firmware (BIOS) information.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FirmwareInfo {
    /// Vendor.
    #[serde(default)]
    pub vendor: Option<String>,
    /// Version.
    #[serde(default)]
    pub version: Option<String>,
    /// Build date.
    #[serde(default)]
    pub build_date: Option<String>,
}
