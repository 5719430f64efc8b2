//! The virtual IP of each service: allocated once from the control plane's range, then kept,
//! so `<service>.mesh` resolves to the same address across rebuilds and restarts.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipnet::Ipv4Net;

use super::{Store, StoreError};

impl Store {
    /// The virtual IP of each of `services` in `mesh`, allocating the lowest free address of
    /// `range` to a service that has none (or whose address lies outside `range`, after the
    /// range was changed). A service the range has no room for is left out and logged.
    pub async fn virtual_ips(
        &self,
        mesh: &str,
        services: &[&str],
        range: Ipv4Net,
    ) -> Result<BTreeMap<String, Ipv4Addr>, StoreError> {
        let _writer = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        let stored: Vec<(String, String)> =
            sqlx::query_as("SELECT service, ip FROM virtual_ips WHERE mesh = ?").bind(mesh).fetch_all(&mut *tx).await?;
        let mut by_service: BTreeMap<String, Ipv4Addr> = stored
            .into_iter()
            .filter_map(|(service, ip)| ip.parse().ok().filter(|ip| range.contains(ip)).map(|ip| (service, ip)))
            .collect();
        // Addresses handed out here lie beyond the cursor, so `taken` need not learn them.
        let taken: BTreeSet<Ipv4Addr> = by_service.values().copied().collect();
        let mut free = range.hosts().filter(|ip| !taken.contains(ip));
        let mut allocated = false;
        let missing: Vec<&str> = services.iter().copied().filter(|s| !by_service.contains_key(*s)).collect();
        for service in missing {
            let Some(ip) = free.next() else {
                tracing::error!(%mesh, %service, %range, "no free virtual IP left in the range: the service gets none");
                continue;
            };
            sqlx::query(
                "INSERT INTO virtual_ips (mesh, service, ip) VALUES (?, ?, ?)
                 ON CONFLICT (mesh, service) DO UPDATE SET ip = excluded.ip",
            )
            .bind(mesh)
            .bind(service)
            .bind(ip.to_string())
            .execute(&mut *tx)
            .await?;
            by_service.insert(service.to_string(), ip);
            allocated = true;
        }
        if allocated {
            tx.commit().await?;
        }
        by_service.retain(|service, _| services.contains(&service.as_str()));
        Ok(by_service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_are_allocated_once_and_kept() {
        let store = Store::in_memory().await.unwrap();
        let range: Ipv4Net = "240.0.0.0/29".parse().unwrap();
        let first = store.virtual_ips("shop", &["items", "users"], range).await.unwrap();
        assert_eq!(first["items"], Ipv4Addr::new(240, 0, 0, 1));
        assert_eq!(first["users"], Ipv4Addr::new(240, 0, 0, 2));
        // Order of asking and newcomers do not move anyone.
        let again = store.virtual_ips("shop", &["users", "basket", "items"], range).await.unwrap();
        assert_eq!((again["items"], again["users"]), (first["items"], first["users"]));
        assert_eq!(again["basket"], Ipv4Addr::new(240, 0, 0, 3));
        // Meshes have separate address spaces.
        assert_eq!(store.virtual_ips("other", &["items"], range).await.unwrap()["items"], Ipv4Addr::new(240, 0, 0, 1));
    }

    #[tokio::test]
    async fn a_full_range_leaves_the_newcomer_without_an_address() {
        let store = Store::in_memory().await.unwrap();
        let range: Ipv4Net = "240.0.0.0/31".parse().unwrap();
        let ips = store.virtual_ips("shop", &["a", "b", "c"], range).await.unwrap();
        assert_eq!(ips.len(), 2, "{ips:?}");
        assert!(!ips.contains_key("c"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn allocating_while_certificates_are_recorded_never_fails() {
        // Every writer must take the write lock: a deferred transaction that read before
        // another connection's commit cannot write afterwards (SQLITE_BUSY_SNAPSHOT).
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ward.db")).await.unwrap();
        let range: Ipv4Net = "240.0.0.0/16".parse().unwrap();
        let recorder = store.clone();
        let certificates = tokio::spawn(async move {
            for i in 0..300 {
                let serial = format!("{i:x}");
                let issued = crate::store::IssuedCert {
                    serial: serial.clone(),
                    dataplane: format!("items-{}", i % 7),
                    service: "items".into(),
                    token_id: "t".into(),
                    not_after: chrono::Utc::now() + chrono::TimeDelta::hours(1),
                };
                let shown = crate::store::issued_certs::tests::shown(&serial);
                recorder.record_issued_cert("shop", &issued, &shown).await.unwrap();
            }
        });
        for i in 0..300 {
            let service = format!("svc-{i}");
            store.virtual_ips("shop", &[service.as_str()], range).await.unwrap();
        }
        certificates.await.unwrap();
    }

    #[tokio::test]
    async fn a_new_range_moves_only_the_addresses_outside_it() {
        let store = Store::in_memory().await.unwrap();
        let old = store.virtual_ips("shop", &["items"], "240.0.0.0/24".parse().unwrap()).await.unwrap();
        let new = store.virtual_ips("shop", &["items"], "241.0.0.0/24".parse().unwrap()).await.unwrap();
        assert_eq!(old["items"], Ipv4Addr::new(240, 0, 0, 1));
        assert_eq!(new["items"], Ipv4Addr::new(241, 0, 0, 1));
    }
}
