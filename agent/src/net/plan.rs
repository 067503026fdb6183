//! A static network configuration as a plan of links, addresses, routes and DNS
//! servers, built from `ip=` or from an OpenStack `network_data.json` (the
//! config drive that virtual-media boots carry), and applied by
//! [`crate::net::netlink`].

use std::net::IpAddr;

use serde::Deserialize;

use super::ipconfig::{prefix_len, StaticIp};

/// One link to bring up or create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// Identifier used by addresses, routes and other links.
    pub id: String,
    /// What the link is.
    pub kind: LinkKind,
    /// MTU, when set.
    pub mtu: Option<u32>,
}

/// The kinds of links a plan can hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// An existing NIC, found by MAC or by name.
    Physical {
        /// Its MAC (lower case, colon-separated).
        mac: Option<String>,
        /// Its kernel name.
        name: Option<String>,
    },
    /// An 802.1Q VLAN on another link.
    Vlan {
        /// Id of the parent link.
        parent: String,
        /// The VLAN id.
        vlan_id: u16,
    },
    /// A bond of other links.
    Bond {
        /// Ids of the member links.
        members: Vec<String>,
        /// Bonding mode as written (`active-backup`, `802.3ad`, ...).
        mode: String,
        /// MII monitoring interval in ms.
        miimon: Option<u32>,
    },
}

/// An address on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressSpec {
    /// Link id.
    pub link: String,
    /// The address.
    pub address: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

/// A route through a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Link id.
    pub link: String,
    /// Destination network.
    pub destination: IpAddr,
    /// Destination prefix length (0 = default route).
    pub prefix: u8,
    /// Next hop, if not on-link.
    pub gateway: Option<IpAddr>,
}

/// A whole static configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPlan {
    /// Links, in creation order (members before bonds, parents before VLANs).
    pub links: Vec<LinkSpec>,
    /// Static addresses.
    pub addresses: Vec<AddressSpec>,
    /// Static routes.
    pub routes: Vec<RouteSpec>,
    /// Link ids to run DHCP on (`ipv4_dhcp` networks).
    pub dhcp_links: Vec<String>,
    /// DNS servers.
    pub dns: Vec<IpAddr>,
    /// Host name, when given.
    pub hostname: Option<String>,
}

/// Why `network_data.json` is unusable.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Not JSON of the expected shape.
    #[error("network_data.json does not parse: {0}")]
    Json(#[from] serde_json::Error),
    /// A link or network names a link that does not exist.
    #[error("network_data.json: {what} refers to unknown link {link:?}")]
    UnknownLink {
        /// The referring item.
        what: String,
        /// The missing id.
        link: String,
    },
    /// A value does not parse.
    #[error("network_data.json: {what}: invalid {field} {value:?}")]
    BadValue {
        /// The item.
        what: String,
        /// Which field.
        field: &'static str,
        /// Its text.
        value: String,
    },
    /// Links refer to each other in a cycle.
    #[error("network_data.json: links {0:?} refer to each other in a cycle")]
    Cycle(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct NetworkData {
    #[serde(default)]
    links: Vec<NdLink>,
    #[serde(default)]
    networks: Vec<NdNetwork>,
    #[serde(default)]
    services: Vec<NdService>,
}

#[derive(Debug, Deserialize)]
struct NdLink {
    id: String,
    #[serde(rename = "type", default)]
    kind: String,
    ethernet_mac_address: Option<String>,
    mtu: Option<u32>,
    vlan_link: Option<String>,
    vlan_id: Option<u16>,
    #[serde(default)]
    bond_links: Vec<String>,
    bond_mode: Option<String>,
    bond_miimon: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct NdNetwork {
    #[serde(default)]
    id: String,
    #[serde(rename = "type")]
    kind: String,
    link: String,
    ip_address: Option<String>,
    netmask: Option<String>,
    #[serde(default)]
    routes: Vec<NdRoute>,
    #[serde(default)]
    services: Vec<NdService>,
}

#[derive(Debug, Deserialize)]
struct NdRoute {
    network: String,
    netmask: String,
    gateway: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NdService {
    #[serde(rename = "type")]
    kind: String,
    address: String,
}

/// Prefix length of any netmask: dotted IPv4, IPv6 mask (`ffff:ffff::`), or a number.
fn any_prefix(mask: &str, address: IpAddr) -> Option<u8> {
    if let Some(p) = prefix_len(mask, address) {
        return Some(p);
    }
    let v6: std::net::Ipv6Addr = mask.parse().ok()?;
    let bits = u128::from(v6);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

fn bad_value(what: &str, field: &'static str, value: &str) -> PlanError {
    PlanError::BadValue {
        what: what.to_owned(),
        field,
        value: value.to_owned(),
    }
}

/// Parses `network_data.json` into a plan.
pub fn from_network_data(json: &str) -> Result<NetworkPlan, PlanError> {
    let data: NetworkData = serde_json::from_str(json)?;
    let mut plan = NetworkPlan::default();
    let ids: Vec<&str> = data.links.iter().map(|l| l.id.as_str()).collect();
    let check = |what: &str, link: &str| {
        if ids.contains(&link) {
            Ok(())
        } else {
            Err(PlanError::UnknownLink {
                what: what.to_owned(),
                link: link.to_owned(),
            })
        }
    };
    let mut specs = Vec::new();
    for link in &data.links {
        let what = format!("link {:?}", link.id);
        let mac = match &link.ethernet_mac_address {
            Some(m) => Some(
                crate::config::normalize_mac(m).map_err(|_| bad_value(&what, "MAC address", m))?,
            ),
            None => None,
        };
        let kind = match link.kind.as_str() {
            "vlan" => {
                let parent = link.vlan_link.clone().unwrap_or_default();
                check(&what, &parent)?;
                LinkKind::Vlan {
                    parent,
                    vlan_id: link
                        .vlan_id
                        .ok_or_else(|| bad_value(&what, "vlan_id", "(missing)"))?,
                }
            }
            "bond" => {
                for member in &link.bond_links {
                    check(&what, member)?;
                }
                LinkKind::Bond {
                    members: link.bond_links.clone(),
                    mode: link
                        .bond_mode
                        .clone()
                        .unwrap_or_else(|| "active-backup".into()),
                    miimon: link.bond_miimon,
                }
            }
            // phy, ethernet, ovs, bridge, tap, vif, ...: an existing NIC.
            _ => LinkKind::Physical { mac, name: None },
        };
        specs.push(LinkSpec {
            id: link.id.clone(),
            kind,
            mtu: link.mtu,
        });
    }
    plan.links = creation_order(specs)?;

    for network in &data.networks {
        let what = format!("network {:?}", network.id);
        check(&what, &network.link)?;
        match network.kind.as_str() {
            "ipv4_dhcp"
            | "ipv6_dhcp"
            | "ipv6_slaac"
            | "ipv6_dhcpv6-stateless"
            | "ipv6_dhcpv6-stateful" => {
                if network.kind == "ipv4_dhcp" && !plan.dhcp_links.contains(&network.link) {
                    plan.dhcp_links.push(network.link.clone());
                }
            }
            "ipv4" | "ipv6" => {
                let text = network.ip_address.clone().unwrap_or_default();
                let (addr_text, inline_prefix) = match text.split_once('/') {
                    Some((a, p)) => (a.to_owned(), Some(p.to_owned())),
                    None => (text.clone(), None),
                };
                let address: IpAddr = addr_text
                    .parse()
                    .map_err(|_| bad_value(&what, "ip_address", &text))?;
                let mask = inline_prefix
                    .or_else(|| network.netmask.clone())
                    .unwrap_or_else(|| if address.is_ipv4() { "32" } else { "128" }.into());
                let prefix =
                    any_prefix(&mask, address).ok_or_else(|| bad_value(&what, "netmask", &mask))?;
                plan.addresses.push(AddressSpec {
                    link: network.link.clone(),
                    address,
                    prefix,
                });
                for route in &network.routes {
                    let destination: IpAddr = route
                        .network
                        .parse()
                        .map_err(|_| bad_value(&what, "route network", &route.network))?;
                    let prefix = any_prefix(&route.netmask, destination)
                        .ok_or_else(|| bad_value(&what, "route netmask", &route.netmask))?;
                    let gateway = match route.gateway.as_deref() {
                        None | Some("") => None,
                        Some(g) => Some(
                            g.parse()
                                .map_err(|_| bad_value(&what, "route gateway", g))?,
                        ),
                    };
                    plan.routes.push(RouteSpec {
                        link: network.link.clone(),
                        destination,
                        prefix,
                        gateway,
                    });
                }
                add_dns(&mut plan.dns, &network.services);
            }
            other => tracing::warn!("network_data.json: ignoring {what} of type {other:?}"),
        }
    }
    add_dns(&mut plan.dns, &data.services);
    Ok(plan)
}

fn add_dns(dns: &mut Vec<IpAddr>, services: &[NdService]) {
    for service in services.iter().filter(|s| s.kind == "dns") {
        if let Ok(ip) = service.address.parse() {
            if !dns.contains(&ip) {
                dns.push(ip);
            }
        }
    }
}

/// Sorts links so that every link comes after the links it is built on.
fn creation_order(mut pending: Vec<LinkSpec>) -> Result<Vec<LinkSpec>, PlanError> {
    let mut ordered: Vec<LinkSpec> = Vec::new();
    while !pending.is_empty() {
        let ready = |l: &LinkSpec| {
            let deps: Vec<&String> = match &l.kind {
                LinkKind::Physical { .. } => Vec::new(),
                LinkKind::Vlan { parent, .. } => vec![parent],
                LinkKind::Bond { members, .. } => members.iter().collect(),
            };
            deps.iter().all(|d| ordered.iter().any(|o| &o.id == *d))
        };
        let (now, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|l| ready(l));
        if now.is_empty() {
            return Err(PlanError::Cycle(later.into_iter().map(|l| l.id).collect()));
        }
        ordered.extend(now);
        pending = later;
    }
    Ok(ordered)
}

/// The plan for a static `ip=` on `device` (the interface name chosen by the caller).
pub fn from_ip_param(ip: &StaticIp, device: &str) -> NetworkPlan {
    let default_route = match ip.address {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    NetworkPlan {
        links: vec![LinkSpec {
            id: device.to_owned(),
            kind: LinkKind::Physical {
                mac: None,
                name: Some(device.to_owned()),
            },
            mtu: None,
        }],
        addresses: vec![AddressSpec {
            link: device.to_owned(),
            address: ip.address,
            prefix: ip.prefix,
        }],
        routes: ip
            .gateway
            .map(|gateway| RouteSpec {
                link: device.to_owned(),
                destination: default_route,
                prefix: 0,
                gateway: Some(gateway),
            })
            .into_iter()
            .collect(),
        dhcp_links: Vec::new(),
        dns: ip.dns.clone(),
        hostname: ip.hostname.clone(),
    }
}

/// The text of `/etc/resolv.conf` for these servers.
pub fn resolv_conf(dns: &[IpAddr]) -> String {
    let mut text = String::from("# written by ironclad-agent\n");
    for server in dns {
        text.push_str(&format!("nameserver {server}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "links": [
        {"id": "vlan0", "type": "vlan", "vlan_link": "bond0", "vlan_id": 101,
         "vlan_mac_address": "52:54:00:00:00:01"},
        {"id": "bond0", "type": "bond", "bond_links": ["eth0", "eth1"],
         "bond_mode": "802.3ad", "bond_miimon": 100, "ethernet_mac_address": "52:54:00:00:00:01"},
        {"id": "eth0", "type": "phy", "ethernet_mac_address": "52:54:00:00:00:01", "mtu": 9000},
        {"id": "eth1", "type": "phy", "ethernet_mac_address": "52:54:00:00:00:02"},
        {"id": "eth2", "type": "phy", "ethernet_mac_address": "52:54:00:00:00:03"}
      ],
      "networks": [
        {"id": "n0", "type": "ipv4", "link": "vlan0", "ip_address": "10.0.0.5",
         "netmask": "255.255.255.0", "network_id": "x",
         "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.0.1"},
                    {"network": "192.168.0.0", "netmask": "255.255.0.0", "gateway": "10.0.0.2"}],
         "services": [{"type": "dns", "address": "10.0.0.53"}]},
        {"id": "n1", "type": "ipv6", "link": "eth2", "ip_address": "fd00::5",
         "netmask": "ffff:ffff:ffff:ffff::",
         "routes": [{"network": "::", "netmask": "::", "gateway": "fd00::1"}]},
        {"id": "n2", "type": "ipv4_dhcp", "link": "eth2"}
      ],
      "services": [{"type": "dns", "address": "8.8.8.8"}, {"type": "dns", "address": "10.0.0.53"}]
    }"#;

    #[test]
    fn network_data_is_planned() {
        let plan = from_network_data(SAMPLE).unwrap();
        let ids: Vec<&str> = plan.links.iter().map(|l| l.id.as_str()).collect();
        let pos = |n: &str| ids.iter().position(|x| *x == n).unwrap();
        assert!(pos("eth0") < pos("bond0") && pos("eth1") < pos("bond0"));
        assert!(pos("bond0") < pos("vlan0"));
        assert_eq!(
            plan.links[pos("vlan0")].kind,
            LinkKind::Vlan {
                parent: "bond0".into(),
                vlan_id: 101
            }
        );
        assert_eq!(plan.links[pos("eth0")].mtu, Some(9000));
        assert_eq!(
            plan.addresses,
            [
                AddressSpec {
                    link: "vlan0".into(),
                    address: "10.0.0.5".parse().unwrap(),
                    prefix: 24
                },
                AddressSpec {
                    link: "eth2".into(),
                    address: "fd00::5".parse().unwrap(),
                    prefix: 64
                }
            ]
        );
        assert_eq!(plan.routes.len(), 3);
        assert_eq!(plan.routes[0].prefix, 0);
        assert_eq!(plan.routes[1].prefix, 16);
        assert_eq!(plan.routes[2].gateway, Some("fd00::1".parse().unwrap()));
        assert_eq!(plan.dhcp_links, ["eth2"]);
        assert_eq!(
            plan.dns,
            [
                "10.0.0.53".parse::<IpAddr>().unwrap(),
                "8.8.8.8".parse().unwrap()
            ]
        );
        assert_eq!(
            resolv_conf(&plan.dns),
            "# written by ironclad-agent\nnameserver 10.0.0.53\nnameserver 8.8.8.8\n"
        );
    }

    #[test]
    fn broken_network_data_is_refused() {
        let unknown = r#"{"links": [], "networks": [{"type": "ipv4", "link": "x", "ip_address": "10.0.0.1"}]}"#;
        assert!(matches!(
            from_network_data(unknown),
            Err(PlanError::UnknownLink { .. })
        ));
        let cycle = r#"{"links": [{"id": "a", "type": "vlan", "vlan_link": "b", "vlan_id": 1},
                                 {"id": "b", "type": "vlan", "vlan_link": "a", "vlan_id": 2}]}"#;
        assert!(matches!(from_network_data(cycle), Err(PlanError::Cycle(_))));
        let bad = r#"{"links": [{"id": "a", "type": "phy"}],
                      "networks": [{"type": "ipv4", "link": "a", "ip_address": "10.0.0.1", "netmask": "255.0.255.0"}]}"#;
        assert!(matches!(
            from_network_data(bad),
            Err(PlanError::BadValue { .. })
        ));
        assert!(from_network_data("not json").is_err());
    }

    #[test]
    fn ip_param_becomes_a_plan() {
        let ip = StaticIp {
            address: "10.0.2.15".parse().unwrap(),
            prefix: 24,
            gateway: Some("10.0.2.2".parse().unwrap()),
            hostname: None,
            device: None,
            dns: vec!["10.0.2.3".parse().unwrap()],
        };
        let plan = from_ip_param(&ip, "eth0");
        assert_eq!(plan.addresses[0].link, "eth0");
        assert_eq!(plan.routes[0].gateway, Some("10.0.2.2".parse().unwrap()));
        assert_eq!(
            plan.routes[0].destination,
            "0.0.0.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(plan.dns.len(), 1);
    }
}
