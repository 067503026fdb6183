//! Interfaces with nothing to drive: `noop` management, `no-inspect`, and the
//! implementations of the other kinds (`direct` deploy, `flat`/`noop` network,
//! `noop` storage, `no-rescue`, `no-vendor`, ..., and their `fake` twins) whose
//! work, if any, the conductor does itself.

use std::sync::Arc;

use futures_util::future;
use ironclad_versioning::controller_api::Node;

use super::{
    BootDevice, BootMode, DriverError, DriverFuture, InspectInterface, InspectedHardware,
    Interface, InterfaceKind, ManagementInterface, OtherInterface,
};

use super::ready_ok as ok;

/// `noop` management: the operator sets boot devices by hand.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopManagement;

impl Interface for NoopManagement {
    fn name(&self) -> &'static str {
        "noop"
    }

    fn validate<'a>(&'a self, _node: &'a Node) -> DriverFuture<'a, ()> {
        ok(())
    }
}

impl ManagementInterface for NoopManagement {
    fn set_boot_device<'a>(
        &'a self,
        node: &'a Node,
        device: BootDevice,
        _persistent: bool,
    ) -> DriverFuture<'a, ()> {
        tracing::info!(node = %node.uuid, device = device.as_str(), "noop management: set the boot device by hand");
        ok(())
    }

    fn get_boot_device<'a>(
        &'a self,
        _node: &'a Node,
    ) -> DriverFuture<'a, (Option<BootDevice>, Option<bool>)> {
        ok((None, None))
    }

    fn set_boot_mode<'a>(&'a self, _node: &'a Node, _mode: BootMode) -> DriverFuture<'a, ()> {
        ok(())
    }
}

/// `no-inspect`: inspection is not available.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoInspect;

impl Interface for NoInspect {
    fn name(&self) -> &'static str {
        "no-inspect"
    }

    fn validate<'a>(&'a self, _node: &'a Node) -> DriverFuture<'a, ()> {
        ok(())
    }
}

impl InspectInterface for NoInspect {
    fn inspect_hardware<'a>(&'a self, node: &'a Node) -> DriverFuture<'a, InspectedHardware> {
        Box::pin(future::ready(Err(DriverError::Unsupported(format!(
            "node {} has inspect_interface no-inspect; set it to one its hardware type supports",
            node.uuid
        )))))
    }
}

/// An implementation that validates every node.
#[derive(Debug, Clone, Copy)]
pub struct Passive {
    kind: InterfaceKind,
    name: &'static str,
}

impl Interface for Passive {
    fn name(&self) -> &'static str {
        self.name
    }

    fn validate<'a>(&'a self, _node: &'a Node) -> DriverFuture<'a, ()> {
        ok(())
    }
}

impl OtherInterface for Passive {
    fn kind(&self) -> InterfaceKind {
        self.kind
    }
}

/// Every passive implementation of the other kinds.
pub fn others() -> Vec<Arc<dyn OtherInterface>> {
    use InterfaceKind::*;
    let list: &[(InterfaceKind, &'static str)] = &[
        (Deploy, "direct"),
        (Deploy, "fake"),
        (Network, "flat"),
        (Network, "noop"),
        (Storage, "noop"),
        (Storage, "fake"),
        (Rescue, "no-rescue"),
        (Rescue, "fake"),
        (Vendor, "no-vendor"),
        (Vendor, "fake"),
        (Console, "no-console"),
        (Console, "fake"),
        (Raid, "no-raid"),
        (Raid, "fake"),
        (Bios, "no-bios"),
        (Bios, "fake"),
        (Firmware, "no-firmware"),
        (Firmware, "fake"),
    ];
    list.iter()
        .map(|(kind, name)| Arc::new(Passive { kind: *kind, name }) as Arc<dyn OtherInterface>)
        .collect()
}
