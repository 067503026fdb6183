//! Ironclad's virtual bare-metal lab.
//!
//! QEMU nodes (TCG) that look like real machines to the controller: a virtio disk,
//! virtio NICs, a serial console captured to a file, QMP for power control, a
//! Redfish BMC per node ([`bmc`]), a bridge and taps in a network namespace
//! ([`network`]), and the whole lab put together ([`lab`]). The integration
//! suites share this harness.

pub mod bmc;
pub mod lab;
pub mod network;
pub mod qmp;
pub mod vm;

pub use qmp::{Qmp, QmpError};
pub use vm::{Boot, NetBackend, Nic, Vm, VmError, VmSpec};
