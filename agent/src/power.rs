//! Powering the machine off or rebooting it, behind the [`Power`] trait.
//!
//! In host mode [`HostPower`] only records and logs the request; the real
//! [`SystemPower`] (PID 1 only) syncs and calls `reboot(2)`.

use std::sync::Mutex;

/// What was asked of the power interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// Power the machine off.
    PowerOff,
    /// Reboot the machine.
    Reboot,
}

impl PowerAction {
    /// Human-readable name.
    pub fn describe(self) -> &'static str {
        match self {
            Self::PowerOff => "power off",
            Self::Reboot => "reboot",
        }
    }
}

/// Why a power action failed.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    /// The reboot system call failed.
    #[error("{action} failed: {source}; power the node off through its BMC")]
    Syscall {
        /// The action attempted.
        action: &'static str,
        /// The errno.
        source: nix::Error,
    },
}

/// The machine's power control.
pub trait Power: Send + Sync {
    /// Powers off or reboots. On real hardware this does not return on success.
    fn execute(&self, action: PowerAction) -> Result<(), PowerError>;
}

/// Host mode: records requests and logs them; never touches the host.
#[derive(Debug, Default)]
pub struct HostPower {
    requested: Mutex<Vec<PowerAction>>,
}

impl HostPower {
    /// A recorder with nothing recorded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every action requested so far, oldest first.
    pub fn requested(&self) -> Vec<PowerAction> {
        self.requested
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Power for HostPower {
    fn execute(&self, action: PowerAction) -> Result<(), PowerError> {
        self.requested
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(action);
        tracing::warn!(
            action = action.describe(),
            "host mode: {} requested, not executed",
            action.describe()
        );
        Ok(())
    }
}

/// PID 1: the real thing, via `reboot(2)` after syncing file systems.
#[derive(Debug, Default)]
pub struct SystemPower;

impl Power for SystemPower {
    fn execute(&self, action: PowerAction) -> Result<(), PowerError> {
        use nix::sys::reboot::{reboot, RebootMode};
        tracing::warn!("{} now", action.describe());
        nix::unistd::sync();
        let mode = match action {
            PowerAction::PowerOff => RebootMode::RB_POWER_OFF,
            PowerAction::Reboot => RebootMode::RB_AUTOBOOT,
        };
        match reboot(mode) {
            Ok(never) => match never {},
            Err(source) => Err(PowerError::Syscall {
                action: action.describe(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_power_only_records() {
        let p = HostPower::new();
        p.execute(PowerAction::PowerOff).unwrap();
        p.execute(PowerAction::Reboot).unwrap();
        assert_eq!(p.requested(), [PowerAction::PowerOff, PowerAction::Reboot]);
    }
}
