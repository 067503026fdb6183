//! Persistent inventory of nodes and ports.
//!
//! [`Store`] is the only way the rest of the controller reaches the database. It
//! speaks SQLite through sqlx today; its interface (whole records in, whole records
//! out, no SQL outside this module) is what a PostgreSQL implementation would keep.
//! Each node is stored as the JSON of [`Node`] (secrets unmasked) plus the columns
//! needed for lookups, uniqueness and sorting.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ironclad_versioning::controller_api::{Node, Port};
use ironclad_versioning::states::ProvisionState;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not one this store understands.
    #[error("unsupported database URL {0:?}: expected sqlite:///path/to/file or sqlite::memory:")]
    BadUrl(String),
    /// The directory for the database file could not be created.
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored record does not parse.
    #[error("stored record {uuid} is corrupt: {source}")]
    Corrupt {
        /// The record.
        uuid: String,
        /// The cause.
        source: serde_json::Error,
    },
    /// A record could not be serialized.
    #[error("cannot serialize record: {0}")]
    Serialize(serde_json::Error),
    /// Another node has this name.
    #[error("A node with name {0} already exists.")]
    DuplicateName(String),
    /// Another record has this UUID.
    #[error("A resource with UUID {0} already exists.")]
    DuplicateUuid(String),
    /// Another port has this MAC address.
    #[error("A port with MAC address {0} already exists.")]
    DuplicateMac(String),
    /// The node a port refers to does not exist.
    #[error("Node {0} could not be found.")]
    NodeNotFound(String),
    /// The record to update or delete does not exist.
    #[error("{0} could not be found.")]
    Missing(String),
    /// The pagination marker does not exist.
    #[error("Marker {0} could not be found.")]
    MarkerNotFound(String),
}

type Result<T> = std::result::Result<T, StoreError>;

/// Columns nodes can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeSortKey {
    /// Creation order (the default).
    Id,
    /// UUID.
    Uuid,
    /// Name.
    Name,
    /// Hardware type.
    Driver,
    /// Provision state.
    ProvisionState,
    /// Instance UUID.
    InstanceUuid,
    /// Creation time.
    CreatedAt,
    /// Last update time.
    UpdatedAt,
}

impl NodeSortKey {
    fn column(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Uuid => "uuid",
            Self::Name => "name",
            Self::Driver => "driver",
            Self::ProvisionState => "provision_state",
            Self::InstanceUuid => "instance_uuid",
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
        }
    }
}

impl FromStr for NodeSortKey {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "id" => Self::Id,
            "uuid" => Self::Uuid,
            "name" => Self::Name,
            "driver" => Self::Driver,
            "provision_state" => Self::ProvisionState,
            "instance_uuid" => Self::InstanceUuid,
            "created_at" => Self::CreatedAt,
            "updated_at" => Self::UpdatedAt,
            other => return Err(other.to_owned()),
        })
    }
}

/// Columns ports can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSortKey {
    /// Creation order (the default).
    Id,
    /// UUID.
    Uuid,
    /// MAC address.
    Address,
    /// Creation time.
    CreatedAt,
    /// Last update time.
    UpdatedAt,
}

impl PortSortKey {
    fn column(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Uuid => "uuid",
            Self::Address => "address",
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
        }
    }
}

impl FromStr for PortSortKey {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "id" => Self::Id,
            "uuid" => Self::Uuid,
            "address" => Self::Address,
            "created_at" => Self::CreatedAt,
            "updated_at" => Self::UpdatedAt,
            other => return Err(other.to_owned()),
        })
    }
}

/// One page of a listing: at most `limit` records after `marker`, in the given order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<K> {
    /// Largest number of records to return.
    pub limit: u32,
    /// UUID of the last record of the previous page.
    pub marker: Option<String>,
    /// Column to sort by.
    pub sort_key: K,
    /// Whether to sort descending.
    pub descending: bool,
}

/// Filters of a node listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFilter {
    /// Only nodes in this provision state.
    pub provision_state: Option<String>,
    /// Only nodes of this hardware type.
    pub driver: Option<String>,
}

/// Filters of a port listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortFilter {
    /// Only ports of this node.
    pub node_uuid: Option<String>,
    /// Only the port with this (lower-case) MAC address.
    pub address: Option<String>,
}

/// The controller's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    directory: Option<PathBuf>,
}

/// The file path in a `sqlite://` URL, or `None` for an in-memory database.
pub fn sqlite_path(url: &str) -> Result<Option<PathBuf>> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::BadUrl(url.to_owned()))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(None);
    }
    Ok(Some(PathBuf::from(path)))
}

fn now() -> String {
    crate::timestamp_now()
}

impl Store {
    /// Opens (creating when missing) the database at `url` and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self> {
        let path = sqlite_path(url)?;
        let mut options = SqliteConnectOptions::new()
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .create_if_missing(true);
        let directory = match &path {
            Some(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
                        path: parent.to_owned(),
                        source,
                    })?;
                }
                options = options.filename(path).journal_mode(SqliteJournalMode::Wal);
                path.parent().map(Path::to_path_buf)
            }
            None => {
                options = options.in_memory(true);
                None
            }
        };
        // An in-memory database lives in one connection.
        let max = if path.is_some() { 8 } else { 1 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool, directory })
    }

    /// The directory holding the database file (`None` for an in-memory database).
    pub fn directory(&self) -> Option<&Path> {
        self.directory.as_deref()
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Inserts a new node.
    pub async fn create_node(&self, node: &Node) -> Result<()> {
        let data = serde_json::to_string(node).map_err(StoreError::Serialize)?;
        let result = sqlx::query(
            "INSERT INTO nodes (uuid, id, name, driver, provision_state, instance_uuid, created_at, updated_at, data) \
             VALUES (?, (SELECT COALESCE(MAX(id), 0) + 1 FROM nodes), ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&node.uuid)
        .bind(&node.name)
        .bind(&node.driver)
        .bind(state_column(node))
        .bind(&node.instance_uuid)
        .bind(node.created_at.clone().unwrap_or_else(now))
        .bind(&node.updated_at)
        .bind(data)
        .execute(&self.pool)
        .await;
        result.map_err(|e| node_conflict(e, node))?;
        Ok(())
    }

    /// Replaces a node's record.
    pub async fn update_node(&self, node: &Node) -> Result<()> {
        let data = serde_json::to_string(node).map_err(StoreError::Serialize)?;
        let result = sqlx::query(
            "UPDATE nodes SET name = ?, driver = ?, provision_state = ?, instance_uuid = ?, updated_at = ?, data = ? \
             WHERE uuid = ?",
        )
        .bind(&node.name)
        .bind(&node.driver)
        .bind(state_column(node))
        .bind(&node.instance_uuid)
        .bind(&node.updated_at)
        .bind(data)
        .bind(&node.uuid)
        .execute(&self.pool)
        .await
        .map_err(|e| node_conflict(e, node))?;
        if result.rows_affected() == 0 {
            return Err(StoreError::Missing(format!("Node {}", node.uuid)));
        }
        Ok(())
    }

    /// Finds a node by UUID or, failing that, by name.
    pub async fn get_node(&self, ident: &str) -> Result<Option<Node>> {
        let row = sqlx::query("SELECT uuid, data FROM nodes WHERE uuid = ? OR name = ? LIMIT 1")
            .bind(ident)
            .bind(ident)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| parse_row(&row)).transpose()
    }

    /// Deletes a node and its ports.
    pub async fn delete_node(&self, uuid: &str) -> Result<()> {
        let result = sqlx::query("DELETE FROM nodes WHERE uuid = ?")
            .bind(uuid)
            .execute(&self.pool)
            .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::Missing(format!("Node {uuid}")));
        }
        Ok(())
    }

    /// One page of nodes.
    pub async fn list_nodes(
        &self,
        filter: &NodeFilter,
        page: &Page<NodeSortKey>,
    ) -> Result<Vec<Node>> {
        let mut conditions = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        if let Some(state) = &filter.provision_state {
            conditions.push("provision_state = ?".to_owned());
            binds.push(state.clone());
        }
        if let Some(driver) = &filter.driver {
            conditions.push("driver = ?".to_owned());
            binds.push(driver.clone());
        }
        self.list("nodes", page.sort_key.column(), page, conditions, binds)
            .await
    }

    /// Every node in `state` (for periodic tasks).
    pub async fn nodes_in_state(&self, state: ProvisionState) -> Result<Vec<Node>> {
        let rows =
            sqlx::query("SELECT uuid, data FROM nodes WHERE provision_state = ? ORDER BY id")
                .bind(state.as_str())
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(parse_row).collect()
    }

    /// Inserts a new port; its `address` must already be lower-cased.
    pub async fn create_port(&self, port: &Port) -> Result<()> {
        let data = serde_json::to_string(port).map_err(StoreError::Serialize)?;
        let result = sqlx::query(
            "INSERT INTO ports (uuid, id, address, node_uuid, created_at, updated_at, data) \
             VALUES (?, (SELECT COALESCE(MAX(id), 0) + 1 FROM ports), ?, ?, ?, ?, ?)",
        )
        .bind(&port.uuid)
        .bind(&port.address)
        .bind(&port.node_uuid)
        .bind(port.created_at.clone().unwrap_or_else(now))
        .bind(&port.updated_at)
        .bind(data)
        .execute(&self.pool)
        .await;
        result.map_err(|e| match e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                if db.message().contains("address") {
                    StoreError::DuplicateMac(port.address.clone())
                } else {
                    StoreError::DuplicateUuid(port.uuid.clone())
                }
            }
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                StoreError::NodeNotFound(port.node_uuid.clone())
            }
            other => StoreError::Database(other),
        })?;
        Ok(())
    }

    /// Finds a port by UUID.
    pub async fn get_port(&self, uuid: &str) -> Result<Option<Port>> {
        let row = sqlx::query("SELECT uuid, data FROM ports WHERE uuid = ?")
            .bind(uuid)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| parse_row(&row)).transpose()
    }

    /// Deletes a port.
    pub async fn delete_port(&self, uuid: &str) -> Result<()> {
        let result = sqlx::query("DELETE FROM ports WHERE uuid = ?")
            .bind(uuid)
            .execute(&self.pool)
            .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::Missing(format!("Port {uuid}")));
        }
        Ok(())
    }

    /// One page of ports.
    pub async fn list_ports(
        &self,
        filter: &PortFilter,
        page: &Page<PortSortKey>,
    ) -> Result<Vec<Port>> {
        let mut conditions = Vec::new();
        let mut binds = Vec::new();
        if let Some(node) = &filter.node_uuid {
            conditions.push("node_uuid = ?".to_owned());
            binds.push(node.clone());
        }
        if let Some(address) = &filter.address {
            conditions.push("address = ?".to_owned());
            binds.push(address.clone());
        }
        self.list("ports", page.sort_key.column(), page, conditions, binds)
            .await
    }

    /// Every port of a node, in creation order.
    pub async fn ports_of_node(&self, node_uuid: &str) -> Result<Vec<Port>> {
        let rows = sqlx::query("SELECT uuid, data FROM ports WHERE node_uuid = ? ORDER BY id")
            .bind(node_uuid)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(parse_row).collect()
    }

    /// The node owning a port with one of these (lower-case) MAC addresses.
    pub async fn find_node_by_macs(&self, macs: &[String]) -> Result<Option<Node>> {
        for mac in macs {
            let row = sqlx::query(
                "SELECT nodes.uuid, nodes.data FROM nodes JOIN ports ON ports.node_uuid = nodes.uuid \
                 WHERE ports.address = ? LIMIT 1",
            )
            .bind(mac)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = row {
                return parse_row(&row).map(Some);
            }
        }
        Ok(None)
    }

    async fn list<T: serde::de::DeserializeOwned, K>(
        &self,
        table: &'static str,
        column: &'static str,
        page: &Page<K>,
        mut conditions: Vec<String>,
        mut binds: Vec<String>,
    ) -> Result<Vec<T>> {
        let (cmp, dir) = if page.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        // NULLs sort as empty strings so that row-value comparison stays total.
        let key = format!("COALESCE({column}, '')");
        if let Some(marker) = &page.marker {
            let exists: Option<i64> =
                sqlx::query_scalar(&format!("SELECT id FROM {table} WHERE uuid = ?"))
                    .bind(marker)
                    .fetch_optional(&self.pool)
                    .await?;
            if exists.is_none() {
                return Err(StoreError::MarkerNotFound(marker.clone()));
            }
            conditions.push(format!(
                "({key}, id) {cmp} (SELECT {key}, id FROM {table} WHERE uuid = ?)"
            ));
            binds.push(marker.clone());
        }
        let mut sql = format!("SELECT uuid, data FROM {table}");
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(&format!(" ORDER BY {key} {dir}, id {dir} LIMIT ?"));
        let mut query = sqlx::query(&sql);
        for bind in &binds {
            query = query.bind(bind);
        }
        let rows = query
            .bind(i64::from(page.limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(parse_row).collect()
    }
}

fn state_column(node: &Node) -> &'static str {
    node.provision_state
        .unwrap_or(ProvisionState::Available)
        .as_str()
}

fn node_conflict(error: sqlx::Error, node: &Node) -> StoreError {
    match error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            if db.message().contains("name") {
                StoreError::DuplicateName(node.name.clone().unwrap_or_default())
            } else {
                StoreError::DuplicateUuid(node.uuid.clone())
            }
        }
        other => StoreError::Database(other),
    }
}

fn parse_row<T: serde::de::DeserializeOwned>(row: &sqlx::sqlite::SqliteRow) -> Result<T> {
    let uuid: String = row.try_get("uuid")?;
    let data: String = row.try_get("data")?;
    serde_json::from_str(&data).map_err(|source| StoreError::Corrupt { uuid, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_are_understood() {
        assert_eq!(
            sqlite_path("sqlite:///var/lib/x.sqlite").unwrap(),
            Some(PathBuf::from("/var/lib/x.sqlite"))
        );
        assert_eq!(sqlite_path("sqlite::memory:").unwrap(), None);
        assert!(sqlite_path("postgres://x").is_err());
    }

    #[test]
    fn sort_keys_are_whitelisted() {
        assert_eq!("name".parse::<NodeSortKey>(), Ok(NodeSortKey::Name));
        assert!("data; DROP TABLE nodes".parse::<NodeSortKey>().is_err());
        assert_eq!("address".parse::<PortSortKey>(), Ok(PortSortKey::Address));
    }
}
