//! Ironclad's virtual bare-metal lab.
//!
//! QEMU nodes (TCG) that look like real machines to the controller: each has a
//! Redfish BMC, boots from the network through iPXE, and has disks and NICs in
//! network namespaces the lab creates. The integration suites share this harness;
//! users run it to try Ironclad without hardware. The lab arrives with its own
//! issue; this crate holds its place in the workspace.

/// How a lab node boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMethod {
    /// iPXE over the lab network.
    Network,
    /// The ramdisk ISO attached as virtual media.
    VirtualMedia,
}
