-- The service whose identity each certificate carries: a dataplane whose inbounds serve several
-- services holds one certificate per service, and peers must read a serial's tags as those of
-- its own service. Empty (rows from before): the dataplane's first service.
ALTER TABLE issued_certs ADD COLUMN service TEXT NOT NULL DEFAULT '';
