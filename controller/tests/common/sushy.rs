//! The real `sushy-emulator --fake` (sushy-tools from PyPI) as a Redfish BMC.
//!
//! The virtual environment is cached at `~/.cache/ironclad/venvs/sushy-tools`
//! (created with `pip install 'sushy-tools>=2,<3'` when missing). Each emulator
//! runs on a free loopback port with a generated config: fake systems with known
//! UUIDs and MACs, state in a temporary directory, and optional bcrypt htpasswd
//! Basic auth. It is stopped by PID on drop.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One fake system.
#[derive(Debug, Clone)]
pub struct FakeSystem {
    pub uuid: &'static str,
    pub name: &'static str,
    pub mac: &'static str,
}

pub const SYSTEM_A: FakeSystem = FakeSystem {
    uuid: "27946b59-9e44-4fa7-8e91-f3527a1ef094",
    name: "fake1",
    mac: "00:5c:52:31:3a:9c",
};

pub const SYSTEM_B: FakeSystem = FakeSystem {
    uuid: "4a1a4f2e-8f0d-4c3a-9a52-6f0c3e0b7e01",
    name: "fake2",
    mac: "00:5c:52:31:3a:9d",
};

/// The cached virtual environment, created on first use.
pub fn venv() -> PathBuf {
    let home = std::env::var("HOME").expect("HOME");
    let venv = Path::new(&home).join(".cache/ironclad/venvs/sushy-tools");
    let python = venv.join("bin/python");
    let usable = |python: &Path| {
        Command::new(python)
            .args(["-c", "import sushy_tools, bcrypt"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if usable(&python) {
        return venv;
    }
    // Several tests may get here at once: one creates, the others wait on a lock dir.
    let lock = venv.with_extension("lock");
    std::fs::create_dir_all(venv.parent().unwrap()).unwrap();
    let started = Instant::now();
    while std::fs::create_dir(&lock).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "stale lock {}",
            lock.display()
        );
        std::thread::sleep(Duration::from_millis(200));
        if usable(&python) {
            return venv;
        }
    }
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 -m venv")
        .success()
        && Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "sushy-tools>=2,<3"])
            .status()
            .expect("pip install sushy-tools")
            .success();
    let _ = std::fs::remove_dir(&lock);
    assert!(ok, "cannot install sushy-tools into {}", venv.display());
    venv
}

/// A running emulator.
pub struct Sushy {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    pub auth: Option<(String, String)>,
    config: PathBuf,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Sushy {
    /// Starts an emulator with `systems`, and Basic auth when `auth` is given.
    pub fn start(systems: &[FakeSystem], auth: Option<(&str, &str)>) -> Self {
        Self::start_with(systems, auth, None)
    }

    /// As [`Sushy::start`], serving HTTPS with `tls` = (certificate PEM, key PEM) files.
    pub fn start_with(
        systems: &[FakeSystem],
        auth: Option<(&str, &str)>,
        tls: Option<(&Path, &Path)>,
    ) -> Self {
        let venv = venv();
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let mut config = format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
             SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
             SUSHY_EMULATOR_FAKE_DRIVER = True\n\
             SUSHY_EMULATOR_STATE_DIR = '{}'\n\
             SUSHY_EMULATOR_FAKE_SYSTEMS = [\n",
            dir.path().join("state").display()
        );
        for system in systems {
            config.push_str(&format!(
                "    {{'uuid': '{}', 'name': '{}', 'power_state': 'Off', 'external_notifier': False,\n\
                 \x20     'nics': [{{'mac': '{}', 'ip': '127.0.0.2'}}]}},\n",
                system.uuid, system.name, system.mac
            ));
        }
        config.push_str("]\n");
        if let Some((user, password)) = auth {
            let hash = Command::new(venv.join("bin/python"))
                .args([
                    "-c",
                    "import bcrypt,sys;print(bcrypt.hashpw(sys.argv[1].encode(),bcrypt.gensalt(4)).decode())",
                    password,
                ])
                .output()
                .unwrap();
            assert!(hash.status.success());
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(
                &htpasswd,
                format!("{user}:{}", String::from_utf8_lossy(&hash.stdout).trim()),
            )
            .unwrap();
            config.push_str(&format!(
                "SUSHY_EMULATOR_AUTH_FILE = '{}'\n",
                htpasswd.display()
            ));
        }
        if let Some((cert, key)) = tls {
            config.push_str(&format!(
                "SUSHY_EMULATOR_SSL_CERT = '{}'\nSUSHY_EMULATOR_SSL_KEY = '{}'\n",
                cert.display(),
                key.display()
            ));
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let config_path = dir.path().join("sushy.conf");
        std::fs::write(&config_path, config).unwrap();
        let mut sushy = Self {
            child: None,
            port,
            url: format!("{scheme}://127.0.0.1:{port}"),
            auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
            config: config_path,
            _dir: dir,
            http: reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .build()
                .unwrap(),
        };
        sushy.spawn();
        sushy
    }

    fn spawn(&mut self) {
        let python = venv().join("bin/python");
        let child = Command::new(python)
            .args(["-m", "sushy_tools.emulator.main", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sushy-emulator");
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "sushy-emulator did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the emulator (by PID) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped emulator again on the same port and state.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// `GET` a Redfish resource as the BMC shows it.
    pub async fn get(&self, path: &str) -> Value {
        let mut request = self.http.get(format!("{}{path}", self.url));
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    /// The system as the BMC shows it.
    pub async fn system(&self, system: &FakeSystem) -> Value {
        self.get(&format!("/redfish/v1/Systems/{}", system.uuid))
            .await
    }

    /// Polls until the system reports `power` ("On"/"Off").
    pub async fn wait_power(&self, system: &FakeSystem, power: &str) {
        let started = Instant::now();
        loop {
            let shown = self.system(system).await;
            if shown["PowerState"] == power {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "system never reached {power}: {shown}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        self.stop();
    }
}
