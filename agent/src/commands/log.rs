//! The `log` extension: the agent's own log as a base64 tar.gz.

use std::sync::Arc;

use base64::Engine as _;
use ironclad_versioning::agent_api::{AgentErrorKind, CommandError};
use serde_json::{json, Map, Value};

use super::{check_kwargs, AgentContext, ExecuteError, Prepared};

/// Name of the log file inside the archive.
pub const LOG_FILE_NAME: &str = "ironclad-agent.log";

/// Prepares a `log.*` command.
pub fn prepare(
    ctx: &Arc<AgentContext>,
    command: &str,
    params: Map<String, Value>,
) -> Result<Prepared, ExecuteError> {
    let ctx = ctx.clone();
    match command {
        "collect_system_logs" => Ok(match check_kwargs(command, &params, &[], &[]) {
            Err(e) => Prepared::failed(e),
            Ok(()) => Prepared::sync(async move {
                let log = ctx.logs.snapshot();
                let cmdline = std::fs::read(ctx.sysroot.join("proc/cmdline")).unwrap_or_default();
                let archive = crate::logs::tar_gz(&[(LOG_FILE_NAME, &log), ("cmdline", &cmdline)])
                    .map_err(|e| {
                        CommandError::new(AgentErrorKind::CommandExecutionError, e.to_string())
                    })?;
                Ok(json!({
                    "system_logs": base64::engine::general_purpose::STANDARD.encode(archive)
                }))
            }),
        }),
        other => Err(ExecuteError::UnknownCommand(other.to_owned())),
    }
}
