//! Commands: the registry of extensions, the one-at-a-time executor and the
//! command history.
//!
//! A command is prepared first (name checks, parameter validation: failures are
//! HTTP errors), then run: synchronous commands inside the request, asynchronous
//! ones in a task whose result the history shows as `RUNNING` until it ends.

pub mod deploy;
pub mod log;
pub mod poll;
pub mod standby;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use ironclad_versioning::agent_api::{
    AgentErrorKind, CommandError, CommandRequest, CommandResult, CommandStatus,
};
use ironclad_versioning::ramdisk::{LookupConfig, LookupNode};
use serde_json::{json, Map, Value};
use tokio::sync::{watch, Notify};

use crate::disk::BlockDevices;
use crate::image::ImageWriter;
use crate::inventory::NicSource;
use crate::logs::LogBuffer;
use crate::power::Power;

/// What commands may use.
pub struct AgentContext {
    /// The disks.
    pub disks: Arc<dyn BlockDevices>,
    /// Power control.
    pub power: Arc<dyn Power>,
    /// The node from lookup.
    pub node: Option<LookupNode>,
    /// Policy from lookup.
    pub lookup_config: LookupConfig,
    /// The agent's captured log.
    pub logs: LogBuffer,
    /// Root of /proc and /sys.
    pub sysroot: PathBuf,
    /// Identity NICs for the inventory.
    pub nics: NicSource,
    /// Image download and write pipeline.
    pub image_writer: ImageWriter,
    /// The disk the last image was written to.
    pub written_device: Mutex<Option<PathBuf>>,
}

impl std::fmt::Debug for AgentContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentContext")
            .field("node", &self.node.as_ref().map(|n| &n.uuid))
            .field("sysroot", &self.sysroot)
            .finish_non_exhaustive()
    }
}

impl AgentContext {
    /// Whether MD5 checksums are allowed (`agent_md5_checksum_enable`, default true).
    pub fn md5_allowed(&self) -> bool {
        self.lookup_config.agent_md5_checksum_enable.unwrap_or(true)
    }
}

/// Whether a command runs inside the request or in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Runs inside the request.
    Sync,
    /// Runs in a background task.
    Async,
}

/// A command's future.
pub type CommandFuture = Pin<Box<dyn Future<Output = Result<Value, CommandError>> + Send>>;

/// A validated command, ready to run.
pub struct Prepared {
    /// Sync or async.
    pub mode: Mode,
    /// The work.
    pub run: CommandFuture,
}

impl Prepared {
    /// A synchronous command from a future.
    pub fn sync(f: impl Future<Output = Result<Value, CommandError>> + Send + 'static) -> Self {
        Self {
            mode: Mode::Sync,
            run: Box::pin(f),
        }
    }

    /// An asynchronous command from a future.
    pub fn background(
        f: impl Future<Output = Result<Value, CommandError>> + Send + 'static,
    ) -> Self {
        Self {
            mode: Mode::Async,
            run: Box::pin(f),
        }
    }

    /// A command that fails at once with `error` (e.g. a `TypeError`).
    pub fn failed(error: CommandError) -> Self {
        Self::sync(async move { Err(error) })
    }
}

/// Why a command was refused before it ran (these become HTTP errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecuteError {
    /// No dot in the name.
    #[error("Invalid command: Command name must be of the form <extension>.<name>")]
    BadName,
    /// The last command is still running.
    #[error("Agent is busy: executing command {0}")]
    Busy(String),
    /// No such extension.
    #[error("Not found: Extension with id {0} not found.")]
    UnknownExtension(String),
    /// No such command in the extension.
    #[error("Invalid command: Unknown command: {0}")]
    UnknownCommand(String),
    /// Parameter validation failed.
    #[error("Invalid command parameters: {0}")]
    InvalidParams(String),
}

impl ExecuteError {
    /// The HTTP status of the error.
    pub fn status(&self) -> u16 {
        match self {
            Self::Busy(_) => 409,
            Self::UnknownExtension(_) => 404,
            _ => 400,
        }
    }
}

/// Checks keyword arguments the way Python does: unexpected or missing ones give a `TypeError`.
pub fn check_kwargs(
    command: &str,
    params: &Map<String, Value>,
    required: &[&str],
    optional: &[&str],
) -> Result<(), CommandError> {
    if let Some(unexpected) = params
        .keys()
        .find(|k| !required.contains(&k.as_str()) && !optional.contains(&k.as_str()))
    {
        return Err(CommandError::new(
            AgentErrorKind::TypeError,
            format!("{command}() got an unexpected keyword argument '{unexpected}'"),
        ));
    }
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|r| !params.contains_key(*r))
        .collect();
    if !missing.is_empty() {
        return Err(CommandError::new(
            AgentErrorKind::TypeError,
            format!(
                "{command}() missing {} required argument(s): '{}'",
                missing.len(),
                missing.join("', '")
            ),
        ));
    }
    Ok(())
}

/// Wraps a command's return value the way IPA does: `null` stays null, a bare
/// string becomes `{"result": s}` (sync) or `{"result": "<name>: s"}` (async).
pub fn wrap_result(value: Value, mode: Mode, command_name: &str) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(match mode {
            Mode::Sync => json!({ "result": s }),
            Mode::Async => json!({ "result": format!("{command_name}: {s}") }),
        }),
        other => Some(other),
    }
}

fn finished(
    id: &str,
    name: &str,
    mode: Mode,
    outcome: Result<Value, CommandError>,
) -> CommandResult {
    match outcome {
        Ok(value) => CommandResult {
            id: id.to_owned(),
            command_name: name.to_owned(),
            command_status: CommandStatus::Succeeded,
            command_error: None,
            command_result: wrap_result(value, mode, name),
        },
        Err(error) => CommandResult {
            id: id.to_owned(),
            command_name: name.to_owned(),
            command_status: if error.error_type == AgentErrorKind::VersionMismatch.type_name() {
                CommandStatus::CleanVersionMismatch
            } else {
                CommandStatus::Failed
            },
            command_error: Some(error),
            command_result: None,
        },
    }
}

/// Looks up and validates a command in the registry.
pub fn prepare(
    ctx: &Arc<AgentContext>,
    extension: &str,
    command: &str,
    params: Map<String, Value>,
) -> Result<Prepared, ExecuteError> {
    match extension {
        "standby" => standby::prepare(ctx, command, params),
        "deploy" => deploy::prepare(ctx, command, params),
        "poll" => poll::prepare(ctx, command, params),
        "log" => log::prepare(ctx, command, params),
        other => Err(ExecuteError::UnknownExtension(other.to_owned())),
    }
}

/// Runs commands one at a time and keeps their history.
pub struct CommandExecutor {
    ctx: Arc<AgentContext>,
    history: Mutex<Vec<Arc<watch::Sender<CommandResult>>>>,
    exec_lock: tokio::sync::Mutex<()>,
    async_done: Arc<Notify>,
}

impl std::fmt::Debug for CommandExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandExecutor").finish_non_exhaustive()
    }
}

impl CommandExecutor {
    /// An executor; `async_done` is notified whenever an asynchronous command ends.
    pub fn new(ctx: Arc<AgentContext>, async_done: Arc<Notify>) -> Self {
        Self {
            ctx,
            history: Mutex::new(Vec::new()),
            exec_lock: tokio::sync::Mutex::new(()),
            async_done,
        }
    }

    fn history(&self) -> std::sync::MutexGuard<'_, Vec<Arc<watch::Sender<CommandResult>>>> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, result: CommandResult) -> Arc<watch::Sender<CommandResult>> {
        let (tx, _) = watch::channel(result);
        let tx = Arc::new(tx);
        self.history().push(tx.clone());
        tx
    }

    /// Every command so far, oldest first.
    pub fn list(&self) -> Vec<CommandResult> {
        let list: Vec<CommandResult> = self
            .history()
            .iter()
            .map(|tx| tx.borrow().clone())
            .collect();
        list.into_iter().map(|r| self.with_progress(r)).collect()
    }

    /// Adds the image-write progress to a running command's result (an
    /// additive extension: IPA reports `null` while a command runs).
    fn with_progress(&self, mut result: CommandResult) -> CommandResult {
        if result.command_status == CommandStatus::Running && result.command_result.is_none() {
            if let Some(progress) = self.ctx.image_writer.progress() {
                let running = ironclad_versioning::agent_api::RunningCommandResult { progress };
                result.command_result = serde_json::to_value(running).ok();
            }
        }
        result
    }

    /// One command by id; with `wait`, once it has finished.
    pub async fn get(&self, id: &str, wait: bool) -> Option<CommandResult> {
        let tx = self
            .history()
            .iter()
            .find(|tx| tx.borrow().id == id)
            .cloned()?;
        if wait {
            let mut rx = tx.subscribe();
            let waited = rx
                .wait_for(|r| r.command_status.is_done())
                .await
                .map(|r| r.clone());
            if let Ok(r) = waited {
                return Some(r);
            }
        }
        let current = tx.borrow().clone();
        Some(self.with_progress(current))
    }

    /// Executes a command; with `wait`, asynchronous commands are awaited too.
    pub async fn execute(
        &self,
        request: CommandRequest,
        wait: bool,
    ) -> Result<CommandResult, ExecuteError> {
        let guard = self.exec_lock.lock().await;
        let (extension, command) = request.split_name().ok_or(ExecuteError::BadName)?;
        let (extension, command) = (extension.to_owned(), command.to_owned());
        if let Some(last) = self.history().last() {
            let last = last.borrow();
            if !last.command_status.is_done() {
                return Err(ExecuteError::Busy(last.command_name.clone()));
            }
        }
        let prepared = prepare(&self.ctx, &extension, &command, request.params)?;
        let id = uuid::Uuid::new_v4().to_string();
        match prepared.mode {
            Mode::Sync => {
                tracing::info!("executing synchronous command {extension}.{command} ({id})");
                let outcome = prepared.run.await;
                let result = finished(&id, &command, Mode::Sync, outcome);
                log_outcome(&extension, &result);
                self.record(result.clone());
                drop(guard);
                Ok(result)
            }
            Mode::Async => {
                tracing::info!("starting asynchronous command {extension}.{command} ({id})");
                let tx = self.record(CommandResult {
                    id: id.clone(),
                    command_name: command.clone(),
                    command_status: CommandStatus::Running,
                    command_error: None,
                    command_result: None,
                });
                let mut rx = tx.subscribe();
                let done = self.async_done.clone();
                let run = prepared.run;
                tokio::spawn(async move {
                    let outcome = match tokio::spawn(run).await {
                        Ok(outcome) => outcome,
                        Err(e) => Err(CommandError::new(
                            AgentErrorKind::CommandExecutionError,
                            format!("the command crashed: {e}"),
                        )),
                    };
                    let result = finished(&id, &command, Mode::Async, outcome);
                    log_outcome(&extension, &result);
                    tx.send_replace(result);
                    done.notify_one();
                });
                drop(guard);
                if wait {
                    let waited = rx
                        .wait_for(|r| r.command_status.is_done())
                        .await
                        .map(|r| r.clone());
                    if let Ok(r) = waited {
                        return Ok(r);
                    }
                }
                let current = rx.borrow().clone();
                Ok(current)
            }
        }
    }
}

fn log_outcome(extension: &str, result: &CommandResult) {
    match &result.command_error {
        None => tracing::info!(
            "command {extension}.{} ({}) succeeded",
            result.command_name,
            result.id
        ),
        Some(e) => tracing::error!(
            "command {extension}.{} ({}) failed: {}: {}",
            result.command_name,
            result.id,
            e.error_type,
            e.details
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_wrapped_like_ipa() {
        assert_eq!(wrap_result(Value::Null, Mode::Sync, "sync"), None);
        assert_eq!(
            wrap_result(json!("done"), Mode::Sync, "x"),
            Some(json!({"result": "done"}))
        );
        assert_eq!(
            wrap_result(json!("done"), Mode::Async, "prepare_image"),
            Some(json!({"result": "prepare_image: done"}))
        );
        assert_eq!(
            wrap_result(json!({"a": 1}), Mode::Async, "x"),
            Some(json!({"a": 1}))
        );
    }

    #[test]
    fn kwargs_are_checked_like_python() {
        let params = json!({"node": {}, "ports": [], "extra": 1});
        let params = params.as_object().unwrap();
        let err = check_kwargs("get_deploy_steps", params, &["node", "ports"], &[]).unwrap_err();
        assert_eq!(err.error_type, "TypeError");
        assert!(err.details.contains("'extra'"));
        let params = json!({"node": {}});
        let err =
            check_kwargs("f", params.as_object().unwrap(), &["node", "ports"], &[]).unwrap_err();
        assert!(err.details.contains("missing"));
        assert!(check_kwargs("f", &Map::new(), &[], &["x"]).is_ok());
    }

    #[test]
    fn version_mismatch_has_its_own_status() {
        let r = finished(
            "i",
            "execute_deploy_step",
            Mode::Async,
            Err(CommandError::new(AgentErrorKind::VersionMismatch, "x")),
        );
        assert_eq!(r.command_status, CommandStatus::CleanVersionMismatch);
    }
}
