//! `fake-hardware`: every interface succeeds at once without touching anything.
//!
//! Power "changes" are simply reported back as reached; the conductor records
//! them in the node. This is what Ironic's own local development setup uses, and
//! it lets a real agent run against a virtual machine that the tests power by hand.

use futures_util::future::{self, BoxFuture};
use ironclad_versioning::controller_api::Node;
use ironclad_versioning::states::{PowerState, PowerTarget};

use super::{
    BootDevice, BootInterface, DriverError, HardwareType, InterfaceKind, ManagementInterface,
    PowerInterface,
};

/// The `fake-hardware` hardware type.
#[derive(Debug, Clone, Copy, Default)]
pub struct FakeHardware;

impl HardwareType for FakeHardware {
    fn name(&self) -> &'static str {
        "fake-hardware"
    }

    fn supported(&self, kind: InterfaceKind) -> &'static [&'static str] {
        match kind {
            InterfaceKind::Deploy => &["direct", "fake"],
            InterfaceKind::Network => &["noop"],
            InterfaceKind::Storage => &["noop", "fake"],
            _ => &["fake"],
        }
    }

    fn power(&self) -> &dyn PowerInterface {
        self
    }

    fn management(&self) -> &dyn ManagementInterface {
        self
    }

    fn boot(&self) -> &dyn BootInterface {
        self
    }
}

fn ok<'a>() -> BoxFuture<'a, Result<(), DriverError>> {
    Box::pin(future::ready(Ok(())))
}

impl PowerInterface for FakeHardware {
    fn validate<'a>(&'a self, _node: &'a Node) -> BoxFuture<'a, Result<(), DriverError>> {
        ok()
    }

    fn get_power_state<'a>(
        &'a self,
        node: &'a Node,
    ) -> BoxFuture<'a, Result<PowerState, DriverError>> {
        Box::pin(future::ready(Ok(node
            .power_state
            .unwrap_or(PowerState::Off))))
    }

    fn set_power_state<'a>(
        &'a self,
        _node: &'a Node,
        target: PowerTarget,
    ) -> BoxFuture<'a, Result<PowerState, DriverError>> {
        let reached = match target {
            PowerTarget::Off | PowerTarget::SoftOff => PowerState::Off,
            PowerTarget::On | PowerTarget::Rebooting | PowerTarget::SoftRebooting => PowerState::On,
        };
        Box::pin(future::ready(Ok(reached)))
    }
}

impl ManagementInterface for FakeHardware {
    fn set_boot_device<'a>(
        &'a self,
        _node: &'a Node,
        _device: BootDevice,
        _persistent: bool,
    ) -> BoxFuture<'a, Result<(), DriverError>> {
        ok()
    }
}

impl BootInterface for FakeHardware {
    fn prepare_ramdisk<'a>(&'a self, _node: &'a Node) -> BoxFuture<'a, Result<(), DriverError>> {
        ok()
    }

    fn clean_up_ramdisk<'a>(&'a self, _node: &'a Node) -> BoxFuture<'a, Result<(), DriverError>> {
        ok()
    }

    fn prepare_instance<'a>(&'a self, _node: &'a Node) -> BoxFuture<'a, Result<(), DriverError>> {
        ok()
    }

    fn clean_up_instance<'a>(&'a self, _node: &'a Node) -> BoxFuture<'a, Result<(), DriverError>> {
        ok()
    }
}
