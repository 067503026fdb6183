-- Nodes: the full record is kept as JSON in `data`; the other columns exist for
-- lookups, uniqueness and sorting.
CREATE TABLE nodes (
    uuid TEXT PRIMARY KEY NOT NULL,
    id INTEGER NOT NULL UNIQUE,
    name TEXT UNIQUE,
    driver TEXT NOT NULL,
    provision_state TEXT NOT NULL,
    instance_uuid TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT,
    data TEXT NOT NULL
);
CREATE INDEX nodes_provision_state ON nodes (provision_state);

-- Ports: MAC addresses are stored lower-cased and are unique.
CREATE TABLE ports (
    uuid TEXT PRIMARY KEY NOT NULL,
    id INTEGER NOT NULL UNIQUE,
    address TEXT NOT NULL UNIQUE,
    node_uuid TEXT NOT NULL REFERENCES nodes (uuid) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    updated_at TEXT,
    data TEXT NOT NULL
);
CREATE INDEX ports_node_uuid ON ports (node_uuid);
