//! Step dicts and the messages of `{clean,deploy,service}.{get,execute}_*_steps`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One clean, deploy or service step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Step name, e.g. `write_image`.
    pub step: String,
    /// Ordering priority; 0 means "only when asked for".
    pub priority: i64,
    /// Driver interface the step belongs to, e.g. `deploy`.
    pub interface: String,
    /// Whether the node must reboot after the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_requested: Option<bool>,
    /// Whether the step may be aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abortable: Option<bool>,
    /// Description of the step's arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argsinfo: Option<Value>,
    /// Arguments given to the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Map<String, Value>>,
    /// Whether the step needs the ramdisk running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_ramdisk: Option<bool>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Hardware manager name → version, the contract of a step listing.
pub type HardwareManagerVersions = BTreeMap<String, String>;

macro_rules! step_messages {
    ($(#[$listing_doc:meta])* $listing:ident, $(#[$exec_doc:meta])* $exec:ident,
     $steps_key:literal, $result_key:literal, $step_key:literal) => {
        $(#[$listing_doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct $listing {
            /// Steps grouped by the hardware manager that provides them.
            #[serde(rename = $steps_key)]
            pub steps: BTreeMap<String, Vec<Step>>,
            /// Versions of the hardware managers that produced the list.
            pub hardware_manager_version: HardwareManagerVersions,
        }

        $(#[$exec_doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct $exec {
            /// What the step returned.
            #[serde(rename = $result_key)]
            pub result: Value,
            /// The step as it was received.
            #[serde(rename = $step_key)]
            pub step: Step,
        }
    };
}

step_messages!(
    /// Result of `deploy.get_deploy_steps`.
    DeployStepsListing,
    /// Result of `deploy.execute_deploy_step`.
    DeployStepResult,
    "deploy_steps", "deploy_result", "deploy_step"
);
step_messages!(
    /// Result of `clean.get_clean_steps`.
    CleanStepsListing,
    /// Result of `clean.execute_clean_step`.
    CleanStepResult,
    "clean_steps", "clean_result", "clean_step"
);
step_messages!(
    /// Result of `service.get_service_steps`.
    ServiceStepsListing,
    /// Result of `service.execute_service_step`.
    ServiceStepResult,
    "service_steps", "service_result", "service_step"
);

impl Step {
    /// A step with no optional fields set.
    pub fn new(step: &str, interface: &str, priority: i64) -> Self {
        Self {
            step: step.to_owned(),
            priority,
            interface: interface.to_owned(),
            reboot_requested: None,
            abortable: None,
            argsinfo: None,
            args: None,
            requires_ramdisk: None,
            extra: Map::new(),
        }
    }
}
