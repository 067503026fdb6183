//! `ironclad demo`: a controller on its embedded SQLite database plus a demo node,
//! an agent in host mode on a file disk, deploying a generated sample image.
//!
//! Everything lives under one work directory; every process the demo starts is
//! stopped when it ends, fails, or is interrupted with Ctrl-C.

pub mod image;
mod processes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use ironclad_versioning::states::ProvisionState;
use serde_json::json;
use tokio::process::Command;

use super::client::ApiClient;
use super::CliError;
use processes::Children;

/// Arguments of `ironclad demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Directory holding `ironclad-controller` and `ironclad-agent` (default: next to this binary).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Where the demo keeps its database, sample image and disk file (recreated each run).
    #[arg(long, default_value = ".demo")]
    pub workdir: PathBuf,
    /// Address the demo's controller listens on.
    #[arg(long, default_value = "127.0.0.1:6385")]
    pub listen: SocketAddr,
    /// Size of the generated sample image, in MiB.
    #[arg(long, default_value_t = 64)]
    pub image_size_mib: u64,
    /// Stop everything once the node is active, instead of keeping the controller up.
    #[arg(long)]
    pub exit_when_done: bool,
}

/// MAC of the demo node's NIC (the agent's identity in host mode).
const DEMO_MAC: &str = "52:54:00:de:40:01";
/// Name of the demo node.
const DEMO_NODE: &str = "demo-node";
/// Size of the demo node's disk file: sparse, above the agent's 4 GiB root-disk minimum.
const DISK_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// How long one provisioning step may take before the demo gives up.
const STEP_LIMIT: Duration = Duration::from_secs(300);

fn failed(context: &str) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |error| CliError::Failed(format!("{context}: {error}"))
}

fn step(text: &str) {
    println!("==> {text}");
}

/// Runs the demo. The `--url` of the CLI is not used: the demo starts its own controller.
pub async fn run(_client: &ApiClient, args: DemoArgs) -> Result<(), CliError> {
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .map_err(failed("locating this binary"))?
            .parent()
            .map(PathBuf::from)
            .ok_or_else(|| CliError::Failed("this binary has no parent directory".into()))?,
    };
    let workdir = &args.workdir;
    std::fs::create_dir_all(workdir).map_err(failed("creating the demo directory"))?;
    let database = workdir.join("ironclad.sqlite");
    for stale in [
        "ironclad.sqlite",
        "ironclad.sqlite-wal",
        "ironclad.sqlite-shm",
    ] {
        let _ = std::fs::remove_file(workdir.join(stale));
    }

    step("generating a sample whole-disk image");
    let image_path = workdir.join("sample.raw");
    let image_size = args.image_size_mib * 1024 * 1024;
    let image_sha256 = image::write_sample_image(&image_path, image_size, 0x1c0f_fee5)
        .map_err(failed("writing the sample image"))?;
    println!(
        "    {} ({} MiB, sha256 {}…)",
        image_path.display(),
        args.image_size_mib,
        &image_sha256[..16]
    );
    let image_server = image::FileServer::start(image_path.clone())
        .await
        .map_err(failed("starting the image server"))?;
    let image_url = image_server.url();

    let disk = workdir.join("disk.img");
    let file = std::fs::File::create(&disk).map_err(failed("creating the disk file"))?;
    file.set_len(DISK_SIZE)
        .map_err(failed("sizing the disk file"))?;
    drop(file);

    let mut children = Children::default();
    let result = deploy(
        &args,
        &bin_dir,
        &database,
        &image_url,
        &image_sha256,
        &disk,
        &mut children,
    )
    .await;
    if result.is_err() || args.exit_when_done {
        children.stop_all().await;
        return result;
    }
    let base = format!("http://{}", args.listen);
    println!();
    println!(
        "The controller keeps running at {base} (database {}).",
        database.display()
    );
    println!("Try: ironclad --url {base} node list    ironclad --url {base} node show {DEMO_NODE}");
    println!("Press Ctrl-C to stop.");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        exited = children.wait_any() => println!("{exited}"),
    }
    children.stop_all().await;
    Ok(())
}

/// Starts the controller, enrolls the node, and deploys it with a host-mode agent.
async fn deploy(
    args: &DemoArgs,
    bin_dir: &std::path::Path,
    database: &std::path::Path,
    image_url: &str,
    image_sha256: &str,
    disk: &std::path::Path,
    children: &mut Children,
) -> Result<(), CliError> {
    step(&format!("starting ironclad-controller on {}", args.listen));
    let mut controller = Command::new(bin_dir.join("ironclad-controller"));
    controller
        .arg("--listen")
        .arg(args.listen.to_string())
        .arg("--database")
        .arg(format!("sqlite://{}", database.display()))
        .arg("--log-level")
        .arg("warn");
    children.spawn("controller", controller)?;
    let base = format!("http://{}", args.listen);
    let api = ApiClient::new(&base)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.get("/").await.is_err() {
        if let Some(exited) = children.exited() {
            return Err(CliError::Failed(format!(
                "{exited} (is another controller already listening on {}?)",
                args.listen
            )));
        }
        if Instant::now() > deadline {
            return Err(CliError::Failed(
                "the controller did not answer within 30 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    step("enrolling the demo node");
    let node = api
        .post(
            "/v1/nodes",
            &json!({
                "driver": "fake-hardware",
                "name": DEMO_NODE,
                "instance_info": {
                    "image_source": image_url,
                    "image_os_hash_algo": "sha256",
                    "image_os_hash_value": image_sha256,
                },
            }),
        )
        .await?;
    let uuid = node["uuid"]
        .as_str()
        .ok_or_else(|| CliError::Failed("the new node has no uuid".into()))?
        .to_owned();
    api.post(
        "/v1/ports",
        &json!({"address": DEMO_MAC, "node_uuid": uuid}),
    )
    .await?;
    println!("    node {DEMO_NODE} ({uuid}), port {DEMO_MAC}");

    let started = Instant::now();
    let path = format!("/v1/nodes/{uuid}");
    for (verb, goal) in [
        ("manage", ProvisionState::Manageable),
        ("provide", ProvisionState::Available),
    ] {
        step(verb);
        provision(&api, &uuid, verb).await?;
        watch(&api, &path, goal, children).await?;
    }
    step("deploy");
    provision(&api, &uuid, "deploy").await?;
    watch(&api, &path, ProvisionState::DeployWait, children).await?;

    step("booting the demo node's agent (host mode, file disk)");
    let agent_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(failed("finding a free port for the agent"))?
        .port();
    let mut agent = Command::new(bin_dir.join("ironclad-agent"));
    agent
        .arg("--api-url")
        .arg(&base)
        .arg("--listen")
        .arg(format!("127.0.0.1:{agent_port}"))
        .arg("--advertise-host")
        .arg("127.0.0.1")
        .arg("--disk")
        .arg(disk)
        .arg("--mac")
        .arg(DEMO_MAC)
        .env("RUST_LOG", "info");
    children.spawn("agent", agent)?;
    watch(&api, &path, ProvisionState::Active, children).await?;
    // The node powered off at the end of the deploy: so does its agent.
    children.stop("agent").await;

    let written = image::sha256_prefix(disk, args.image_size_mib * 1024 * 1024)
        .map_err(failed("reading the disk file"))?;
    if written != image_sha256 {
        return Err(CliError::Failed(format!(
            "the disk does not hold the image: sha256 {written}, expected {image_sha256}"
        )));
    }
    step(&format!(
        "deployed in {:.1} s: {} holds the image byte for byte",
        started.elapsed().as_secs_f64(),
        disk.display()
    ));
    Ok(())
}

async fn provision(api: &ApiClient, uuid: &str, verb: &str) -> Result<(), CliError> {
    api.put(
        &format!("/v1/nodes/{uuid}/states/provision"),
        &json!({ "target": verb }),
    )
    .await
    .map(|_| ())
}

/// Waits until the node's provision state is `goal`, printing each state it
/// passes through; fails on a failure state, a timeout, or a dead child process.
async fn watch(
    api: &ApiClient,
    path: &str,
    goal: ProvisionState,
    children: &mut Children,
) -> Result<(), CliError> {
    let started = Instant::now();
    let mut shown = String::new();
    loop {
        let node = api.get(path).await?;
        let state = node["provision_state"].as_str().unwrap_or("?").to_owned();
        if state != shown {
            println!("    [{:5.1} s] {state}", started.elapsed().as_secs_f64());
            shown.clone_from(&state);
        }
        if state == goal.as_str() {
            return Ok(());
        }
        if state.ends_with("failed") || state == ProvisionState::Error.as_str() {
            return Err(CliError::Failed(format!(
                "the demo node reached \"{state}\": {}",
                node["last_error"]
                    .as_str()
                    .unwrap_or("no last_error recorded")
            )));
        }
        if let Some(exited) = children.exited() {
            return Err(CliError::Failed(exited));
        }
        if started.elapsed() > STEP_LIMIT {
            return Err(CliError::Failed(format!(
                "the demo node is still \"{state}\" after {} s",
                STEP_LIMIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
