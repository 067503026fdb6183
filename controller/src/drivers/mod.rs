//! Hardware types and their interfaces (power, management, boot, deploy).
//!
//! A node's `driver` names a [`HardwareType`]; each hardware type hands out the
//! interface implementations the conductor calls. Only `fake-hardware` exists so
//! far; Redfish and IPMI will be further implementations of the same traits.

pub mod fake;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use ironclad_versioning::controller_api::Node;
use ironclad_versioning::states::{PowerState, PowerTarget};

/// What can go wrong in a driver.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The node's driver settings are incomplete or wrong.
    #[error("invalid driver settings: {0}")]
    InvalidParameters(String),
    /// The BMC refused or failed an operation.
    #[error("the BMC failed: {0}")]
    Bmc(String),
}

/// The kinds of interfaces a node has, with their API field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InterfaceKind {
    /// `boot_interface`.
    Boot,
    /// `console_interface`.
    Console,
    /// `deploy_interface`.
    Deploy,
    /// `inspect_interface`.
    Inspect,
    /// `management_interface`.
    Management,
    /// `network_interface`.
    Network,
    /// `power_interface`.
    Power,
    /// `raid_interface`.
    Raid,
    /// `rescue_interface`.
    Rescue,
    /// `storage_interface`.
    Storage,
    /// `vendor_interface`.
    Vendor,
    /// `bios_interface`.
    Bios,
    /// `firmware_interface`.
    Firmware,
}

impl InterfaceKind {
    /// Every kind.
    pub const ALL: &'static [InterfaceKind] = &[
        Self::Boot,
        Self::Console,
        Self::Deploy,
        Self::Inspect,
        Self::Management,
        Self::Network,
        Self::Power,
        Self::Raid,
        Self::Rescue,
        Self::Storage,
        Self::Vendor,
        Self::Bios,
        Self::Firmware,
    ];

    /// The node field holding this interface, e.g. `power_interface`.
    pub fn field(self) -> &'static str {
        match self {
            Self::Boot => "boot_interface",
            Self::Console => "console_interface",
            Self::Deploy => "deploy_interface",
            Self::Inspect => "inspect_interface",
            Self::Management => "management_interface",
            Self::Network => "network_interface",
            Self::Power => "power_interface",
            Self::Raid => "raid_interface",
            Self::Rescue => "rescue_interface",
            Self::Storage => "storage_interface",
            Self::Vendor => "vendor_interface",
            Self::Bios => "bios_interface",
            Self::Firmware => "firmware_interface",
        }
    }
}

/// Devices a node can boot from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDevice {
    /// Network boot.
    Pxe,
    /// Local disk.
    Disk,
    /// Optical drive or virtual media.
    Cdrom,
}

/// Power control of a node.
pub trait PowerInterface: Send + Sync {
    /// Checks that the node's driver_info allows power control.
    fn validate<'a>(&'a self, node: &'a Node) -> BoxFuture<'a, Result<(), DriverError>>;
    /// Reads the node's power state.
    fn get_power_state<'a>(
        &'a self,
        node: &'a Node,
    ) -> BoxFuture<'a, Result<PowerState, DriverError>>;
    /// Changes the node's power state and returns the state reached.
    fn set_power_state<'a>(
        &'a self,
        node: &'a Node,
        target: PowerTarget,
    ) -> BoxFuture<'a, Result<PowerState, DriverError>>;
}

/// Out-of-band management of a node (boot device, ...).
pub trait ManagementInterface: Send + Sync {
    /// Sets the device the node boots from next.
    fn set_boot_device<'a>(
        &'a self,
        node: &'a Node,
        device: BootDevice,
        persistent: bool,
    ) -> BoxFuture<'a, Result<(), DriverError>>;
}

/// How a node boots the agent ramdisk and the instance.
pub trait BootInterface: Send + Sync {
    /// Prepares the node to boot the agent ramdisk at its next boot.
    fn prepare_ramdisk<'a>(&'a self, node: &'a Node) -> BoxFuture<'a, Result<(), DriverError>>;
    /// Removes what `prepare_ramdisk` set up.
    fn clean_up_ramdisk<'a>(&'a self, node: &'a Node) -> BoxFuture<'a, Result<(), DriverError>>;
    /// Prepares the node to boot the deployed instance.
    fn prepare_instance<'a>(&'a self, node: &'a Node) -> BoxFuture<'a, Result<(), DriverError>>;
    /// Removes what `prepare_instance` set up.
    fn clean_up_instance<'a>(&'a self, node: &'a Node) -> BoxFuture<'a, Result<(), DriverError>>;
}

/// A hardware type: the set of interfaces a kind of machine supports.
pub trait HardwareType: Send + Sync {
    /// Name used in a node's `driver` field.
    fn name(&self) -> &'static str;
    /// Implementations of an interface kind this type supports; the first is the default.
    fn supported(&self, kind: InterfaceKind) -> &'static [&'static str];
    /// The power interface.
    fn power(&self) -> &dyn PowerInterface;
    /// The management interface.
    fn management(&self) -> &dyn ManagementInterface;
    /// The boot interface.
    fn boot(&self) -> &dyn BootInterface;
}

/// The hardware types this controller knows, by name.
#[derive(Clone)]
pub struct DriverRegistry {
    types: BTreeMap<&'static str, Arc<dyn HardwareType>>,
}

impl std::fmt::Debug for DriverRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.types.keys()).finish()
    }
}

impl Default for DriverRegistry {
    fn default() -> Self {
        let mut types: BTreeMap<&'static str, Arc<dyn HardwareType>> = BTreeMap::new();
        let fake: Arc<dyn HardwareType> = Arc::new(fake::FakeHardware);
        types.insert(fake.name(), fake);
        Self { types }
    }
}

impl DriverRegistry {
    /// The hardware type called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn HardwareType>> {
        self.types.get(name).cloned()
    }

    /// Names of every known hardware type.
    pub fn names(&self) -> Vec<&'static str> {
        self.types.keys().copied().collect()
    }
}
