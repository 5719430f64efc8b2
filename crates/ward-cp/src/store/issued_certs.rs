//! The certificates issued to dataplanes that are still valid, each with the token it was
//! issued under, so the proxies of a mesh can learn whose a serial is and which were revoked.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{DataplaneCert, Store, StoreError};

/// One certificate issued to a dataplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// The Dataplane it was issued to.
    pub dataplane: String,
    /// The service whose identity it carries (empty, for certificates recorded before services
    /// were: the dataplane's first).
    pub service: String,
    /// The `jti` of the dataplane token that asked for it.
    pub token_id: String,
    /// End of validity.
    pub not_after: DateTime<Utc>,
}

impl Store {
    /// Records a certificate issued in `mesh`: among the valid ones (forgetting the expired ones
    /// of its dataplane) and, as `shown`, as its dataplane's latest for that identity, in one
    /// transaction.
    pub async fn record_issued_cert(
        &self,
        mesh: &str,
        cert: &IssuedCert,
        shown: &DataplaneCert,
    ) -> Result<(), StoreError> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO dataplane_certs (mesh, dataplane, spiffe_id, serial, not_before, not_after, backend)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (mesh, dataplane, spiffe_id) DO UPDATE SET serial = excluded.serial,
               not_before = excluded.not_before, not_after = excluded.not_after, backend = excluded.backend",
        )
        .bind(mesh)
        .bind(&cert.dataplane)
        .bind(&shown.spiffe_id)
        .bind(&shown.serial)
        .bind(&shown.not_before)
        .bind(&shown.not_after)
        .bind(&shown.backend)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM issued_certs WHERE mesh = ? AND dataplane = ? AND not_after <= ?")
            .bind(mesh)
            .bind(&cert.dataplane)
            .bind(Utc::now().timestamp())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT OR REPLACE INTO issued_certs (mesh, serial, dataplane, service, token_id, not_after)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(mesh)
        .bind(&cert.serial)
        .bind(&cert.dataplane)
        .bind(&cert.service)
        .bind(&cert.token_id)
        .bind(cert.not_after.timestamp())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The certificates of `mesh` still valid at `now`.
    pub async fn issued_certs(&self, mesh: &str, now: DateTime<Utc>) -> Result<Vec<IssuedCert>, StoreError> {
        let rows = sqlx::query(
            "SELECT serial, dataplane, service, token_id, not_after FROM issued_certs
             WHERE mesh = ? AND not_after > ? ORDER BY serial",
        )
        .bind(mesh)
        .bind(now.timestamp())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| IssuedCert {
                serial: r.get("serial"),
                dataplane: r.get("dataplane"),
                service: r.get("service"),
                token_id: r.get("token_id"),
                not_after: DateTime::from_timestamp(r.get("not_after"), 0).unwrap_or_default(),
            })
            .collect())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use chrono::TimeDelta;

    use super::*;

    /// The shown record of a certificate with `serial`.
    pub(crate) fn shown(serial: &str) -> DataplaneCert {
        DataplaneCert {
            spiffe_id: "spiffe://m/web".into(),
            serial: serial.into(),
            not_before: String::new(),
            not_after: String::new(),
            backend: "ca-1".into(),
        }
    }

    #[tokio::test]
    async fn valid_certificates_are_listed_and_expired_ones_forgotten() {
        let store = Store::in_memory().await.unwrap();
        let now = Utc::now();
        let record = async |mesh: &str, serial: &str, not_after| {
            let cert = IssuedCert {
                serial: serial.into(),
                dataplane: "web-1".into(),
                service: "web".into(),
                token_id: "t1".into(),
                not_after,
            };
            store.record_issued_cert(mesh, &cert, &shown(serial)).await.unwrap();
        };
        record("m", "01", now - TimeDelta::seconds(1)).await;
        record("m", "02", now + TimeDelta::hours(1)).await;
        record("other", "03", now + TimeDelta::hours(1)).await;
        let listed: Vec<String> = store.issued_certs("m", now).await.unwrap().into_iter().map(|c| c.serial).collect();
        assert_eq!(listed, ["02"]);
        let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM issued_certs WHERE mesh = 'm'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(kept, 1, "the expired certificate was deleted when its dataplane's next one was recorded");
        let latest = store.dataplane_certs("m", "web-1").await.unwrap();
        assert_eq!(latest.len(), 1, "{latest:?}");
        assert_eq!(latest[0].serial, "02", "the dataplane's latest certificate is shown");

        // A second identity of the same dataplane is shown beside the first.
        let api = DataplaneCert { spiffe_id: "spiffe://m/web-api".into(), ..shown("04") };
        let cert = IssuedCert {
            serial: "04".into(),
            dataplane: "web-1".into(),
            service: "web-api".into(),
            token_id: "t1".into(),
            not_after: now + TimeDelta::hours(1),
        };
        store.record_issued_cert("m", &cert, &api).await.unwrap();
        let shown: Vec<(String, String)> =
            store.dataplane_certs("m", "web-1").await.unwrap().into_iter().map(|c| (c.spiffe_id, c.serial)).collect();
        assert_eq!(shown, [("spiffe://m/web".into(), "02".into()), ("spiffe://m/web-api".into(), "04".into())]);
    }
}
