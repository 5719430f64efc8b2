-- Every certificate issued to a dataplane, kept until it expires: peers learn from it which
-- dataplane (and so which tags) a serial belongs to, and which serials a revoked token left valid.
CREATE TABLE issued_certs (
    mesh      TEXT NOT NULL,
    serial    TEXT NOT NULL,
    dataplane TEXT NOT NULL,
    token_id  TEXT NOT NULL,
    not_after INTEGER NOT NULL,
    PRIMARY KEY (mesh, serial)
);
-- Each dataplane's certificates, to forget its expired ones as it is issued a new one.
CREATE INDEX issued_certs_by_dataplane ON issued_certs (mesh, dataplane);
