//! The `deploy` extension: in-band deploy steps (`write_image`).

use std::collections::BTreeMap;
use std::sync::Arc;

use ironclad_versioning::agent_api::{AgentErrorKind, CommandError};
use ironclad_versioning::steps::{
    DeployStepResult, DeployStepsListing, HardwareManagerVersions, Step,
};
use serde_json::{json, Map, Value};

use super::standby::{validate_image, write_image};
use super::{check_kwargs, AgentContext, ExecuteError, Prepared};

/// The hardware manager providing the steps.
pub const HARDWARE_MANAGER: &str = "GenericHardwareManager";

/// The hardware manager versions, the contract between listing and executing steps.
pub fn hardware_manager_version() -> HardwareManagerVersions {
    BTreeMap::from([("generic_hardware_manager".to_owned(), "1.2".to_owned())])
}

/// The deploy steps this agent offers.
pub fn deploy_steps() -> DeployStepsListing {
    let mut write_image = Step::new("write_image", "deploy", 0);
    write_image.reboot_requested = Some(false);
    write_image.argsinfo = Some(json!({
        "image_info": {"description": "Image to write", "required": true},
        "configdrive": {"description": "Config drive to write: base64 of a gzipped ISO 9660 image, or an http(s) URL of one", "required": false}
    }));
    DeployStepsListing {
        steps: BTreeMap::from([(HARDWARE_MANAGER.to_owned(), vec![write_image])]),
        hardware_manager_version: hardware_manager_version(),
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, CommandError> {
    serde_json::to_value(v)
        .map_err(|e| CommandError::new(AgentErrorKind::CommandExecutionError, e.to_string()))
}

/// Prepares a `deploy.*` command.
pub fn prepare(
    ctx: &Arc<AgentContext>,
    command: &str,
    params: Map<String, Value>,
) -> Result<Prepared, ExecuteError> {
    let ctx = ctx.clone();
    match command {
        "get_deploy_steps" => Ok(
            match check_kwargs(command, &params, &["node", "ports"], &[]) {
                Err(e) => Prepared::failed(e),
                Ok(()) => Prepared::sync(async move { to_value(&deploy_steps()) }),
            },
        ),
        "execute_deploy_step" => {
            // IPA's signature takes **kwargs, so only missing arguments are a TypeError.
            let known: Vec<&str> = params.keys().map(String::as_str).collect();
            if let Err(e) = check_kwargs(command, &params, &["step", "node", "ports"], &known) {
                return Ok(Prepared::failed(e));
            }
            let step: Step =
                serde_json::from_value(params.get("step").cloned().unwrap_or_default())
                    .map_err(|e| ExecuteError::InvalidParams(format!("step is malformed: {e}")))?;
            let version_mismatch = match params.get("deploy_version") {
                None | Some(Value::Null) => None,
                Some(given) => {
                    let ours = serde_json::to_value(hardware_manager_version()).unwrap_or_default();
                    (given != &ours).then(|| {
                        format!("Hardware managers version mismatch: the controller listed steps with {given}, this agent has {ours}")
                    })
                }
            };
            if let Some(details) = version_mismatch {
                return Ok(Prepared::background(async move {
                    Err(CommandError::new(AgentErrorKind::VersionMismatch, details))
                }));
            }
            match (step.step.as_str(), step.interface.as_str()) {
                ("write_image", "deploy") => {
                    let args = step.args.clone().unwrap_or_default();
                    let image_info = args.get("image_info").cloned().unwrap_or(Value::Null);
                    let configdrive = args.get("configdrive").cloned().unwrap_or(Value::Null);
                    let (info, expected) = validate_image(&ctx, &image_info, &configdrive)
                        .map_err(ExecuteError::InvalidParams)?;
                    Ok(Prepared::background(async move {
                        let message = write_image(&ctx, &info, &expected).await?;
                        to_value(&DeployStepResult {
                            result: json!({ "result": format!("prepare_image: {message}") }),
                            step,
                        })
                    }))
                }
                (name, interface) => {
                    let details = format!(
                        "unknown deploy step {interface}.{name}: this agent offers only deploy.write_image; check the deploy steps requested for the node"
                    );
                    Ok(Prepared::background(async move {
                        Err(CommandError::new(AgentErrorKind::DeploymentError, details))
                    }))
                }
            }
        }
        other => Err(ExecuteError::UnknownCommand(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_matches_the_golden_shape() {
        let v = serde_json::to_value(deploy_steps()).unwrap();
        assert_eq!(
            v["deploy_steps"]["GenericHardwareManager"][0]["step"],
            "write_image"
        );
        assert_eq!(
            v["deploy_steps"]["GenericHardwareManager"][0]["priority"],
            0
        );
        assert_eq!(
            v["hardware_manager_version"]["generic_hardware_manager"],
            "1.2"
        );
    }
}
