//! The `fake` power, management, boot and inspect interfaces: every call succeeds
//! at once without touching anything.
//!
//! Power "changes" are simply reported back as reached; the conductor records
//! them in the node. This is what Ironic's own local development setup uses, and
//! it lets a real agent run against a virtual machine that the tests power by hand.

use std::time::Duration;

use ironclad_versioning::controller_api::Node;
use ironclad_versioning::states::{PowerState, PowerTarget};

use super::{
    BootDevice, BootInterface, BootMode, BootTask, DriverFuture, InspectInterface,
    InspectedHardware, Interface, ManagementInterface, PowerInterface,
};

/// The `fake` implementation of power, management, boot and inspect.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fake;

use super::ready_ok as ok;

impl Interface for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn validate<'a>(&'a self, _node: &'a Node) -> DriverFuture<'a, ()> {
        ok(())
    }
}

impl PowerInterface for Fake {
    fn get_power_state<'a>(&'a self, node: &'a Node) -> DriverFuture<'a, PowerState> {
        ok(node.power_state.unwrap_or(PowerState::Off))
    }

    fn set_power_state<'a>(
        &'a self,
        _node: &'a Node,
        target: PowerTarget,
        _timeout: Option<Duration>,
    ) -> DriverFuture<'a, PowerState> {
        let reached = match target {
            PowerTarget::Off | PowerTarget::SoftOff => PowerState::Off,
            PowerTarget::On | PowerTarget::Rebooting | PowerTarget::SoftRebooting => PowerState::On,
        };
        ok(reached)
    }
}

impl ManagementInterface for Fake {
    fn set_boot_device<'a>(
        &'a self,
        _node: &'a Node,
        _device: BootDevice,
        _persistent: bool,
    ) -> DriverFuture<'a, ()> {
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

impl BootInterface for Fake {
    fn prepare_ramdisk<'a>(&'a self, _task: BootTask<'a>) -> DriverFuture<'a, ()> {
        ok(())
    }

    fn clean_up_ramdisk<'a>(&'a self, _task: BootTask<'a>) -> DriverFuture<'a, ()> {
        ok(())
    }

    fn prepare_instance<'a>(&'a self, _task: BootTask<'a>) -> DriverFuture<'a, ()> {
        ok(())
    }

    fn clean_up_instance<'a>(&'a self, _task: BootTask<'a>) -> DriverFuture<'a, ()> {
        ok(())
    }
}

impl InspectInterface for Fake {
    fn inspect_hardware<'a>(&'a self, _node: &'a Node) -> DriverFuture<'a, InspectedHardware> {
        ok(InspectedHardware::default())
    }
}
