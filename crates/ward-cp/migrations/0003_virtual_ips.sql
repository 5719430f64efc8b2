-- The virtual IP of each service of each mesh, allocated once and kept, so `<service>.mesh`
-- names the same address across restarts.
CREATE TABLE virtual_ips (
    mesh    TEXT NOT NULL,
    service TEXT NOT NULL,
    ip      TEXT NOT NULL,
    PRIMARY KEY (mesh, service),
    UNIQUE (mesh, ip)
);
