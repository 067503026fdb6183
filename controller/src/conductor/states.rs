//! The provision state machine: a transition table keyed by state and event.
//!
//! The names are Ironic's (see `ironic/common/state_machine.py`). Only the
//! transitions implemented so far are listed; later issues (inspection, manual
//! cleaning, rescue, servicing, adoption) add rows here rather than `if`s elsewhere.

use ironclad_versioning::microversion::ApiVersion;
use ironclad_versioning::states::{ProvisionState, ProvisionTarget};

use ProvisionState as S;

/// Events that move a node between provision states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Take the node under management (`manage`).
    Manage,
    /// Make the node available (`provide`).
    Provide,
    /// Deploy (`active`/`deploy`).
    Deploy,
    /// Redeploy (`rebuild`).
    Rebuild,
    /// Tear down (`deleted`/`undeploy`).
    Delete,
    /// The current operation finished.
    Done,
    /// The current operation failed.
    Fail,
    /// The current operation waits for the agent.
    Wait,
    /// The agent called back; the operation goes on.
    Resume,
    /// Teardown finished; clean the node.
    Clean,
    /// Inspect the hardware (`inspect`).
    Inspect,
}

impl Event {
    /// The verb as Ironic names it in messages.
    pub fn verb(self) -> &'static str {
        match self {
            Self::Manage => "manage",
            Self::Provide => "provide",
            Self::Deploy => "deploy",
            Self::Rebuild => "rebuild",
            Self::Delete => "deleted",
            Self::Done => "done",
            Self::Fail => "fail",
            Self::Wait => "wait",
            Self::Resume => "resume",
            Self::Clean => "clean",
            Self::Inspect => "inspect",
        }
    }
}

/// (from, event, to).
const TRANSITIONS: &[(ProvisionState, Event, ProvisionState)] = &[
    // Enrollment and management.
    (S::Enroll, Event::Manage, S::Verifying),
    (S::Verifying, Event::Done, S::Manageable),
    (S::Verifying, Event::Fail, S::Enroll),
    (S::Available, Event::Manage, S::Manageable),
    (S::CleanFailed, Event::Manage, S::Manageable),
    (S::InspectFailed, Event::Manage, S::Manageable),
    (S::AdoptFailed, Event::Manage, S::Manageable),
    // Out-of-band inspection.
    (S::Manageable, Event::Inspect, S::Inspecting),
    (S::InspectFailed, Event::Inspect, S::Inspecting),
    (S::Inspecting, Event::Done, S::Manageable),
    (S::Inspecting, Event::Fail, S::InspectFailed),
    // Automated cleaning (a pass-through until cleaning is implemented).
    (S::Manageable, Event::Provide, S::Cleaning),
    (S::Cleaning, Event::Done, S::Available),
    (S::Cleaning, Event::Fail, S::CleanFailed),
    // Deployment.
    (S::Available, Event::Deploy, S::Deploying),
    (S::DeployFailed, Event::Deploy, S::Deploying),
    (S::DeployFailed, Event::Rebuild, S::Deploying),
    (S::Active, Event::Rebuild, S::Deploying),
    (S::Error, Event::Rebuild, S::Deploying),
    (S::Deploying, Event::Wait, S::DeployWait),
    (S::DeployWait, Event::Resume, S::Deploying),
    (S::Deploying, Event::Done, S::Active),
    (S::Deploying, Event::Fail, S::DeployFailed),
    (S::DeployWait, Event::Fail, S::DeployFailed),
    // Teardown.
    (S::Active, Event::Delete, S::Deleting),
    (S::DeployWait, Event::Delete, S::Deleting),
    (S::DeployFailed, Event::Delete, S::Deleting),
    (S::Error, Event::Delete, S::Deleting),
    (S::Deleting, Event::Clean, S::Cleaning),
    (S::Deleting, Event::Fail, S::Error),
];

/// The state `event` moves a node in `from` to, or `None` when not allowed.
pub fn next_state(from: ProvisionState, event: Event) -> Option<ProvisionState> {
    TRANSITIONS
        .iter()
        .find(|(f, e, _)| *f == from && *e == event)
        .map(|(_, _, to)| *to)
}

/// The target a node in `state` is heading for (`target_provision_state`).
pub fn target_of(state: ProvisionState) -> Option<ProvisionState> {
    match state {
        S::Deploying | S::DeployWait | S::DeployHold | S::DeployFailed => Some(S::Active),
        S::Cleaning | S::CleanWait | S::CleanHold | S::CleanFailed | S::Deleting => {
            Some(S::Available)
        }
        S::Verifying | S::Inspecting | S::InspectWait | S::InspectFailed => Some(S::Manageable),
        _ => None,
    }
}

/// States that cannot survive a controller restart: found at start, they fail.
pub fn fails_on_restart(state: ProvisionState) -> bool {
    matches!(
        state,
        S::Deploying | S::Cleaning | S::Verifying | S::Deleting | S::Inspecting
    )
}

/// States in which a node may be PATCHed besides the stable ones (Ironic's UPDATE_ALLOWED_STATES).
pub fn allows_update(state: ProvisionState) -> bool {
    state.is_stable()
        || matches!(
            state,
            S::DeployFailed
                | S::InspectFailed
                | S::InspectWait
                | S::CleanFailed
                | S::Verifying
                | S::AdoptFailed
                | S::RescueFailed
                | S::UnrescueFailed
                | S::ServiceHold
                | S::ServiceFailed
        )
}

/// States in which a node may be deleted.
pub fn allows_delete(state: ProvisionState) -> bool {
    matches!(
        state,
        S::Enroll | S::Manageable | S::Available | S::AdoptFailed
    )
}

/// Why a provision target cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The target needs a newer API version (HTTP 406).
    #[error("The \"{target}\" provision state target requires API version {needs} or newer.")]
    TooNew {
        /// The target.
        target: ProvisionTarget,
        /// The version it needs.
        needs: ApiVersion,
    },
    /// The target is valid in Ironic but not implemented here yet (HTTP 400).
    #[error("The \"{0}\" provision state target is not supported by Ironclad yet.")]
    NotSupported(ProvisionTarget),
}

/// The event of a `PUT /states/provision` target, checking its version gate.
pub fn event_for_target(
    target: ProvisionTarget,
    version: ApiVersion,
) -> Result<Event, TargetError> {
    use ProvisionTarget as T;
    let (event, needs) = match target {
        T::Manage => (Event::Manage, ApiVersion::new(1, 4)),
        T::Provide => (Event::Provide, ApiVersion::new(1, 4)),
        T::Inspect => (Event::Inspect, ApiVersion::new(1, 6)),
        T::Active => (Event::Deploy, ApiVersion::new(1, 1)),
        T::Deploy => (Event::Deploy, ApiVersion::new(1, 73)),
        T::Rebuild => (Event::Rebuild, ApiVersion::new(1, 1)),
        T::Deleted => (Event::Delete, ApiVersion::new(1, 1)),
        T::Undeploy => (Event::Delete, ApiVersion::new(1, 73)),
        other => return Err(TargetError::NotSupported(other)),
    };
    if version < needs {
        return Err(TargetError::TooNew { target, needs });
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn happy_path_reaches_active_and_back() {
        let mut state = S::Enroll;
        for event in [
            Event::Manage,
            Event::Done,
            Event::Provide,
            Event::Done,
            Event::Deploy,
            Event::Wait,
            Event::Resume,
            Event::Done,
            Event::Delete,
            Event::Clean,
            Event::Done,
        ] {
            state =
                next_state(state, event).unwrap_or_else(|| panic!("{event:?} refused in {state}"));
        }
        assert_eq!(state, S::Available);
    }

    #[test]
    fn invalid_verbs_are_refused() {
        assert_eq!(next_state(S::Enroll, Event::Deploy), None);
        assert_eq!(next_state(S::Manageable, Event::Deploy), None);
        assert_eq!(next_state(S::Available, Event::Delete), None);
        assert_eq!(next_state(S::Active, Event::Deploy), None);
    }

    #[test]
    fn failures_land_in_failure_states() {
        assert_eq!(
            next_state(S::DeployWait, Event::Fail),
            Some(S::DeployFailed)
        );
        assert_eq!(next_state(S::Verifying, Event::Fail), Some(S::Enroll));
        assert_eq!(next_state(S::Deleting, Event::Fail), Some(S::Error));
        assert_eq!(
            next_state(S::DeployFailed, Event::Deploy),
            Some(S::Deploying)
        );
    }

    #[test]
    fn targets_follow_ironic() {
        assert_eq!(target_of(S::DeployWait), Some(S::Active));
        assert_eq!(target_of(S::Deleting), Some(S::Available));
        assert_eq!(target_of(S::Verifying), Some(S::Manageable));
        assert_eq!(target_of(S::Active), None);
    }

    #[test]
    fn aliases_need_1_73() {
        let old = ApiVersion::new(1, 72);
        assert!(matches!(
            event_for_target(ProvisionTarget::Deploy, old),
            Err(TargetError::TooNew { .. })
        ));
        assert_eq!(
            event_for_target(ProvisionTarget::Active, old),
            Ok(Event::Deploy)
        );
        assert_eq!(
            event_for_target(ProvisionTarget::Undeploy, ApiVersion::new(1, 73)),
            Ok(Event::Delete)
        );
        assert!(matches!(
            event_for_target(ProvisionTarget::Manage, ApiVersion::new(1, 3)),
            Err(TargetError::TooNew { .. })
        ));
        assert!(matches!(
            event_for_target(ProvisionTarget::Rescue, ApiVersion::new(1, 90)),
            Err(TargetError::NotSupported(_))
        ));
    }
}
