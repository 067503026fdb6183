//! The `poll` extension: the hardware inventory.

use std::sync::Arc;

use ironclad_versioning::agent_api::{AgentErrorKind, CommandError};
use serde_json::{Map, Value};

use super::{check_kwargs, AgentContext, ExecuteError, Prepared};

/// Prepares a `poll.*` command.
pub fn prepare(
    ctx: &Arc<AgentContext>,
    command: &str,
    params: Map<String, Value>,
) -> Result<Prepared, ExecuteError> {
    let ctx = ctx.clone();
    match command {
        "get_hardware_info" => Ok(match check_kwargs(command, &params, &[], &[]) {
            Err(e) => Prepared::failed(e),
            Ok(()) => Prepared::sync(async move {
                let err = |e: String| CommandError::new(AgentErrorKind::CommandExecutionError, e);
                let inventory = tokio::task::spawn_blocking(move || {
                    crate::inventory::collect(&ctx.sysroot, ctx.disks.as_ref(), &ctx.nics)
                })
                .await
                .map_err(|e| err(e.to_string()))?
                .map_err(|e| err(e.to_string()))?;
                serde_json::to_value(inventory).map_err(|e| err(e.to_string()))
            }),
        }),
        other => Err(ExecuteError::UnknownCommand(other.to_owned())),
    }
}
