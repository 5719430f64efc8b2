-- The certificate each dataplane was issued last for each of its identities: a dataplane whose
-- inbounds serve several services holds one per service, and `ward inspect` shows them all.
CREATE TABLE dataplane_certs_per_identity (
    mesh       TEXT NOT NULL,
    dataplane  TEXT NOT NULL,
    spiffe_id  TEXT NOT NULL,
    serial     TEXT NOT NULL,
    not_before TEXT NOT NULL,
    not_after  TEXT NOT NULL,
    backend    TEXT NOT NULL,
    PRIMARY KEY (mesh, dataplane, spiffe_id)
);
INSERT INTO dataplane_certs_per_identity SELECT mesh, dataplane, spiffe_id, serial, not_before, not_after, backend
    FROM dataplane_certs;
DROP TABLE dataplane_certs;
ALTER TABLE dataplane_certs_per_identity RENAME TO dataplane_certs;
