//! Changes to links, addresses and routes through rtnetlink (no `ip` binary).

use std::net::IpAddr;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::BondMode;
use rtnetlink::{Handle, LinkBond, LinkUnspec, LinkVlan, RouteMessageBuilder};

/// Why a netlink request failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened.
    #[error("opening the rtnetlink socket: {0}")]
    Connect(std::io::Error),
    /// The kernel refused a request.
    #[error("{what}: {source}")]
    Request {
        /// What was asked.
        what: String,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
    /// A link is missing.
    #[error("no network interface named {0}")]
    NoSuchLink(String),
}

/// A connection to the kernel's routing socket.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

fn req(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Request { what, source }
}

/// A bonding mode name from `network_data.json` (`802.3ad`, `active-backup`, `4`, ...).
pub fn bond_mode(name: &str) -> BondMode {
    match name {
        "balance-rr" | "0" => BondMode::BalanceRr,
        "balance-xor" | "2" => BondMode::BalanceXor,
        "broadcast" | "3" => BondMode::Broadcast,
        "802.3ad" | "4" => BondMode::Ieee8023Ad,
        "balance-tlb" | "5" => BondMode::BalanceTlb,
        "balance-alb" | "6" => BondMode::BalanceAlb,
        _ => BondMode::ActiveBackup,
    }
}

impl Netlink {
    /// Opens the socket; its I/O runs on a task of the current Tokio runtime.
    pub fn connect() -> Result<Self, NetlinkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// The index of the link called `name`.
    pub async fn index(&self, name: &str) -> Result<u32, NetlinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link.header.index),
            Ok(None) | Err(_) => Err(NetlinkError::NoSuchLink(name.to_owned())),
        }
    }

    /// Sets a link up.
    pub async fn up(&self, index: u32) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(req(format!("setting link {index} up")))
    }

    /// Sets a link's MTU.
    pub async fn mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
            .execute()
            .await
            .map_err(req(format!("setting the MTU of link {index} to {mtu}")))
    }

    /// Adds (or refreshes) an address.
    pub async fn add_address(
        &self,
        index: u32,
        address: IpAddr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        self.handle
            .address()
            .add(index, address, prefix)
            .replace()
            .execute()
            .await
            .map_err(req(format!("adding {address}/{prefix} to link {index}")))
    }

    /// Adds (or replaces) a route through `index` with the given metric.
    pub async fn add_route(
        &self,
        index: u32,
        destination: IpAddr,
        prefix: u8,
        gateway: Option<IpAddr>,
        metric: u32,
    ) -> Result<(), NetlinkError> {
        let message = match destination {
            IpAddr::V4(dst) => {
                let mut b = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .destination_prefix(dst, prefix)
                    .output_interface(index)
                    .priority(metric);
                if let Some(IpAddr::V4(gw)) = gateway {
                    b = b.gateway(gw);
                }
                b.build()
            }
            IpAddr::V6(dst) => {
                let mut b = RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                    .destination_prefix(dst, prefix)
                    .output_interface(index)
                    .priority(metric);
                if let Some(IpAddr::V6(gw)) = gateway {
                    b = b.gateway(gw);
                }
                b.build()
            }
        };
        self.handle
            .route()
            .add(message)
            .replace()
            .execute()
            .await
            .map_err(req(format!(
                "adding route {destination}/{prefix} via {gateway:?} on link {index}"
            )))
    }

    /// Creates VLAN `vlan_id` on `parent` named `name`; returns its index.
    pub async fn add_vlan(
        &self,
        name: &str,
        parent: u32,
        vlan_id: u16,
    ) -> Result<u32, NetlinkError> {
        self.handle
            .link()
            .add(LinkVlan::new(name, parent, vlan_id).up().build())
            .execute()
            .await
            .map_err(req(format!("creating VLAN {name} (id {vlan_id})")))?;
        self.index(name).await
    }

    /// Creates a bond named `name`; returns its index.
    pub async fn add_bond(
        &self,
        name: &str,
        mode: BondMode,
        miimon: Option<u32>,
    ) -> Result<u32, NetlinkError> {
        let mut builder = LinkBond::new(name).mode(mode);
        if let Some(ms) = miimon {
            builder = builder.miimon(ms);
        }
        self.handle
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(req(format!("creating bond {name}")))?;
        self.index(name).await
    }

    /// Makes `member` a port of `bond` (the member is taken down first, as the
    /// bonding driver requires, and brought up again).
    pub async fn enslave(&self, member: u32, bond: u32) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(member).down().build())
            .execute()
            .await
            .map_err(req(format!("setting link {member} down")))?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(member).controller(bond).build())
            .execute()
            .await
            .map_err(req(format!("adding link {member} to bond {bond}")))?;
        self.up(member).await
    }
}
