//! Node states and the verbs that move nodes between them, with Ironic's names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownName(other.to_owned())),
                }
            }
        }
    };
}

/// A name that is not a known state or verb.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown name {0:?}")]
pub struct UnknownName(pub String);

wire_enum!(
    /// Provision states, named as Ironic names them.
    ProvisionState {
        /// Registered, credentials not yet verified.
        Enroll = "enroll",
        /// Verifying BMC credentials.
        Verifying = "verifying",
        /// Under the operator's control.
        Manageable = "manageable",
        /// Ready to deploy.
        Available = "available",
        /// Deployed.
        Active = "active",
        /// Deploying.
        Deploying = "deploying",
        /// Waiting for the agent during deploy.
        DeployWait = "wait call-back",
        /// Deploy paused by a step.
        DeployHold = "deploy hold",
        /// Deploy failed.
        DeployFailed = "deploy failed",
        /// Tearing down an instance.
        Deleting = "deleting",
        /// Cleaning.
        Cleaning = "cleaning",
        /// Waiting for the agent during cleaning.
        CleanWait = "clean wait",
        /// Cleaning paused by a step.
        CleanHold = "clean hold",
        /// Cleaning failed.
        CleanFailed = "clean failed",
        /// Inspecting.
        Inspecting = "inspecting",
        /// Waiting for the agent during inspection.
        InspectWait = "inspect wait",
        /// Inspection failed.
        InspectFailed = "inspect failed",
        /// Adopting an already deployed node.
        Adopting = "adopting",
        /// Adoption failed.
        AdoptFailed = "adopt failed",
        /// Booting the rescue ramdisk.
        Rescuing = "rescuing",
        /// Waiting for the rescue agent.
        RescueWait = "rescue wait",
        /// In rescue mode.
        Rescue = "rescue",
        /// Rescue failed.
        RescueFailed = "rescue failed",
        /// Leaving rescue mode.
        Unrescuing = "unrescuing",
        /// Leaving rescue mode failed.
        UnrescueFailed = "unrescue failed",
        /// Servicing an active node.
        Servicing = "servicing",
        /// Waiting for the agent during servicing.
        ServiceWait = "service wait",
        /// Servicing paused by a step.
        ServiceHold = "service hold",
        /// Servicing failed.
        ServiceFailed = "service failed",
        /// Teardown failed; needs the operator.
        Error = "error",
    }
);

impl ProvisionState {
    /// States in which the ramdisk lookup finds the node.
    pub fn allows_lookup(self) -> bool {
        matches!(
            self,
            Self::Deploying
                | Self::DeployWait
                | Self::Cleaning
                | Self::CleanWait
                | Self::Inspecting
                | Self::InspectWait
                | Self::Rescuing
                | Self::RescueWait
                | Self::ServiceWait
        )
    }

    /// States a node rests in until asked to move.
    pub fn is_stable(self) -> bool {
        matches!(
            self,
            Self::Enroll
                | Self::Manageable
                | Self::Available
                | Self::Active
                | Self::Error
                | Self::Rescue
        )
    }
}

wire_enum!(
    /// Targets of `PUT /v1/nodes/{id}/states/provision`.
    ProvisionTarget {
        /// Take the node under management.
        Manage = "manage",
        /// Make the node available (cleans first).
        Provide = "provide",
        /// Inspect the hardware.
        Inspect = "inspect",
        /// Manual cleaning.
        Clean = "clean",
        /// Deploy (alias of `active`).
        Deploy = "deploy",
        /// Deploy.
        Active = "active",
        /// Redeploy.
        Rebuild = "rebuild",
        /// Tear down (alias `undeploy`).
        Deleted = "deleted",
        /// Tear down.
        Undeploy = "undeploy",
        /// Boot the rescue ramdisk.
        Rescue = "rescue",
        /// Leave rescue.
        Unrescue = "unrescue",
        /// Abort the current wait.
        Abort = "abort",
        /// Adopt a deployed node.
        Adopt = "adopt",
        /// Resume a held operation.
        Unhold = "unhold",
        /// Service an active node.
        Service = "service",
    }
);

wire_enum!(
    /// Power states of a node.
    PowerState {
        /// Powered on.
        On = "power on",
        /// Powered off.
        Off = "power off",
        /// Error reading or changing power.
        Error = "error",
    }
);

wire_enum!(
    /// Targets of `PUT /v1/nodes/{id}/states/power`.
    PowerTarget {
        /// Power on.
        On = "power on",
        /// Power off.
        Off = "power off",
        /// Hard reboot.
        Rebooting = "rebooting",
        /// Graceful power off.
        SoftOff = "soft power off",
        /// Graceful reboot.
        SoftRebooting = "soft rebooting",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in ProvisionState::ALL {
            assert_eq!(state.as_str().parse::<ProvisionState>(), Ok(*state));
            let json = serde_json::to_string(state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
        assert_eq!(ProvisionState::DeployWait.as_str(), "wait call-back");
        assert!("waiting".parse::<ProvisionState>().is_err());
    }
}
