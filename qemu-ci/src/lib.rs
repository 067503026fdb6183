//! Ironclad's virtual bare-metal lab.
//!
//! QEMU nodes (TCG) that look like real machines to the controller: a virtio disk,
//! virtio NICs, a serial console captured to a file, and QMP for power control.
//! The integration suites share this harness; the lab's Redfish BMCs and network
//! namespaces build on it.

pub mod qmp;
pub mod vm;

pub use qmp::{Qmp, QmpError};
pub use vm::{Boot, NetBackend, Nic, Vm, VmError, VmSpec};
