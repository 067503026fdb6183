//! Harness for Ironclad's end-to-end suites: starts the real `ironclad-controller`
//! and `ironclad-agent` binaries as processes on free loopback ports, serves images
//! over real HTTP, and stops every process it started (by PID) when dropped.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

/// The directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("cannot find the target directory from {}", exe.display()))
}

/// Path of a workspace binary; fails with a hint when it was not built.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: build it first with `cargo build --workspace --bins`",
            path.display()
        );
    }
    Ok(path)
}

/// The agent binary under test: the static musl build when `IRONCLAD_STATIC_AGENT`
/// names one (as `scripts/test` does), else the workspace's debug build.
pub fn agent_binary() -> Result<PathBuf> {
    match std::env::var_os("IRONCLAD_STATIC_AGENT") {
        Some(path) if Path::new(&path).is_file() => Ok(PathBuf::from(path)),
        _ => binary("ironclad-agent"),
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a probe socket")?;
    Ok(listener.local_addr()?.port())
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() > deadline {
            return Err(match last_error {
                Some(e) => e.context(format!("timed out after {timeout:?} waiting for {what}")),
                None => anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> Result<()> {
    wait_for(&format!("{addr} to accept connections"), timeout, || {
        Ok(
            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .ok()
                .map(|_| ()),
        )
    })
}

/// A child process that is killed (by PID) and reaped when dropped; its output is
/// kept so a failing test can show it.
pub struct Process {
    name: String,
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `command` with piped output collected in memory.
    pub fn spawn(name: &str, mut command: Command) -> Result<Self> {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let streams: Vec<Box<dyn std::io::Read + Send>> = vec![
            Box::new(child.stdout.take().context("no stdout pipe")?),
            Box::new(child.stderr.take().context("no stderr pipe")?),
        ];
        for stream in streams {
            let sink = Arc::clone(&output);
            let echo = std::env::var_os("IRONCLAD_TEST_ECHO").is_some();
            let prefix = name.to_owned();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if echo {
                        eprintln!("[{prefix}] {line}");
                    }
                    if let Ok(mut lines) = sink.lock() {
                        lines.push(line);
                    }
                }
            });
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            output,
        })
    }

    /// Everything the process has printed so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .map(|lines| lines.join("\n"))
            .unwrap_or_default()
    }

    /// Fails if the process has exited, with its output.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited early with {status}; its output:\n{}",
                self.name,
                self.output()
            );
        }
        Ok(())
    }

    /// Waits for the process to exit by itself, killing it after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let name = self.name.clone();
        let result = wait_for(&format!("{name} to exit"), timeout, || {
            Ok(self.child.try_wait()?)
        });
        if result.is_err() {
            self.stop();
        }
        result
    }

    /// Kills the process and reaps it.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!("---- output of {} ----\n{}", self.name, self.output());
        }
    }
}

/// A running controller on a fresh port.
pub struct Controller {
    /// The controller process.
    pub process: Process,
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// API client bound to this controller.
    pub api: Api,
}

impl Controller {
    /// Starts `ironclad-controller` with its SQLite database at `database`.
    pub fn start(database: &Path, extra_args: &[&str]) -> Result<Self> {
        let port = free_port()?;
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut command = Command::new(binary("ironclad-controller")?);
        command
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--database")
            .arg(format!("sqlite://{}", database.display()))
            .args(extra_args)
            .env("RUST_LOG", "info");
        let mut process = Process::spawn("controller", command)?;
        wait_for("the controller to listen", Duration::from_secs(30), || {
            process.ensure_running()?;
            Ok(TcpStream::connect(listen).ok().map(|_| ()))
        })?;
        let url = format!("http://{listen}");
        Ok(Self {
            process,
            api: Api::new(&url),
            url,
        })
    }
}

/// A running agent in host mode.
pub struct Agent {
    /// The agent process.
    pub process: Process,
    /// Where the agent listens.
    pub listen: SocketAddr,
}

impl Agent {
    /// Starts `ironclad-agent` in host mode with one file disk and one MAC.
    pub fn start(api_url: &str, disk: &Path, mac: &str, extra_args: &[&str]) -> Result<Self> {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut command = Command::new(agent_binary()?);
        command
            .arg("--api-url")
            .arg(api_url)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--advertise-host")
            .arg("127.0.0.1")
            .arg("--disk")
            .arg(disk)
            .arg("--mac")
            .arg(mac)
            .arg("--lookup-interval")
            .arg("0.2")
            .args(extra_args)
            .env("RUST_LOG", "info");
        let process = Process::spawn("agent", command)?;
        Ok(Self { process, listen })
    }
}

/// A minimal blocking client for the controller's REST API.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::blocking::Client,
}

impl Api {
    /// A client for the controller at `base`.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::blocking::Client::new(),
        }
    }

    /// Sends a request at the latest API version; returns status and JSON body (null when empty).
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("X-OpenStack-Ironic-API-Version", "latest");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().with_context(|| format!("{method} {path}"))?;
        let status = response.status().as_u16();
        let text = response.text()?;
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    /// Like [`Api::call`] but fails unless the status is 2xx.
    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let (status, value) = self.call(method, path, body)?;
        if !(200..300).contains(&status) {
            bail!("{method} {path} answered {status}: {value}");
        }
        Ok(value)
    }

    /// Requests a provision state change.
    pub fn provision(&self, node: &str, target: &str) -> Result<()> {
        self.ok(
            "PUT",
            &format!("/v1/nodes/{node}/states/provision"),
            Some(json!({ "target": target })),
        )?;
        Ok(())
    }

    /// Enrolls a `fake-hardware` node called `name` that deploys `image_source`
    /// (verified with `sha256`), with one port `mac`, and takes it to `available`;
    /// returns its UUID.
    pub fn enroll_available(
        &self,
        name: &str,
        image_source: &str,
        sha256: &str,
        mac: &str,
        timeout: Duration,
    ) -> Result<String> {
        let node = self.ok(
            "POST",
            "/v1/nodes",
            Some(json!({
                "driver": "fake-hardware",
                "name": name,
                "instance_info": {
                    "image_source": image_source,
                    "image_os_hash_algo": "sha256",
                    "image_os_hash_value": sha256,
                },
            })),
        )?;
        if node["provision_state"] != "enroll" {
            bail!(
                "a new node starts in enroll, not {}",
                node["provision_state"]
            );
        }
        let uuid = node["uuid"]
            .as_str()
            .context("the new node has no uuid")?
            .to_owned();
        self.ok(
            "POST",
            "/v1/ports",
            Some(json!({"address": mac, "node_uuid": uuid})),
        )?;
        self.provision(&uuid, "manage")?;
        self.wait_state(&uuid, "manageable", &["enroll"], timeout)?;
        self.provision(&uuid, "provide")?;
        self.wait_state(&uuid, "available", &["clean failed"], timeout)?;
        Ok(uuid)
    }

    /// Fetches one node.
    pub fn node(&self, node: &str) -> Result<Value> {
        self.ok("GET", &format!("/v1/nodes/{node}"), None)
    }

    /// Waits until the node's provision state is `state`, failing early if it
    /// lands in any of `failures`.
    pub fn wait_state(
        &self,
        node: &str,
        state: &str,
        failures: &[&str],
        timeout: Duration,
    ) -> Result<Value> {
        wait_for(&format!("node {node} to reach {state}"), timeout, || {
            let current = self.node(node)?;
            let provision_state = current["provision_state"].as_str().unwrap_or_default();
            if provision_state == state {
                return Ok(Some(current));
            }
            if failures.contains(&provision_state) {
                bail!(
                    "node {node} reached {provision_state} instead of {state}: {}",
                    current["last_error"]
                );
            }
            Ok(None)
        })
    }
}

/// Image files served over plain HTTP from a directory, on a free port.
pub struct ImageServer {
    /// Base URL, e.g. `http://127.0.0.1:40124`.
    pub url: String,
    server: Arc<tiny_http::Server>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ImageServer {
    /// Serves the files of `dir` (flat, by file name).
    pub fn start(dir: &Path) -> Result<Self> {
        let server = Arc::new(
            tiny_http::Server::http("127.0.0.1:0").map_err(|e| anyhow!("image server: {e}"))?,
        );
        let addr = server
            .server_addr()
            .to_ip()
            .context("image server has no IP address")?;
        let dir = dir.to_path_buf();
        let serving = Arc::clone(&server);
        let thread = thread::spawn(move || {
            for request in serving.incoming_requests() {
                let name = request.url().trim_start_matches('/').to_owned();
                let path = dir.join(&name);
                let response = if !name.contains('/') && path.is_file() {
                    match std::fs::File::open(&path) {
                        Ok(file) => request.respond(tiny_http::Response::from_file(file)),
                        Err(_) => request.respond(tiny_http::Response::empty(500)),
                    }
                } else {
                    request.respond(tiny_http::Response::empty(404))
                };
                let _ = response;
            }
        });
        Ok(Self {
            url: format!("http://{addr}"),
            server,
            thread: Some(thread),
        })
    }
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub use ironclad_controller::cli::demo::image::{sha256_prefix, write_sample_image};

/// Creates a sparse file of `size` bytes to act as a disk.
pub fn create_disk(path: &Path, size: u64) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.set_len(size)?;
    Ok(())
}
