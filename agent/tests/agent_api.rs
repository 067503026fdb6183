//! The agent binary in host mode, driven over real sockets: API errors, auth,
//! commands, image writing, heartbeats and auto-TLS.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;

use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

fn image_info(url: &str, checksum: &str) -> Value {
    json!({
        "id": "test-image",
        "urls": [url],
        "os_hash_algo": "sha256",
        "os_hash_value": checksum,
        "disk_format": "raw",
        "stream_raw_images": true
    })
}

fn first_mib(path: &std::path::Path) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    f.read_exact(&mut buf).unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_api_errors_commands_and_logs() {
    let controller = FakeController::start(Some(TOKEN), None).await;
    let dir = tempfile::tempdir().unwrap();
    let disk = sparse_disk(dir.path(), 5 << 30);
    let mut agent = Agent::spawn(&controller.url, &disk, "127.0.0.1:0", &["--no-auto-tls"]);
    let hb = controller.wait_heartbeats(1, &mut agent).await.remove(0);

    // Heartbeat contents, plain HTTP callback without a certificate.
    assert_eq!(hb.node, NODE_UUID);
    assert!(
        hb.body.callback_url.starts_with("http://127.0.0.1:"),
        "{:?}",
        hb.body
    );
    assert_eq!(hb.body.agent_token.as_deref(), Some(TOKEN));
    assert_eq!(
        hb.body.agent_version.as_deref(),
        Some(ironclad_versioning::IRONCLAD_VERSION)
    );
    assert!(hb.body.agent_verify_ca.is_none());
    assert_eq!(hb.version_header.as_deref(), Some("1.68"));
    let (query, lookup_version) = controller.lookups().remove(0);
    assert!(query.contains("addresses="), "{query}");
    assert_eq!(lookup_version.as_deref(), Some("1.62"));

    let api = AgentApi::new(&hb.body.callback_url, None);

    // Open endpoints.
    let (s, root) = api.get("/").await;
    assert_eq!(s, 200);
    assert_eq!(root["name"], "OpenStack Ironic Python Agent API");
    for path in ["/v1/", "/v1"] {
        let (s, v1) = api.get(path).await;
        assert_eq!(s, 200, "{path}");
        assert_eq!(v1["id"], "v1");
    }
    for path in ["/v1/status", "/status"] {
        let (s, st) = api.get(path).await;
        assert_eq!(s, 200);
        assert!(st["started_at"].as_f64().unwrap() > 0.0);
        assert_eq!(st["version"], ironclad_versioning::IRONCLAD_VERSION);
    }

    // Token checks on every command endpoint and alias.
    for path in [
        "/v1/commands/",
        "/v1/commands",
        "/commands/",
        "/commands",
        "/v1/commands/?agent_token=wrong",
    ] {
        let (s, body) = api.get(path).await;
        assert_eq!(s, 401, "{path}");
        assert_eq!(
            body,
            json!({"faultcode": "Client", "faultstring": "401 Unauthorized: Token invalid."})
        );
    }
    let (s, _) = api
        .post_raw("/v1/commands/", r#"{"name": "standby.sync", "params": {}}"#)
        .await;
    assert_eq!(s, 401);
    let (s, list) = api.get(&format!("/commands?agent_token={TOKEN}")).await;
    assert_eq!((s, list), (200, json!({"commands": []})));

    // Error bodies.
    let tok = format!("?agent_token={TOKEN}");
    let cases: Vec<(&str, u16, &str)> = vec![
        (
            "{nope",
            400,
            "400 Bad Request: Failed to decode JSON object: ",
        ),
        (
            r#"{"name": "standby.sync"}"#,
            400,
            "400 Bad Request: Missing or invalid name or params",
        ),
        (
            r#"{"name": "standby.sync", "params": [1]}"#,
            400,
            "400 Bad Request: Missing or invalid name or params",
        ),
        (
            r#"{"name": "sync", "params": {}}"#,
            400,
            "Invalid command: Command name must be of the form <extension>.<name>",
        ),
        (
            r#"{"name": "nosuch.sync", "params": {}}"#,
            404,
            "Not found: Extension with id nosuch not found.",
        ),
        (
            r#"{"name": "standby.nosuch", "params": {}}"#,
            400,
            "Invalid command: Unknown command: nosuch",
        ),
        (
            r#"{"name": "standby.prepare_image", "params": {"image_info": {"id": "x", "urls": []}}}"#,
            400,
            "Invalid command parameters: ",
        ),
    ];
    for (body, status, prefix) in cases {
        let (s, fault) = api.post_raw(&format!("/v1/commands/{tok}"), body).await;
        assert_eq!(s, status, "{body}: {fault}");
        assert_eq!(fault["faultcode"], "Client");
        assert!(
            fault["faultstring"].as_str().unwrap().starts_with(prefix),
            "{body}: {fault}"
        );
    }
    let (s, fault) = api.get(&format!("/v1/commands/nope{tok}")).await;
    assert_eq!(s, 404);
    assert_eq!(
        fault["faultstring"],
        "Not found: Command Result with id nope not found."
    );
    let (s, fault) = api.get("/v2/whatever").await;
    assert_eq!(s, 404);
    assert!(fault["faultstring"]
        .as_str()
        .unwrap()
        .starts_with("404 Not Found"));
    let r = api
        .http
        .delete(format!("{}/v1/commands/{tok}", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let fault: Value = r.json().await.unwrap();
    assert!(fault["faultstring"]
        .as_str()
        .unwrap()
        .starts_with("405 Method Not Allowed"));

    // Unexpected kwargs: a FAILED result with TypeError, HTTP 200.
    let (s, r) = api.command("standby.sync", json!({"bogus": 1}), true).await;
    assert_eq!(s, 200);
    assert_eq!(r["command_status"], "FAILED");
    assert_eq!(r["command_name"], "sync");
    assert_eq!(r["command_error"]["type"], "TypeError");
    let (_, r) = api
        .command("deploy.get_deploy_steps", json!({"node": {}}), true)
        .await;
    assert_eq!(r["command_error"]["type"], "TypeError");

    // Sync commands.
    let (s, r) = api
        .command("standby.get_partition_uuids", json!({}), true)
        .await;
    assert_eq!(s, 200);
    assert_eq!(r["command_status"], "SUCCEEDED");
    assert_eq!(r["command_result"], json!({}));
    let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "id",
            "command_name",
            "command_status",
            "command_error",
            "command_result"
        ]
    );
    let (_, r) = api.command("standby.sync", json!({}), true).await;
    assert_eq!(
        (r["command_status"].clone(), r["command_result"].clone()),
        (json!("SUCCEEDED"), Value::Null)
    );
    let (_, r) = api
        .command(
            "deploy.get_deploy_steps",
            json!({"node": {}, "ports": []}),
            true,
        )
        .await;
    assert_eq!(r["command_name"], "get_deploy_steps");
    assert_eq!(
        r["command_result"]["deploy_steps"]["GenericHardwareManager"][0]["step"],
        "write_image"
    );
    assert_eq!(
        r["command_result"]["hardware_manager_version"],
        json!({"generic_hardware_manager": "1.2"})
    );

    let (_, r) = api.command("poll.get_hardware_info", json!({}), true).await;
    assert_eq!(r["command_status"], "SUCCEEDED", "{r}");
    let inv = &r["command_result"];
    assert_eq!(inv["interfaces"][0]["mac_address"], MAC);
    assert_eq!(inv["interfaces"][0]["ipv4_address"], "127.0.0.1");
    assert!(inv["cpu"]["count"].as_u64().unwrap() >= 1);
    assert!(inv["memory"]["total"].as_u64().unwrap() > 0);
    assert_eq!(inv["disks"][0]["size"], 5u64 << 30);
    assert!(["uefi", "bios"].contains(&inv["boot"]["current_boot_mode"].as_str().unwrap()));

    // Power commands are recorded and logged, never executed.
    let (_, r) = api.command("standby.power_off", json!({}), true).await;
    assert_eq!(r["command_status"], "SUCCEEDED", "{r}");
    assert_eq!(r["command_name"], "power_off");

    // Logs: a base64 tar.gz holding the agent's own log.
    let (_, r) = api
        .command("log.collect_system_logs", json!({}), true)
        .await;
    let b64 = r["command_result"]["system_logs"].as_str().unwrap();
    let gz = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
    let mut log_text = String::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("ironclad-agent.log") {
            entry.read_to_string(&mut log_text).unwrap();
        }
    }
    assert!(log_text.contains("lookup found node"), "{log_text}");
    assert!(
        log_text.contains("host mode: power off requested, not executed"),
        "{log_text}"
    );

    // History is complete and in order.
    let (_, list) = api.get(&format!("/v1/commands/{tok}")).await;
    let names: Vec<&str> = list["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "sync",
            "get_deploy_steps",
            "get_partition_uuids",
            "sync",
            "get_deploy_steps",
            "get_hardware_info",
            "power_off",
            "collect_system_logs"
        ]
    );
    agent.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_deploy_flow_like_the_controller() {
    let image = test_image((3 << 20) + 4321);
    let sha = sha256_hex(&image);
    let images = ImageServer::start(vec![("disk.raw".into(), image.clone())]).await;
    let controller = FakeController::start(Some(TOKEN), None).await;
    let dir = tempfile::tempdir().unwrap();
    let disk = sparse_disk(dir.path(), 5 << 30);
    let mut agent = Agent::spawn(&controller.url, &disk, "127.0.0.1:0", &[]);
    let hb = controller.wait_heartbeats(1, &mut agent).await.remove(0);

    // Auto-TLS: https callback, PEM sent, and the PEM verifies the agent's server.
    assert!(
        hb.body.callback_url.starts_with("https://127.0.0.1:"),
        "{:?}",
        hb.body
    );
    let pem = hb.body.agent_verify_ca.clone().expect("agent_verify_ca");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let api = AgentApi::new(&hb.body.callback_url, Some(&pem));
    let (s, _) = api.get("/v1/status").await;
    assert_eq!(s, 200);
    // A client that does not trust the PEM is refused.
    let untrusting = reqwest::Client::builder().use_rustls_tls().build().unwrap();
    assert!(untrusting
        .get(format!("{}/v1/status", api.base))
        .send()
        .await
        .is_err());

    // The controller's flow.
    let (_, steps) = api
        .command(
            "deploy.get_deploy_steps",
            json!({"node": {"uuid": NODE_UUID}, "ports": []}),
            true,
        )
        .await;
    let version = steps["command_result"]["hardware_manager_version"].clone();
    let step = json!({
        "step": "write_image", "interface": "deploy", "priority": 80,
        "args": {"image_info": image_info(&format!("{}/slow/disk.raw", images.url), &sha), "configdrive": null}
    });
    let (s, r) = api
        .command(
            "deploy.execute_deploy_step",
            json!({"step": step, "node": {}, "ports": [], "deploy_version": version}),
            false,
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["command_status"], "RUNNING");
    assert_eq!(r["command_name"], "execute_deploy_step");
    let id = r["id"].as_str().unwrap().to_owned();

    // Busy while the image is held back by the image server.
    let (s, fault) = api.command("standby.sync", json!({}), true).await;
    assert_eq!(s, 409);
    assert_eq!(
        fault["faultstring"],
        "Agent is busy: executing command execute_deploy_step"
    );
    // Progress is readable while the command runs (an Ironclad extension of
    // the RUNNING result). Poll until the held-back image has been partly received.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, running) = api
            .get(&format!("/v1/commands/{id}?agent_token={TOKEN}"))
            .await;
        assert_eq!(running["command_status"], "RUNNING", "{running}");
        let progress = &running["command_result"]["progress"];
        if progress["bytes_received"].as_u64().unwrap_or(0) > 0 {
            assert_eq!(progress["stage"], "downloading");
            assert!(progress["rate_bytes_per_s"].is_u64(), "{running}");
            assert!(
                progress["bytes_total"].as_u64().unwrap()
                    >= progress["bytes_received"].as_u64().unwrap()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no progress: {running}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    images.release();

    let (_, done) = api
        .get(&format!("/v1/commands/{id}?wait=true&agent_token={TOKEN}"))
        .await;
    assert_eq!(
        done["command_status"],
        "SUCCEEDED",
        "{done}\n{}",
        agent.log()
    );
    assert_eq!(done["command_result"]["deploy_step"]["step"], "write_image");
    assert!(done["command_result"]["deploy_result"]["result"]
        .as_str()
        .unwrap()
        .contains("root_uuid=0x12345678"));
    let (_, list) = api.get(&format!("/v1/commands/?agent_token={TOKEN}")).await;
    assert_eq!(
        list["commands"].as_array().unwrap().last().unwrap()["command_status"],
        "SUCCEEDED"
    );

    // The disk holds exactly the image, followed by zeros.
    let mut written = vec![0u8; image.len() + 4096];
    std::fs::File::open(&disk)
        .unwrap()
        .read_exact(&mut written)
        .unwrap();
    assert!(
        written[..image.len()] == image[..],
        "disk content differs from the image"
    );
    assert!(written[image.len()..].iter().all(|&b| b == 0));

    let (_, r) = api
        .command("standby.get_partition_uuids", json!({}), true)
        .await;
    assert_eq!(r["command_result"], json!({"root uuid": "0x12345678"}));
    let (_, r) = api.command("standby.sync", json!({}), true).await;
    assert_eq!(r["command_status"], "SUCCEEDED");
    let (_, r) = api.command("standby.power_off", json!({}), false).await;
    assert_eq!(r["command_name"], "power_off");
    let id = r["id"].as_str().unwrap();
    let (_, r) = api
        .get(&format!("/v1/commands/{id}?wait=true&agent_token={TOKEN}"))
        .await;
    assert_eq!(r["command_status"], "SUCCEEDED");

    // An async completion forces an early heartbeat (at least 5 s after the previous one).
    let hbs = controller.wait_heartbeats(2, &mut agent).await;
    assert_eq!(
        hbs[1].body, hbs[0].body,
        "heartbeats must be identical within a boot"
    );
    assert!(agent
        .log()
        .contains("host mode: power off requested, not executed"));
    agent.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_failures_leave_the_disk_unbootable() {
    let image = test_image((2 << 20) + 99);
    let sha = sha256_hex(&image);
    let sums = format!("{}  other.raw\n{sha}  disk.raw\n", "0".repeat(64));
    let images = ImageServer::start(vec![
        ("disk.raw".into(), image.clone()),
        ("SHA256SUMS".into(), sums.into_bytes()),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("small.img");
    std::fs::write(&disk, vec![0xeeu8; 4 << 20]).unwrap();
    // Root-device hint by name, so a small disk is acceptable.
    let controller = FakeController::start(
        Some(TOKEN),
        Some(json!({"name": disk.display().to_string()})),
    )
    .await;
    let mut agent = Agent::spawn(&controller.url, &disk, "127.0.0.1:0", &["--no-auto-tls"]);
    let hb = controller.wait_heartbeats(1, &mut agent).await.remove(0);
    let api = AgentApi::new(&hb.body.callback_url, None);
    let url = format!("{}/images/disk.raw", images.url);

    // Wrong checksum: FAILED, details name url/algorithm/digests; first MiB zero.
    let wrong = "ab".repeat(32);
    let (_, r) = api
        .command(
            "standby.prepare_image",
            json!({"image_info": image_info(&url, &wrong)}),
            true,
        )
        .await;
    assert_eq!(r["command_status"], "FAILED", "{r}");
    let err = &r["command_error"];
    assert_eq!(err["type"], "ImageChecksumError");
    let details = err["details"].as_str().unwrap();
    for part in [url.as_str(), "sha256", wrong.as_str(), sha.as_str()] {
        assert!(details.contains(part), "{details} lacks {part}");
    }
    assert!(
        first_mib(&disk).iter().all(|&b| b == 0),
        "first MiB must stay zeroed"
    );
    let (_, r) = api
        .command("standby.get_partition_uuids", json!({}), true)
        .await;
    assert_eq!(r["command_result"], json!({}));

    // 404: ImageDownloadError at once.
    let missing = format!("{}/images/missing.raw", images.url);
    let (_, r) = api
        .command(
            "standby.prepare_image",
            json!({"image_info": image_info(&missing, &sha)}),
            true,
        )
        .await;
    assert_eq!(r["command_error"]["type"], "ImageDownloadError", "{r}");
    assert!(r["command_error"]["details"]
        .as_str()
        .unwrap()
        .contains("404"));

    // Checksum file URL: the right line is found and the image written.
    let mut info = image_info(&url, "");
    info["os_hash_algo"] = Value::Null;
    info["os_hash_value"] = Value::Null;
    info["checksum"] = json!(format!("{}/images/SHA256SUMS", images.url));
    let (_, r) = api
        .command("standby.prepare_image", json!({"image_info": info}), true)
        .await;
    assert_eq!(r["command_status"], "SUCCEEDED", "{r}");
    assert_eq!(
        r["command_result"]["result"],
        format!(
            "prepare_image: image (test-image) written to device {} root_uuid=0x12345678",
            disk.display()
        )
    );
    let on_disk = std::fs::read(&disk).unwrap();
    assert!(on_disk[..image.len()] == image[..]);
    assert!(on_disk[image.len()..].iter().all(|&b| b == 0xee));

    // Image larger than the disk: ImageWriteError before anything is written.
    let big = test_image(5 << 20);
    let big_images = ImageServer::start(vec![("big.raw".into(), big.clone())]).await;
    let (_, r) = api
        .command(
            "standby.prepare_image",
            json!({"image_info": image_info(&format!("{}/images/big.raw", big_images.url), &sha256_hex(&big))}),
            true,
        )
        .await;
    assert_eq!(r["command_error"]["type"], "ImageWriteError", "{r}");
    assert!(
        std::fs::read(&disk).unwrap()[..image.len()] == image[..],
        "nothing may be written"
    );

    // Unknown deploy step: FAILED with a clear error.
    let (_, r) = api
        .command("deploy.execute_deploy_step", json!({"step": {"step": "nope", "interface": "deploy", "priority": 1}, "node": {}, "ports": []}), true)
        .await;
    assert_eq!(r["command_status"], "FAILED");
    assert!(r["command_error"]["details"]
        .as_str()
        .unwrap()
        .contains("unknown deploy step deploy.nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_usable_token_everything_is_refused() {
    let controller = FakeController::start(Some("******"), None).await;
    let dir = tempfile::tempdir().unwrap();
    let disk = sparse_disk(dir.path(), 5 << 30);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut agent = Agent::spawn(
        &controller.url,
        &disk,
        &format!("127.0.0.1:{port}"),
        &["--no-auto-tls"],
    );
    let api = AgentApi::new(&format!("http://127.0.0.1:{port}"), None);
    // Readiness: the status endpoint answers.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        agent.assert_running();
        if let Ok(r) = api.http.get(format!("{}/v1/status", api.base)).send().await {
            assert_eq!(r.status().as_u16(), 200);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "agent never listened:\n{}",
            agent.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (s, _) = api.get(&format!("/v1/commands/?agent_token={TOKEN}")).await;
    assert_eq!(s, 401);
    let (s, _) = api.get("/v1/commands/?agent_token=******").await;
    assert_eq!(s, 401);
    assert!(
        agent.log().contains("FATAL: no usable agent token"),
        "{}",
        agent.log()
    );
    assert!(controller.heartbeats().is_empty());
}
