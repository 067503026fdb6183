//! Networking in the ramdisk (PID 1 only): bring the links up, then configure
//! them from, in order of precedence, a `network_data.json` on a `config-2`
//! device, a static `ip=` on the kernel command line, or DHCPv4 (the boot
//! interface from `BOOTIF` first, then every other Ethernet interface), with
//! IPv6 SLAAC left to the kernel. Carrier waits are bounded and logged.

pub mod configdrive;
pub mod dhcp;
pub mod ipconfig;
pub mod netlink;
pub mod plan;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use self::dhcp::Lease;
use self::ipconfig::IpParam;
use self::netlink::{Netlink, NetlinkError};
use self::plan::{LinkKind, NetworkPlan, PlanError};

/// How long to wait for a link's carrier before trying it anyway.
pub const CARRIER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the first DHCP exchange on an interface may take.
pub const DHCP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a NIC to appear at all.
pub const NIC_TIMEOUT: Duration = Duration::from_secs(10);
/// Route metric of the first interface's default route (others get +1, +2, ...).
const BASE_METRIC: u32 = 100;

/// Why the network could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A netlink request failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The config drive's network data is unusable.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// No Ethernet interface showed up.
    #[error(
        "no Ethernet interface found within {0:?}: is the NIC's driver in the ramdisk profile?"
    )]
    NoInterface(Duration),
    /// The plan names a NIC that is not there.
    #[error("network configuration names a NIC that is not present: {0}")]
    MissingNic(String),
    /// No interface got an address by DHCP.
    #[error("DHCP failed on every interface ({0}); check the DHCP server, or pass ip=<addr>::<gw>:<mask>::<dev> on the kernel command line")]
    NoLease(String),
}

/// What the kernel command line says about networking.
#[derive(Debug, Clone)]
pub struct NetSettings {
    /// `ip=` (default: DHCP on every interface).
    pub ip: IpParam,
    /// MAC of the boot interface (`BOOTIF`).
    pub bootif: Option<String>,
    /// `ipa-network-interface`: only this interface is configured.
    pub interface: Option<String>,
}

/// An Ethernet interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Kernel name (`eth0`).
    pub name: String,
    /// MAC, lower case, colon-separated.
    pub mac: String,
}

impl Nic {
    fn mac_bytes(&self) -> [u8; 6] {
        let mut out = [0u8; 6];
        for (slot, part) in out.iter_mut().zip(self.mac.split(':')) {
            *slot = u8::from_str_radix(part, 16).unwrap_or(0);
        }
        out
    }
}

/// What was configured.
#[derive(Debug, Clone, Default)]
pub struct NetStatus {
    /// Addresses configured, by interface.
    pub addresses: Vec<(String, IpAddr)>,
    /// Where the configuration came from.
    pub source: String,
}

/// Ethernet interfaces under `<sysroot>/sys/class/net` (ARPHRD_ETHER, not loopback), by name.
pub fn ethernet_nics(sysroot: &Path) -> Vec<Nic> {
    let dir = sysroot.join("sys/class/net");
    let mut nics = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return nics;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let read = |f: &str| {
            std::fs::read_to_string(path.join(f))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        if name == "lo" || read("type") != "1" {
            continue;
        }
        nics.push(Nic {
            name,
            mac: read("address").to_ascii_lowercase(),
        });
    }
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    nics
}

/// Orders NICs with the boot interface first; with `only`, keeps just that one
/// (matched by name or MAC).
pub fn order_nics(mut nics: Vec<Nic>, bootif: Option<&str>, only: Option<&str>) -> Vec<Nic> {
    if let Some(only) = only {
        let only = only.to_ascii_lowercase();
        nics.retain(|n| n.name == only || n.mac == only);
    }
    if let Some(boot) = bootif {
        nics.sort_by_key(|n| n.mac != boot);
    }
    nics
}

/// Waits until `name` reports a carrier, at most `timeout`; logs the outcome.
pub async fn wait_carrier(name: &str, timeout: Duration) -> bool {
    let path = PathBuf::from(format!("/sys/class/net/{name}/carrier"));
    let started = Instant::now();
    loop {
        let up = std::fs::read_to_string(&path)
            .map(|s| s.trim() == "1")
            .unwrap_or(false);
        if up {
            tracing::info!("{name}: carrier after {} ms", started.elapsed().as_millis());
            return true;
        }
        if started.elapsed() >= timeout {
            tracing::warn!("{name}: no carrier after {timeout:?}; trying it anyway");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lets the kernel autoconfigure IPv6 (SLAAC) on `name`.
fn enable_slaac(name: &str) {
    for (key, value) in [("disable_ipv6", "0"), ("accept_ra", "1"), ("autoconf", "1")] {
        let path = format!("/proc/sys/net/ipv6/conf/{name}/{key}");
        if let Err(e) = std::fs::write(&path, value) {
            tracing::debug!("{path}: {e}");
        }
    }
}

fn write_resolv_conf(dns: &[IpAddr]) {
    if dns.is_empty() {
        return;
    }
    let _ = std::fs::create_dir_all("/etc");
    if let Err(e) = std::fs::write("/etc/resolv.conf", plan::resolv_conf(dns)) {
        tracing::warn!("writing /etc/resolv.conf: {e}");
    }
}

fn set_hostname(name: &str) {
    if let Err(e) = nix::unistd::sethostname(name) {
        tracing::warn!("setting the host name to {name}: {e}");
    }
}

/// Configures the network as described in the module documentation.
pub async fn configure(settings: &NetSettings) -> Result<NetStatus, NetError> {
    let nl = Netlink::connect()?;
    let lo = nl.index("lo").await?;
    nl.up(lo).await?;

    let started = Instant::now();
    let mut nics = ethernet_nics(Path::new("/"));
    while nics.is_empty() && started.elapsed() < NIC_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(50)).await;
        nics = ethernet_nics(Path::new("/"));
    }
    if nics.is_empty() {
        return Err(NetError::NoInterface(NIC_TIMEOUT));
    }
    let nics = order_nics(
        nics,
        settings.bootif.as_deref(),
        settings.interface.as_deref(),
    );
    tracing::info!(
        "network interfaces: {}",
        nics.iter()
            .map(|n| format!("{} ({})", n.name, n.mac))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for nic in &nics {
        enable_slaac(&nic.name);
        let index = nl.index(&nic.name).await?;
        nl.up(index).await?;
    }

    if let Some(plan) = configdrive::network_plan() {
        let plan = plan?;
        tracing::info!("configuring the network from the config drive's network_data.json");
        let mut status = apply_plan(&nl, &plan, &nics).await?;
        status.source = "config drive".into();
        if !plan.dhcp_links.is_empty() {
            let by_id: Vec<Nic> = nics
                .iter()
                .filter(|n| {
                    plan.links.iter().any(|l| {
                        plan.dhcp_links.contains(&l.id)
                            && matches!(&l.kind, LinkKind::Physical { mac: Some(m), .. } if *m == n.mac)
                    })
                })
                .cloned()
                .collect();
            let leases = run_dhcp(&nl, by_id).await?;
            status.addresses.extend(leases);
        }
        return Ok(status);
    }

    match &settings.ip {
        IpParam::Off => {
            tracing::info!("ip=off: leaving the network unconfigured (IPv6 SLAAC only)");
            Ok(NetStatus {
                addresses: Vec::new(),
                source: "ip=off".into(),
            })
        }
        IpParam::Static(ip) => {
            let device = match &ip.device {
                Some(d) => d.clone(),
                None => pick_static_device(&nics).await,
            };
            tracing::info!("configuring {device} statically from ip=");
            let plan = plan::from_ip_param(ip, &device);
            let mut status = apply_plan(&nl, &plan, &nics).await?;
            status.source = "ip=".into();
            Ok(status)
        }
        IpParam::Dhcp { device } => {
            let candidates: Vec<Nic> = match device {
                Some(d) => nics.iter().filter(|n| &n.name == d).cloned().collect(),
                None => nics.clone(),
            };
            let addresses = run_dhcp(&nl, candidates).await?;
            Ok(NetStatus {
                addresses,
                source: "DHCP".into(),
            })
        }
    }
}

/// The first NIC with a carrier (waiting up to [`CARRIER_TIMEOUT`]), else the first NIC.
async fn pick_static_device(nics: &[Nic]) -> String {
    let deadline = Instant::now() + CARRIER_TIMEOUT;
    loop {
        for nic in nics {
            let carrier = std::fs::read_to_string(format!("/sys/class/net/{}/carrier", nic.name))
                .map(|s| s.trim() == "1")
                .unwrap_or(false);
            if carrier {
                return nic.name.clone();
            }
        }
        if Instant::now() >= deadline {
            return nics.first().map(|n| n.name.clone()).unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Applies a static plan: links (by MAC or name, VLANs, bonds), MTUs,
/// addresses, routes, DNS and host name.
pub async fn apply_plan(
    nl: &Netlink,
    plan: &NetworkPlan,
    nics: &[Nic],
) -> Result<NetStatus, NetError> {
    let mut names: BTreeMap<String, (String, u32)> = BTreeMap::new();
    let mut bond_count = 0;
    for link in &plan.links {
        let (name, index) = match &link.kind {
            LinkKind::Physical { mac, name } => {
                let nic = nics
                    .iter()
                    .find(|n| Some(&n.mac) == mac.as_ref() || Some(&n.name) == name.as_ref())
                    .ok_or_else(|| {
                        NetError::MissingNic(
                            mac.clone().or_else(|| name.clone()).unwrap_or_default(),
                        )
                    })?;
                wait_carrier(&nic.name, CARRIER_TIMEOUT).await;
                (nic.name.clone(), nl.index(&nic.name).await?)
            }
            LinkKind::Vlan { parent, vlan_id } => {
                let (parent_name, parent_index) = names
                    .get(parent)
                    .cloned()
                    .ok_or_else(|| NetError::MissingNic(parent.clone()))?;
                let mut name = format!("{parent_name}.{vlan_id}");
                name.truncate(15);
                let index = nl.add_vlan(&name, parent_index, *vlan_id).await?;
                (name, index)
            }
            LinkKind::Bond {
                members,
                mode,
                miimon,
            } => {
                let name = format!("bond{bond_count}");
                bond_count += 1;
                let index = nl
                    .add_bond(&name, netlink::bond_mode(mode), *miimon)
                    .await?;
                for member in members {
                    let (_, member_index) = names
                        .get(member)
                        .cloned()
                        .ok_or_else(|| NetError::MissingNic(member.clone()))?;
                    nl.enslave(member_index, index).await?;
                }
                (name, index)
            }
        };
        if let Some(mtu) = link.mtu {
            nl.mtu(index, mtu).await?;
        }
        nl.up(index).await?;
        tracing::info!("link {} is {name}", link.id);
        names.insert(link.id.clone(), (name, index));
    }
    let mut status = NetStatus::default();
    for address in &plan.addresses {
        let (name, index) = names
            .get(&address.link)
            .cloned()
            .ok_or_else(|| NetError::MissingNic(address.link.clone()))?;
        nl.add_address(index, address.address, address.prefix)
            .await?;
        tracing::info!("{name}: address {}/{}", address.address, address.prefix);
        status.addresses.push((name, address.address));
    }
    for (n, route) in plan.routes.iter().enumerate() {
        let (name, index) = names
            .get(&route.link)
            .cloned()
            .ok_or_else(|| NetError::MissingNic(route.link.clone()))?;
        nl.add_route(
            index,
            route.destination,
            route.prefix,
            route.gateway,
            BASE_METRIC + n as u32,
        )
        .await?;
        tracing::info!(
            "{name}: route {}/{} via {:?}",
            route.destination,
            route.prefix,
            route.gateway
        );
    }
    write_resolv_conf(&plan.dns);
    if let Some(hostname) = &plan.hostname {
        set_hostname(hostname);
    }
    Ok(status)
}

/// Runs DHCP on every NIC in `nics` concurrently (each keeps renewing in the
/// background). Returns once the first NIC (the boot interface) has a lease,
/// or, if it fails, once any other has one.
async fn run_dhcp(nl: &Netlink, nics: Vec<Nic>) -> Result<Vec<(String, IpAddr)>, NetError> {
    let Some(preferred) = nics.first().map(|n| n.name.clone()) else {
        return Err(NetError::NoLease("no interface to run DHCP on".into()));
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Result<Lease, String>)>();
    let total = nics.len();
    for (position, nic) in nics.into_iter().enumerate() {
        let tx = tx.clone();
        let nl = nl.clone();
        tokio::spawn(async move {
            dhcp_interface(nl, nic, BASE_METRIC + position as u32, tx).await;
        });
    }
    drop(tx);
    let mut got: Vec<(String, IpAddr)> = Vec::new();
    let mut failures = Vec::new();
    let mut preferred_done = false;
    let mut reported = 0;
    while let Some((name, result)) = rx.recv().await {
        reported += 1;
        match result {
            Ok(lease) => {
                got.push((name.clone(), IpAddr::V4(lease.address)));
                if name == preferred {
                    preferred_done = true;
                }
            }
            Err(e) => {
                failures.push(e);
                if name == preferred {
                    preferred_done = true;
                }
            }
        }
        if (preferred_done && !got.is_empty()) || reported == total {
            break;
        }
    }
    if got.is_empty() {
        return Err(NetError::NoLease(failures.join("; ")));
    }
    Ok(got)
}

async fn apply_lease(nl: &Netlink, index: u32, name: &str, lease: &Lease, metric: u32) {
    if let Err(e) = nl
        .add_address(index, IpAddr::V4(lease.address), lease.prefix)
        .await
    {
        tracing::error!("{name}: {e}");
    }
    if let Some(mtu) = lease.mtu {
        if let Err(e) = nl.mtu(index, u32::from(mtu)).await {
            tracing::warn!("{name}: {e}");
        }
    }
    if let Some(router) = lease.routers.first() {
        let any = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        if let Err(e) = nl
            .add_route(index, any, 0, Some(IpAddr::V4(*router)), metric)
            .await
        {
            tracing::error!("{name}: {e}");
        }
    }
    let dns: Vec<IpAddr> = lease.dns.iter().copied().map(IpAddr::V4).collect();
    write_resolv_conf(&dns);
    if let Some(hostname) = &lease.hostname {
        set_hostname(hostname);
    }
}

/// One interface's DHCP life: wait for carrier, acquire, apply, report, then
/// renew at T1 (unicast), rebind at T2 (broadcast), start over on expiry.
async fn dhcp_interface(
    nl: Netlink,
    nic: Nic,
    metric: u32,
    report: mpsc::UnboundedSender<(String, Result<Lease, String>)>,
) {
    let name = nic.name.clone();
    let mac = nic.mac_bytes();
    let index = match nl.index(&name).await {
        Ok(index) => index,
        Err(e) => {
            let _ = report.send((name, Err(e.to_string())));
            return;
        }
    };
    wait_carrier(&name, CARRIER_TIMEOUT).await;
    let socket = match dhcp::client_socket(&name) {
        Ok(socket) => socket,
        Err(e) => {
            tracing::error!("{e}");
            let _ = report.send((name, Err(e.to_string())));
            return;
        }
    };
    let mut reported = false;
    let mut timeout = DHCP_TIMEOUT;
    loop {
        let started = Instant::now();
        let mut lease = match dhcp::acquire(&socket, &name, &mac, timeout).await {
            Ok(lease) => lease,
            Err(e) => {
                tracing::warn!("{e}");
                if !reported {
                    reported = true;
                    let _ = report.send((name.clone(), Err(e.to_string())));
                }
                // Keep trying in the background, less eagerly.
                timeout = Duration::from_secs(60);
                continue;
            }
        };
        tracing::info!(
            "{name}: DHCP lease {}/{} from {} (router {:?}, DNS {:?}) in {} ms; renewing in {} s",
            lease.address,
            lease.prefix,
            lease.server,
            lease.routers.first(),
            lease.dns,
            started.elapsed().as_millis(),
            lease.renew_after.as_secs()
        );
        apply_lease(&nl, index, &name, &lease, metric).await;
        if !reported {
            reported = true;
            let _ = report.send((name.clone(), Ok(lease.clone())));
        }
        // Renew until it fails past the lease's end.
        let mut granted = Instant::now();
        loop {
            tokio::time::sleep_until(granted + lease.renew_after).await;
            let renewed = match dhcp::extend(
                &socket,
                &name,
                &mac,
                &lease,
                false,
                granted + lease.rebind_after,
            )
            .await
            {
                Ok(l) => Ok(l),
                Err(_) => {
                    dhcp::extend(
                        &socket,
                        &name,
                        &mac,
                        &lease,
                        true,
                        granted + lease.lease_time,
                    )
                    .await
                }
            };
            match renewed {
                Ok(new) => {
                    tracing::info!(
                        "{name}: DHCP lease {} renewed for {} s",
                        new.address,
                        new.lease_time.as_secs()
                    );
                    lease = new;
                    granted = Instant::now();
                    apply_lease(&nl, index, &name, &lease, metric).await;
                }
                Err(e) => {
                    tracing::warn!(
                        "{name}: lease {} not renewed ({e}); starting over",
                        lease.address
                    );
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(name: &str, mac: &str) -> Nic {
        Nic {
            name: name.into(),
            mac: mac.into(),
        }
    }

    #[test]
    fn boot_interface_goes_first() {
        let nics = vec![
            nic("eth0", "52:54:00:00:00:01"),
            nic("eth1", "52:54:00:00:00:02"),
        ];
        let ordered = order_nics(nics.clone(), Some("52:54:00:00:00:02"), None);
        assert_eq!(ordered[0].name, "eth1");
        let only = order_nics(nics.clone(), None, Some("eth0"));
        assert_eq!(only, [nics[0].clone()]);
        let by_mac = order_nics(nics, None, Some("52:54:00:00:00:02"));
        assert_eq!(by_mac[0].name, "eth1");
        assert_eq!(
            nic("x", "52:54:00:ab:cd:ef").mac_bytes(),
            [0x52, 0x54, 0, 0xab, 0xcd, 0xef]
        );
    }

    #[test]
    fn ethernet_nics_are_read_from_sysfs() {
        let root = tempfile::tempdir().unwrap();
        for (name, kind, mac) in [
            ("lo", "772", "00:00:00:00:00:00"),
            ("eth0", "1", "52:54:00:12:34:56"),
            ("ib0", "32", "80:00:00:00"),
        ] {
            let dir = root.path().join("sys/class/net").join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("type"), format!("{kind}\n")).unwrap();
            std::fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
        }
        assert_eq!(
            ethernet_nics(root.path()),
            [nic("eth0", "52:54:00:12:34:56")]
        );
    }
}
