//! Driver composition: hardware types built from interfaces, as in Ironic.
//!
//! A node's `driver` names a [`HardwareType`], which lists, for every
//! [`InterfaceKind`], the interface implementations it accepts (the first that is
//! also enabled is the default). A node picks one implementation per kind in its
//! `*_interface` fields; the [`DriverRegistry`] maps those names to the objects the
//! conductor calls. Each implementation lives in its own module:
//!
//! - [`fake`]: `fake-hardware` and the `fake` implementation of every interface;
//! - [`generic`]: interfaces with nothing to drive (`noop`, `no-*`, `flat`, `direct`, `agent`);
//! - [`hardware`]: the hardware types `redfish`, `ipmi`, `manual-management`, `fake-hardware`;
//! - [`redfish`]: Redfish power, management and inspection (client, auth, retries, quirks);
//! - [`ipmi`]: IPMI over LAN through `ipmitool`;
//! - [`ipxe`]: the `ipxe` boot interface and the iPXE scripts it serves.
//!
//! Adding a vendor is adding a module with its interfaces and registering them in
//! [`DriverRegistry::new`].

pub mod fake;
pub mod generic;
pub mod hardware;
pub mod ipmi;
pub mod ipxe;
pub mod redfish;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use ironclad_versioning::controller_api::{InterfaceValidation, Node, Port};
use ironclad_versioning::states::{PowerState, PowerTarget};
use serde_json::{Map, Value};

use crate::dhcp::DhcpFilter;

/// What can go wrong in a driver.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The node's driver settings are incomplete or wrong.
    #[error("invalid driver settings: {0}")]
    InvalidParameters(String),
    /// The BMC refused or failed an operation.
    #[error("the BMC failed: {0}")]
    Bmc(String),
    /// The interface cannot do this.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The node's interface names an implementation this controller does not have.
    #[error("the {kind} \"{name}\" is not enabled in this controller")]
    NotEnabled {
        /// The interface field.
        kind: &'static str,
        /// The implementation name.
        name: String,
    },
}

/// The kinds of interfaces a node has, with their API field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

    /// The short name used by `/validate` and `--enabled-interfaces`, e.g. `power`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Boot => "boot",
            Self::Console => "console",
            Self::Deploy => "deploy",
            Self::Inspect => "inspect",
            Self::Management => "management",
            Self::Network => "network",
            Self::Power => "power",
            Self::Raid => "raid",
            Self::Rescue => "rescue",
            Self::Storage => "storage",
            Self::Vendor => "vendor",
            Self::Bios => "bios",
            Self::Firmware => "firmware",
        }
    }

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

    /// The kind with this short name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// The implementation the node names for this kind, if set.
    pub fn of(self, node: &Node) -> Option<&str> {
        match self {
            Self::Boot => node.boot_interface.as_deref(),
            Self::Console => node.console_interface.as_deref(),
            Self::Deploy => node.deploy_interface.as_deref(),
            Self::Inspect => node.inspect_interface.as_deref(),
            Self::Management => node.management_interface.as_deref(),
            Self::Network => node.network_interface.as_deref(),
            Self::Power => node.power_interface.as_deref(),
            Self::Raid => node.raid_interface.as_deref(),
            Self::Rescue => node.rescue_interface.as_deref(),
            Self::Storage => node.storage_interface.as_deref(),
            Self::Vendor => node.vendor_interface.as_deref(),
            Self::Bios => node.bios_interface.as_deref(),
            Self::Firmware => node.firmware_interface.as_deref(),
        }
    }

    /// Sets the implementation the node uses for this kind.
    pub fn set(self, node: &mut Node, value: Option<String>) {
        let slot = match self {
            Self::Boot => &mut node.boot_interface,
            Self::Console => &mut node.console_interface,
            Self::Deploy => &mut node.deploy_interface,
            Self::Inspect => &mut node.inspect_interface,
            Self::Management => &mut node.management_interface,
            Self::Network => &mut node.network_interface,
            Self::Power => &mut node.power_interface,
            Self::Raid => &mut node.raid_interface,
            Self::Rescue => &mut node.rescue_interface,
            Self::Storage => &mut node.storage_interface,
            Self::Vendor => &mut node.vendor_interface,
            Self::Bios => &mut node.bios_interface,
            Self::Firmware => &mut node.firmware_interface,
        };
        *slot = value;
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
    /// The firmware's setup screen.
    Bios,
}

impl BootDevice {
    /// Ironic's name for the device.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pxe => "pxe",
            Self::Disk => "disk",
            Self::Cdrom => "cdrom",
            Self::Bios => "bios",
        }
    }

    /// The device with Ironic's name `name`.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Pxe, Self::Disk, Self::Cdrom, Self::Bios]
            .into_iter()
            .find(|d| d.as_str() == name)
    }
}

/// Firmware boot modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    /// UEFI.
    Uefi,
    /// Legacy BIOS.
    Bios,
}

impl BootMode {
    /// Ironic's name for the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uefi => "uefi",
            Self::Bios => "bios",
        }
    }

    /// The mode with Ironic's name `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "uefi" => Some(Self::Uefi),
            "bios" => Some(Self::Bios),
            _ => None,
        }
    }
}

/// A future returned by an interface method.
pub type DriverFuture<'a, T> = BoxFuture<'a, Result<T, DriverError>>;

/// A [`DriverFuture`] that is already done with `value`.
pub(crate) fn ready_ok<'a, T: Send + 'a>(value: T) -> DriverFuture<'a, T> {
    Box::pin(futures_util::future::ready(Ok(value)))
}

/// What every interface implementation has: a name and a check of the node's settings.
pub trait Interface: Send + Sync {
    /// The implementation's name, as in the node's `*_interface` field.
    fn name(&self) -> &'static str;
    /// Checks that the node's settings allow this interface to work.
    fn validate<'a>(&'a self, node: &'a Node) -> DriverFuture<'a, ()>;
}

/// Power control of a node.
pub trait PowerInterface: Interface {
    /// Reads the node's power state.
    fn get_power_state<'a>(&'a self, node: &'a Node) -> DriverFuture<'a, PowerState>;
    /// Changes the node's power state, waits up to `timeout` (the driver's
    /// default when `None`) for it, and returns the state reached.
    fn set_power_state<'a>(
        &'a self,
        node: &'a Node,
        target: PowerTarget,
        timeout: Option<Duration>,
    ) -> DriverFuture<'a, PowerState>;
}

/// Out-of-band management of a node (boot device, boot mode, ...).
pub trait ManagementInterface: Interface {
    /// Sets the device the node boots from next (`persistent`: every boot).
    fn set_boot_device<'a>(
        &'a self,
        node: &'a Node,
        device: BootDevice,
        persistent: bool,
    ) -> DriverFuture<'a, ()>;
    /// Reads the boot device and whether it is persistent, when the BMC says.
    fn get_boot_device<'a>(
        &'a self,
        node: &'a Node,
    ) -> DriverFuture<'a, (Option<BootDevice>, Option<bool>)>;
    /// Sets the firmware boot mode.
    fn set_boot_mode<'a>(&'a self, node: &'a Node, mode: BootMode) -> DriverFuture<'a, ()>;
}

/// What a boot interface is told about the node beyond its record.
#[derive(Debug, Clone, Copy)]
pub struct BootTask<'a> {
    /// The node.
    pub node: &'a Node,
    /// Its ports.
    pub ports: &'a [Port],
}

impl BootTask<'_> {
    /// MACs of the ports that network boot (`pxe_enabled`, the default).
    pub fn pxe_macs(&self) -> Vec<String> {
        self.ports
            .iter()
            .filter(|p| p.pxe_enabled)
            .map(|p| p.address.to_ascii_lowercase())
            .collect()
    }
}

/// How a node boots the agent ramdisk and the instance.
pub trait BootInterface: Interface {
    /// Prepares the node to boot the agent ramdisk at its next boot.
    fn prepare_ramdisk<'a>(&'a self, task: BootTask<'a>) -> DriverFuture<'a, ()>;
    /// Removes what `prepare_ramdisk` set up.
    fn clean_up_ramdisk<'a>(&'a self, task: BootTask<'a>) -> DriverFuture<'a, ()>;
    /// Prepares the node to boot the deployed instance.
    fn prepare_instance<'a>(&'a self, task: BootTask<'a>) -> DriverFuture<'a, ()>;
    /// Removes what `prepare_instance` set up.
    fn clean_up_instance<'a>(&'a self, task: BootTask<'a>) -> DriverFuture<'a, ()>;
    /// The device the management interface should boot for the ramdisk.
    fn ramdisk_boot_device(&self) -> BootDevice {
        BootDevice::Pxe
    }
    /// Restores controller-side boot state lost in a restart (e.g. DHCP host
    /// files) for a node in the middle of something; nothing by default.
    fn restore<'a>(&'a self, _task: BootTask<'a>) -> DriverFuture<'a, ()> {
        Box::pin(futures_util::future::ready(Ok(())))
    }
}

/// What out-of-band inspection found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InspectedHardware {
    /// Properties to merge into the node (`memory_mb`, `cpus`, `cpu_arch`, ...).
    pub properties: Map<String, Value>,
    /// MAC addresses of the system's network interfaces, lower case.
    pub macs: Vec<String>,
}

/// Hardware inspection.
pub trait InspectInterface: Interface {
    /// Reads the node's hardware, when this interface can do so out of band.
    fn inspect_hardware<'a>(&'a self, node: &'a Node) -> DriverFuture<'a, InspectedHardware>;
}

/// Any other interface kind (deploy, rescue, storage, network, vendor, ...): only
/// validation is generic; the conductor carries out their work itself.
pub trait OtherInterface: Interface {
    /// The kind this implements.
    fn kind(&self) -> InterfaceKind;
}

/// A hardware type: which implementations of each interface kind it accepts.
pub trait HardwareType: Send + Sync {
    /// Name used in a node's `driver` field.
    fn name(&self) -> &'static str;
    /// Implementations of an interface kind this type supports, in order of preference.
    fn supported(&self, kind: InterfaceKind) -> &'static [&'static str];
}

/// Which implementations this controller enables, per interface kind (all when unset).
#[derive(Debug, Clone, Default)]
pub struct Enabled {
    /// Enabled hardware types; `None` means every known one.
    pub hardware_types: Option<Vec<String>>,
    /// Enabled implementations per kind; a missing kind means every known one.
    pub interfaces: BTreeMap<InterfaceKind, Vec<String>>,
    /// Default implementation per kind, overriding "first supported and enabled".
    pub defaults: BTreeMap<InterfaceKind, String>,
}

/// Settings drivers need from the controller.
#[derive(Debug, Clone)]
pub struct DriverSettings {
    /// The controller's public URL (handed to agents, used in iPXE scripts).
    pub public_url: String,
    /// Redfish connection attempts per request.
    pub redfish_attempts: u32,
    /// First pause between Redfish attempts (doubled after each).
    pub redfish_retry_interval: Duration,
    /// How long to wait for a power change to show.
    pub power_state_change_timeout: Duration,
    /// PXE filter, when the controller manages DHCP.
    pub dhcp: Option<DhcpFilter>,
    /// Which implementations are enabled.
    pub enabled: Enabled,
}

impl DriverSettings {
    /// Defaults, with `public_url`.
    pub fn new(public_url: &str) -> Self {
        Self {
            public_url: public_url.to_owned(),
            redfish_attempts: 5,
            redfish_retry_interval: Duration::from_secs(2),
            power_state_change_timeout: Duration::from_secs(60),
            dhcp: None,
            enabled: Enabled::default(),
        }
    }
}

#[derive(Default)]
struct Implementations {
    power: BTreeMap<&'static str, Arc<dyn PowerInterface>>,
    management: BTreeMap<&'static str, Arc<dyn ManagementInterface>>,
    boot: BTreeMap<&'static str, Arc<dyn BootInterface>>,
    inspect: BTreeMap<&'static str, Arc<dyn InspectInterface>>,
    other: BTreeMap<(InterfaceKind, &'static str), Arc<dyn OtherInterface>>,
}

/// The hardware types and interface implementations this controller has, by name.
#[derive(Clone)]
pub struct DriverRegistry {
    types: BTreeMap<&'static str, Arc<dyn HardwareType>>,
    implementations: Arc<Implementations>,
    enabled: Enabled,
}

impl std::fmt::Debug for DriverRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.types.keys()).finish()
    }
}

impl Default for DriverRegistry {
    fn default() -> Self {
        Self::new(&DriverSettings::new("http://127.0.0.1:6385"))
    }
}

impl DriverRegistry {
    /// Every hardware type and implementation, configured by `settings`.
    pub fn new(settings: &DriverSettings) -> Self {
        let mut types: BTreeMap<&'static str, Arc<dyn HardwareType>> = BTreeMap::new();
        for hw in hardware::all() {
            let allowed = settings
                .enabled
                .hardware_types
                .as_ref()
                .is_none_or(|list| list.iter().any(|n| n == hw.name()));
            if allowed {
                types.insert(hw.name(), hw);
            }
        }
        let mut imp = Implementations::default();
        let fake = Arc::new(fake::Fake);
        imp.power.insert("fake", fake.clone());
        imp.management.insert("fake", fake.clone());
        imp.boot.insert("fake", fake.clone());
        imp.inspect.insert("fake", fake.clone());
        let redfish = Arc::new(redfish::Redfish::new(settings));
        imp.power.insert("redfish", redfish.clone());
        imp.management.insert("redfish", redfish.clone());
        imp.inspect.insert("redfish", redfish.clone());
        imp.boot.insert(
            "redfish-virtual-media",
            Arc::new(redfish::vmedia::RedfishVirtualMedia::new(
                redfish,
                &settings.public_url,
            )),
        );
        let ipmi = Arc::new(ipmi::Ipmitool::new(settings));
        imp.power.insert("ipmitool", ipmi.clone());
        imp.management.insert("ipmitool", ipmi);
        imp.management
            .insert("noop", Arc::new(generic::NoopManagement));
        imp.boot.insert("ipxe", Arc::new(ipxe::Ipxe::new(settings)));
        imp.inspect
            .insert("no-inspect", Arc::new(generic::NoInspect));
        for other in generic::others() {
            imp.other.insert((other.kind(), other.name()), other);
        }
        Self {
            types,
            implementations: Arc::new(imp),
            enabled: settings.enabled.clone(),
        }
    }

    /// The hardware type called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn HardwareType>> {
        self.types.get(name).cloned()
    }

    /// Names of every enabled hardware type.
    pub fn names(&self) -> Vec<&'static str> {
        self.types.keys().copied().collect()
    }

    fn exists(&self, kind: InterfaceKind, name: &str) -> bool {
        let imp = &self.implementations;
        match kind {
            InterfaceKind::Power => imp.power.contains_key(name),
            InterfaceKind::Management => imp.management.contains_key(name),
            InterfaceKind::Boot => imp.boot.contains_key(name),
            InterfaceKind::Inspect => imp.inspect.contains_key(name),
            other => imp.other.keys().any(|(k, n)| *k == other && *n == name),
        }
    }

    /// Whether `name` is an enabled implementation of `kind`.
    pub fn is_enabled(&self, kind: InterfaceKind, name: &str) -> bool {
        self.exists(kind, name)
            && self
                .enabled
                .interfaces
                .get(&kind)
                .is_none_or(|list| list.iter().any(|n| n == name))
    }

    /// The implementations of `kind` a node of `hardware` may use: supported and enabled.
    pub fn allowed(&self, hardware: &dyn HardwareType, kind: InterfaceKind) -> Vec<&'static str> {
        hardware
            .supported(kind)
            .iter()
            .copied()
            .filter(|name| self.is_enabled(kind, name))
            .collect()
    }

    /// The default implementation of `kind` for `hardware`: the configured default
    /// when the type allows it, else the first supported and enabled one.
    pub fn default_interface(
        &self,
        hardware: &dyn HardwareType,
        kind: InterfaceKind,
    ) -> Option<&'static str> {
        let allowed = self.allowed(hardware, kind);
        if let Some(wanted) = self.enabled.defaults.get(&kind) {
            if let Some(found) = allowed.iter().find(|n| *n == wanted) {
                return Some(found);
            }
        }
        allowed.first().copied()
    }

    /// Fills unset interfaces with defaults and checks the set ones; the error
    /// names the allowed implementations.
    pub fn compose(&self, node: &mut Node) -> Result<(), String> {
        let hardware = self.get(&node.driver).ok_or_else(|| {
            format!(
                "The driver '{}' is unknown. Known hardware types: {}.",
                node.driver,
                self.names().join(", ")
            )
        })?;
        for kind in InterfaceKind::ALL.iter().copied() {
            let allowed = self.allowed(hardware.as_ref(), kind);
            match kind.of(node).map(str::to_owned) {
                Some(name) if !allowed.contains(&name.as_str()) => {
                    return Err(format!(
                        "Interface \"{name}\" is not supported for {} by hardware type {}; allowed: {}.",
                        kind.field(),
                        node.driver,
                        if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") }
                    ));
                }
                Some(_) => {}
                None => {
                    let default = self.default_interface(hardware.as_ref(), kind).ok_or_else(|| {
                        format!(
                            "No default value found for {} of hardware type {}: none of its implementations ({}) is enabled.",
                            kind.field(),
                            node.driver,
                            hardware.supported(kind).join(", ")
                        )
                    })?;
                    kind.set(node, Some(default.to_owned()));
                }
            }
        }
        Ok(())
    }

    fn name_of(node: &Node, kind: InterfaceKind) -> Result<&str, DriverError> {
        kind.of(node).ok_or_else(|| DriverError::NotEnabled {
            kind: kind.field(),
            name: "(none)".to_owned(),
        })
    }

    fn not_enabled(kind: InterfaceKind, name: &str) -> DriverError {
        DriverError::NotEnabled {
            kind: kind.field(),
            name: name.to_owned(),
        }
    }

    /// The node's power interface.
    pub fn power(&self, node: &Node) -> Result<Arc<dyn PowerInterface>, DriverError> {
        let name = Self::name_of(node, InterfaceKind::Power)?;
        self.implementations
            .power
            .get(name)
            .cloned()
            .ok_or_else(|| Self::not_enabled(InterfaceKind::Power, name))
    }

    /// The node's management interface.
    pub fn management(&self, node: &Node) -> Result<Arc<dyn ManagementInterface>, DriverError> {
        let name = Self::name_of(node, InterfaceKind::Management)?;
        self.implementations
            .management
            .get(name)
            .cloned()
            .ok_or_else(|| Self::not_enabled(InterfaceKind::Management, name))
    }

    /// The node's boot interface.
    pub fn boot(&self, node: &Node) -> Result<Arc<dyn BootInterface>, DriverError> {
        let name = Self::name_of(node, InterfaceKind::Boot)?;
        self.implementations
            .boot
            .get(name)
            .cloned()
            .ok_or_else(|| Self::not_enabled(InterfaceKind::Boot, name))
    }

    /// The node's inspect interface.
    pub fn inspect(&self, node: &Node) -> Result<Arc<dyn InspectInterface>, DriverError> {
        let name = Self::name_of(node, InterfaceKind::Inspect)?;
        self.implementations
            .inspect
            .get(name)
            .cloned()
            .ok_or_else(|| Self::not_enabled(InterfaceKind::Inspect, name))
    }

    fn interface(&self, node: &Node, kind: InterfaceKind) -> Option<Arc<dyn Interface>> {
        let name = kind.of(node)?;
        let imp = &self.implementations;
        match kind {
            InterfaceKind::Power => imp.power.get(name).map(|i| i.clone() as Arc<dyn Interface>),
            InterfaceKind::Management => imp
                .management
                .get(name)
                .map(|i| i.clone() as Arc<dyn Interface>),
            InterfaceKind::Boot => imp.boot.get(name).map(|i| i.clone() as Arc<dyn Interface>),
            InterfaceKind::Inspect => imp
                .inspect
                .get(name)
                .map(|i| i.clone() as Arc<dyn Interface>),
            other => imp
                .other
                .iter()
                .find(|((k, n), _)| *k == other && *n == name)
                .map(|(_, i)| i.clone() as Arc<dyn Interface>),
        }
    }

    /// Validates every interface of the node (`GET /v1/nodes/{id}/validate`).
    pub async fn validate(&self, node: &Node) -> BTreeMap<String, InterfaceValidation> {
        let mut report = BTreeMap::new();
        for kind in InterfaceKind::ALL.iter().copied() {
            let outcome = match (kind.of(node), self.interface(node, kind)) {
                (None, _) => InterfaceValidation {
                    result: None,
                    reason: Some("not supported".to_owned()),
                },
                (Some(name), None) => InterfaceValidation {
                    result: Some(false),
                    reason: Some(Self::not_enabled(kind, name).to_string()),
                },
                (Some(_), Some(interface)) => match interface.validate(node).await {
                    Ok(()) => InterfaceValidation {
                        result: Some(true),
                        reason: None,
                    },
                    Err(error) => InterfaceValidation {
                        result: Some(false),
                        reason: Some(error.to_string()),
                    },
                },
            };
            report.insert(kind.name().to_owned(), outcome);
        }
        report
    }
}

/// Reads a string from `driver_info`.
pub fn info_str<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.driver_info
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn node(driver: &str) -> Node {
        let mut node: Node =
            serde_json::from_value(crate::api::views::node_template("u", driver)).unwrap();
        node.driver = driver.to_owned();
        node
    }

    #[test]
    fn defaults_are_first_supported_and_enabled() {
        let registry = DriverRegistry::default();
        let mut n = node("redfish");
        registry.compose(&mut n).unwrap();
        assert_eq!(n.power_interface.as_deref(), Some("redfish"));
        assert_eq!(n.management_interface.as_deref(), Some("redfish"));
        assert_eq!(n.boot_interface.as_deref(), Some("ipxe"));
        assert_eq!(n.deploy_interface.as_deref(), Some("direct"));
        assert_eq!(n.vendor_interface.as_deref(), Some("no-vendor"));

        let mut n = node("ipmi");
        registry.compose(&mut n).unwrap();
        assert_eq!(n.power_interface.as_deref(), Some("ipmitool"));

        let mut n = node("redfish");
        n.power_interface = Some("ipmitool".to_owned());
        let error = registry.compose(&mut n).unwrap_err();
        assert!(error.contains("allowed: redfish"), "{error}");

        let mut settings = DriverSettings::new("http://x");
        settings
            .enabled
            .interfaces
            .insert(InterfaceKind::Boot, vec!["fake".to_owned()]);
        let registry = DriverRegistry::new(&settings);
        let mut n = node("redfish");
        let error = registry.compose(&mut n).unwrap_err();
        assert!(error.contains("boot_interface"), "{error}");
    }
}
