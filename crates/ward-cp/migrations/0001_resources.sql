-- Resources of every type; a Mesh's row has mesh = name.
CREATE TABLE resources (
    type        TEXT    NOT NULL,
    mesh        TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    labels      TEXT    NOT NULL,
    spec        TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    modified_at TEXT    NOT NULL,
    PRIMARY KEY (type, mesh, name)
);
CREATE INDEX resources_by_mesh ON resources (mesh);

-- Every accepted change, in order.
CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    time        TEXT    NOT NULL,
    token_name  TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    resource    TEXT    NOT NULL,
    old_version INTEGER,
    new_version INTEGER
);

-- Private keys and signing secrets, sealed with the key-encryption key.
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    sealed     BLOB NOT NULL,
    created_at TEXT NOT NULL
);
