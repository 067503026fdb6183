//! End to end: the real controller drives the real agent (host mode, file disk)
//! through a whole-disk deploy over the IPA wire protocol, with auto-TLS.

use std::time::Duration;

use anyhow::Result;
use ironclad_tests::{
    create_disk, sha256_prefix, write_sample_image, Agent, Controller, ImageServer,
};
use serde_json::{json, Value};

const IMAGE_SIZE: usize = 8 * 1024 * 1024;
const DISK_SIZE: u64 = 5 * 1024 * 1024 * 1024;
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

struct Lab {
    _dir: tempfile::TempDir,
    disk: std::path::PathBuf,
    image_sha256: String,
    images: ImageServer,
    controller: Controller,
}

impl Lab {
    fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let image_dir = dir.path().join("images");
        std::fs::create_dir(&image_dir)?;
        let image_sha256 = write_sample_image(&image_dir.join("disk.raw"), IMAGE_SIZE as u64, 7)?;
        let disk = dir.path().join("node-disk.img");
        create_disk(&disk, DISK_SIZE)?;
        let images = ImageServer::start(&image_dir)?;
        let controller = Controller::start(&dir.path().join("ironclad.sqlite"), &[])?;
        Ok(Self {
            _dir: dir,
            disk,
            image_sha256,
            images,
            controller,
        })
    }

    /// Enrolls a node with one port and takes it to `available`.
    fn enroll(&self, mac: &str, checksum: &str) -> Result<String> {
        self.controller.api.enroll_available(
            "e2e-node",
            &format!("{}/disk.raw", self.images.url),
            checksum,
            mac,
            STEP_TIMEOUT,
        )
    }
}

fn first_mib_is_zero(path: &std::path::Path) -> Result<bool> {
    use std::io::Read;
    let mut buf = vec![0u8; 1024 * 1024];
    std::fs::File::open(path)?.read_exact(&mut buf)?;
    Ok(buf.iter().all(|b| *b == 0))
}

#[test]
fn deploys_a_whole_disk_image_and_tears_it_down() -> Result<()> {
    let lab = Lab::new()?;
    let api = &lab.controller.api;
    let mac = "52:54:00:aa:00:01";
    let uuid = lab.enroll(mac, &lab.image_sha256)?;

    api.provision(&uuid, "deploy")?;
    api.wait_state(&uuid, "wait call-back", &["deploy failed"], STEP_TIMEOUT)?;

    let mut agent = Agent::start(&lab.controller.url, &lab.disk, mac, &[])?;
    let node = api.wait_state(&uuid, "active", &["deploy failed"], STEP_TIMEOUT)?;
    agent.process.ensure_running()?;

    assert_eq!(node["last_error"], Value::Null);
    assert_eq!(node["power_state"], "power on");
    assert_eq!(
        sha256_prefix(&lab.disk, IMAGE_SIZE as u64)?,
        lab.image_sha256,
        "the disk must hold exactly the image"
    );
    // The agent used auto-TLS and the controller pinned its certificate.
    let internal = &node["driver_internal_info"];
    assert!(
        internal["agent_url"].is_null(),
        "agent data is wiped once the node is active: {internal}"
    );
    let agent_log = agent.process.output();
    assert!(
        agent_log.contains("power off"),
        "the agent records the power-off it was asked for:\n{agent_log}"
    );

    api.provision(&uuid, "deleted")?;
    let node = api.wait_state(&uuid, "available", &["error", "clean failed"], STEP_TIMEOUT)?;
    assert_eq!(node["instance_info"], json!({}));
    Ok(())
}

#[test]
fn a_wrong_checksum_fails_the_deploy_and_leaves_an_unbootable_disk() -> Result<()> {
    let lab = Lab::new()?;
    let api = &lab.controller.api;
    let mac = "52:54:00:aa:00:02";
    let wrong = "0".repeat(64);
    let uuid = lab.enroll(mac, &wrong)?;

    api.provision(&uuid, "deploy")?;
    api.wait_state(&uuid, "wait call-back", &["deploy failed"], STEP_TIMEOUT)?;
    let _agent = Agent::start(&lab.controller.url, &lab.disk, mac, &[])?;
    let node = api.wait_state(&uuid, "deploy failed", &["active"], STEP_TIMEOUT)?;

    let last_error = node["last_error"].as_str().unwrap_or_default();
    assert!(
        last_error.contains("ImageChecksumError") || last_error.contains("checksum"),
        "last_error names the checksum failure: {last_error}"
    );
    assert!(
        last_error.contains(&wrong),
        "last_error shows the expected digest: {last_error}"
    );
    assert!(
        first_mib_is_zero(&lab.disk)?,
        "a failed write must leave the first MiB zeroed so the disk cannot boot"
    );
    Ok(())
}
