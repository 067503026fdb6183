//! DHCP for network boot through dnsmasq, without iptables.
//!
//! [`DhcpFilter`] writes one file per MAC into a dnsmasq `dhcp-hostsdir`:
//! `<mac>,set:ironclad` lets the machine boot from the network (iPXE chain-loads
//! the controller's `/boot.ipxe`), `<mac>,ignore` keeps dnsmasq silent. The
//! generated configuration ignores every MAC not tagged `ironclad`, so unknown
//! machines get nothing. dnsmasq notices new and changed files through inotify,
//! so nothing needs a signal; removals are not noticed, so files are rewritten,
//! never deleted, and the directory is emptied before dnsmasq starts.
//!
//! [`Dnsmasq`] starts and supervises a dnsmasq with a generated configuration
//! (`--dnsmasq` mode); with `--dnsmasq-hostsdir` an operator runs dnsmasq and the
//! controller only writes the hostsdir.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::watch;

/// What can go wrong with DHCP.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// A host file could not be written.
    #[error("cannot write the dnsmasq host file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A MAC address is malformed.
    #[error("{0:?} is not a MAC address (expected six hex pairs separated by colons)")]
    BadMac(String),
    /// dnsmasq could not be started.
    #[error("cannot start dnsmasq ({program}): {source}; install the dnsmasq-base package or pass --dnsmasq-program")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Normalises a MAC to lower-case colon form, or fails.
pub fn normalize_mac(mac: &str) -> Result<String, DhcpError> {
    let lower = mac.trim().to_ascii_lowercase().replace('-', ":");
    let parts: Vec<&str> = lower.split(':').collect();
    let valid = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if valid {
        Ok(lower)
    } else {
        Err(DhcpError::BadMac(mac.to_owned()))
    }
}

/// The per-MAC allow/deny files of a dnsmasq `dhcp-hostsdir`.
#[derive(Debug, Clone)]
pub struct DhcpFilter {
    dir: Arc<PathBuf>,
}

/// The tag that allows a host to boot.
pub const ALLOW_TAG: &str = "ironclad";

impl DhcpFilter {
    /// A filter writing into `dir`, created when missing.
    pub fn new(dir: &Path) -> Result<Self, DhcpError> {
        std::fs::create_dir_all(dir).map_err(|source| DhcpError::Write {
            path: dir.to_owned(),
            source,
        })?;
        Ok(Self {
            dir: Arc::new(dir.to_owned()),
        })
    }

    /// The hostsdir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding the line for `mac`.
    pub fn file_of(&self, mac: &str) -> Result<PathBuf, DhcpError> {
        let mac = normalize_mac(mac)?;
        Ok(self.dir.join(format!("ironclad-{}", mac.replace(':', "-"))))
    }

    fn write(&self, mac: &str, line: &str) -> Result<(), DhcpError> {
        let path = self.file_of(mac)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // dnsmasq skips dot files, so the temporary file is never read half-written.
        let temporary = self.dir.join(format!(".{name}.tmp"));
        let io = |source| DhcpError::Write {
            path: path.clone(),
            source,
        };
        std::fs::write(&temporary, format!("{line}\n")).map_err(io)?;
        std::fs::rename(&temporary, &path).map_err(io)?;
        Ok(())
    }

    /// Lets `macs` network boot.
    pub fn allow(&self, macs: &[String]) -> Result<(), DhcpError> {
        for mac in macs {
            let mac = normalize_mac(mac)?;
            self.write(&mac, &format!("{mac},set:{ALLOW_TAG}"))?;
        }
        Ok(())
    }

    /// Makes dnsmasq ignore `macs`.
    pub fn deny(&self, macs: &[String]) -> Result<(), DhcpError> {
        for mac in macs {
            let mac = normalize_mac(mac)?;
            self.write(&mac, &format!("{mac},ignore"))?;
        }
        Ok(())
    }

    /// Removes every host file (only safe before dnsmasq starts or with a SIGHUP after).
    pub fn clear(&self) -> Result<(), DhcpError> {
        let io = |source| DhcpError::Write {
            path: self.dir.to_path_buf(),
            source,
        };
        for entry in std::fs::read_dir(self.dir.as_path()).map_err(io)? {
            let entry = entry.map_err(io)?;
            if entry.file_name().to_string_lossy().starts_with("ironclad-")
                || entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".ironclad-")
            {
                std::fs::remove_file(entry.path()).map_err(io)?;
            }
        }
        Ok(())
    }
}

/// How the controller's own dnsmasq is set up.
#[derive(Debug, Clone)]
pub struct DnsmasqConfig {
    /// The dnsmasq program.
    pub program: PathBuf,
    /// Interface to serve DHCP on.
    pub interface: String,
    /// Address range, `start,end[,netmask][,lease time]` as dnsmasq takes it.
    pub range: String,
    /// Directory for the configuration, hostsdir and leases.
    pub state_dir: PathBuf,
    /// URL of the generic iPXE script (`<public url>/boot.ipxe`).
    pub boot_script_url: String,
    /// Boot file for firmware without iPXE (a TFTP file name), if any.
    pub ipxe_bootfile: Option<String>,
    /// TFTP root to serve `ipxe_bootfile` from, if any.
    pub tftp_root: Option<PathBuf>,
}

impl DnsmasqConfig {
    /// The hostsdir inside the state directory.
    pub fn hostsdir(&self) -> PathBuf {
        self.state_dir.join("hostsdir")
    }

    /// The configuration file's text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let mut line = |l: String| {
            let _ = writeln!(text, "{l}");
        };
        line("# Generated by ironclad-controller; changes are overwritten.".to_owned());
        line("port=0".to_owned());
        line(format!("interface={}", self.interface));
        line("bind-interfaces".to_owned());
        line("except-interface=lo".to_owned());
        line(format!("dhcp-range={}", self.range));
        line(format!("dhcp-hostsdir={}", self.hostsdir().display()));
        line(format!(
            "dhcp-leasefile={}",
            self.state_dir.join("dnsmasq.leases").display()
        ));
        line(format!("dhcp-ignore=tag:!{ALLOW_TAG}"));
        line("dhcp-match=set:ipxe,175".to_owned());
        // iPXE option 175.176 = 1: do not wait for ProxyDHCP offers.
        line("dhcp-option=tag:ipxe,encap:175,176,1".to_owned());
        line(format!("dhcp-boot=tag:ipxe,{}", self.boot_script_url));
        if let Some(file) = &self.ipxe_bootfile {
            line(format!("dhcp-boot=tag:!ipxe,{file}"));
        }
        if let Some(root) = &self.tftp_root {
            line("enable-tftp".to_owned());
            line(format!("tftp-root={}", root.display()));
        }
        line("user=root".to_owned());
        line("log-dhcp".to_owned());
        text
    }
}

/// A dnsmasq the controller started; restarted when it exits, killed on drop.
#[derive(Debug)]
pub struct Dnsmasq {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    filter: DhcpFilter,
}

impl Dnsmasq {
    /// Writes the configuration, empties the hostsdir and starts dnsmasq under supervision.
    pub async fn start(config: DnsmasqConfig) -> Result<Self, DhcpError> {
        let filter = DhcpFilter::new(&config.hostsdir())?;
        filter.clear()?;
        let conf = config.state_dir.join("dnsmasq.conf");
        std::fs::write(&conf, config.render()).map_err(|source| DhcpError::Write {
            path: conf.clone(),
            source,
        })?;
        let first = spawn(&config.program, &conf)?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut child = first;
            loop {
                tokio::select! {
                    status = child.wait() => {
                        tracing::warn!(?status, "dnsmasq exited; restarting it in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if *stopped.borrow() {
                            return;
                        }
                        match spawn(&config.program, &conf) {
                            Ok(next) => child = next,
                            Err(error) => {
                                tracing::error!(%error, "cannot restart dnsmasq; DHCP is down");
                                return;
                            }
                        }
                    }
                    _ = stopped.changed() => {
                        let _ = child.kill().await;
                        return;
                    }
                }
            }
        });
        Ok(Self {
            stop,
            task: Some(task),
            filter,
        })
    }

    /// The filter writing this dnsmasq's hostsdir.
    pub fn filter(&self) -> &DhcpFilter {
        &self.filter
    }

    /// Stops dnsmasq and waits for it to exit.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn spawn(program: &Path, conf: &Path) -> Result<Child, DhcpError> {
    let child = Command::new(program)
        .arg("--keep-in-foreground")
        .arg(format!("--conf-file={}", conf.display()))
        .arg("--log-facility=-")
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| DhcpError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    tracing::info!(pid = ?child.id(), conf = %conf.display(), "dnsmasq started");
    Ok(child)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn host_files_allow_then_ignore() {
        let dir = tempfile::tempdir().unwrap();
        let filter = DhcpFilter::new(dir.path()).unwrap();
        filter.allow(&["52:54:00:AA:bb:01".to_owned()]).unwrap();
        let file = filter.file_of("52:54:00:aa:bb:01").unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "52:54:00:aa:bb:01,set:ironclad\n"
        );
        filter.deny(&["52-54-00-aa-bb-01".to_owned()]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "52:54:00:aa:bb:01,ignore\n"
        );
        assert!(filter.allow(&["nope".to_owned()]).is_err());
        filter.clear().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn config_chain_loads_ipxe_and_ignores_unknown_hosts() {
        let config = DnsmasqConfig {
            program: "dnsmasq".into(),
            interface: "ic0".to_owned(),
            range: "10.9.0.10,10.9.0.50,255.255.255.0,1h".to_owned(),
            state_dir: "/var/lib/ironclad/dnsmasq".into(),
            boot_script_url: "http://10.9.0.1:6385/boot.ipxe".to_owned(),
            ipxe_bootfile: None,
            tftp_root: None,
        };
        let text = config.render();
        for expected in [
            "interface=ic0",
            "dhcp-range=10.9.0.10,10.9.0.50,255.255.255.0,1h",
            "dhcp-hostsdir=/var/lib/ironclad/dnsmasq/hostsdir",
            "dhcp-ignore=tag:!ironclad",
            "dhcp-match=set:ipxe,175",
            "dhcp-boot=tag:ipxe,http://10.9.0.1:6385/boot.ipxe",
            "dhcp-option=tag:ipxe,encap:175,176,1",
            "port=0",
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected} in\n{text}");
        }
    }
}
