//! The hardware types: which interface implementations each accepts, in order of
//! preference (the first enabled one is the default, as in Ironic).

use std::sync::Arc;

use super::{HardwareType, InterfaceKind};

/// Every hardware type this controller knows.
pub fn all() -> Vec<Arc<dyn HardwareType>> {
    vec![
        Arc::new(Redfish),
        Arc::new(Ipmi),
        Arc::new(ManualManagement),
        Arc::new(FakeHardware),
    ]
}

/// What the generic types (`redfish`, `ipmi`) share with Ironic's generic hardware.
fn generic(kind: InterfaceKind) -> &'static [&'static str] {
    match kind {
        InterfaceKind::Boot => &["ipxe"],
        InterfaceKind::Console => &["no-console"],
        InterfaceKind::Deploy => &["direct"],
        InterfaceKind::Inspect => &["no-inspect"],
        InterfaceKind::Management | InterfaceKind::Power => &[],
        InterfaceKind::Network => &["flat", "noop"],
        InterfaceKind::Raid => &["no-raid"],
        InterfaceKind::Rescue => &["no-rescue"],
        InterfaceKind::Storage => &["noop"],
        InterfaceKind::Vendor => &["no-vendor"],
        InterfaceKind::Bios => &["no-bios"],
        InterfaceKind::Firmware => &["no-firmware"],
    }
}

/// `redfish`: BMCs speaking DMTF Redfish.
#[derive(Debug, Clone, Copy, Default)]
pub struct Redfish;

impl HardwareType for Redfish {
    fn name(&self) -> &'static str {
        "redfish"
    }

    fn supported(&self, kind: InterfaceKind) -> &'static [&'static str] {
        match kind {
            InterfaceKind::Power => &["redfish"],
            InterfaceKind::Management => &["redfish", "noop"],
            InterfaceKind::Inspect => &["redfish", "no-inspect"],
            other => generic(other),
        }
    }
}

/// `ipmi`: BMCs speaking IPMI 2.0 over LAN.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ipmi;

impl HardwareType for Ipmi {
    fn name(&self) -> &'static str {
        "ipmi"
    }

    fn supported(&self, kind: InterfaceKind) -> &'static [&'static str] {
        match kind {
            InterfaceKind::Power => &["ipmitool"],
            InterfaceKind::Management => &["ipmitool", "noop"],
            other => generic(other),
        }
    }
}

/// `manual-management`: no BMC; a person powers the machine and picks its boot device.
#[derive(Debug, Clone, Copy, Default)]
pub struct ManualManagement;

impl HardwareType for ManualManagement {
    fn name(&self) -> &'static str {
        "manual-management"
    }

    fn supported(&self, kind: InterfaceKind) -> &'static [&'static str] {
        match kind {
            InterfaceKind::Power => &["fake"],
            InterfaceKind::Management => &["noop", "fake"],
            other => generic(other),
        }
    }
}

/// `fake-hardware`: every interface has a `fake` implementation that touches nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct FakeHardware;

impl HardwareType for FakeHardware {
    fn name(&self) -> &'static str {
        "fake-hardware"
    }

    fn supported(&self, kind: InterfaceKind) -> &'static [&'static str] {
        match kind {
            InterfaceKind::Boot => &["fake", "ipxe"],
            InterfaceKind::Deploy => &["direct", "fake"],
            InterfaceKind::Network => &["noop", "flat"],
            InterfaceKind::Storage => &["noop", "fake"],
            InterfaceKind::Inspect => &["fake", "no-inspect"],
            _ => &["fake"],
        }
    }
}
