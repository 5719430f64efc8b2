-- The CA of each backend of each mesh: the certificate in clear, the key sealed.
CREATE TABLE mesh_cas (
    mesh       TEXT NOT NULL,
    backend    TEXT NOT NULL,
    cert_pem   TEXT NOT NULL,
    sealed_key BLOB NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (mesh, backend)
);

-- Keys that sign dataplane tokens, per mesh; the highest seq signs new tokens.
CREATE TABLE signing_keys (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    mesh       TEXT NOT NULL,
    kid        TEXT NOT NULL,
    sealed_key BLOB NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (mesh, kid)
);

-- Dataplane tokens revoked before their expiry, by jti.
CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    revoked_at TEXT NOT NULL
);

-- The certificate each dataplane was issued last.
CREATE TABLE dataplane_certs (
    mesh       TEXT NOT NULL,
    dataplane  TEXT NOT NULL,
    spiffe_id  TEXT NOT NULL,
    serial     TEXT NOT NULL,
    not_before TEXT NOT NULL,
    not_after  TEXT NOT NULL,
    backend    TEXT NOT NULL,
    PRIMARY KEY (mesh, dataplane)
);
