//! The certificates issued to dataplanes that are still valid, each with the token it was
//! issued under, so the proxies of a mesh can learn whose a serial is and which were revoked.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, StoreError};

/// One certificate issued to a dataplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// The Dataplane it was issued to.
    pub dataplane: String,
    /// The `jti` of the dataplane token that asked for it.
    pub token_id: String,
    /// End of validity.
    pub not_after: DateTime<Utc>,
}

impl Store {
    /// Records a certificate issued in `mesh`, and forgets the mesh's certificates that expired.
    pub async fn record_issued_cert(&self, mesh: &str, cert: &IssuedCert) -> Result<(), StoreError> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM issued_certs WHERE mesh = ? AND not_after <= ?")
            .bind(mesh)
            .bind(Utc::now().timestamp())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT OR REPLACE INTO issued_certs (mesh, serial, dataplane, token_id, not_after) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(mesh)
        .bind(&cert.serial)
        .bind(&cert.dataplane)
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
            "SELECT serial, dataplane, token_id, not_after FROM issued_certs WHERE mesh = ? AND not_after > ? ORDER BY serial",
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
                token_id: r.get("token_id"),
                not_after: DateTime::from_timestamp(r.get("not_after"), 0).unwrap_or_default(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[tokio::test]
    async fn valid_certificates_are_listed_and_expired_ones_forgotten() {
        let store = Store::in_memory().await.unwrap();
        let now = Utc::now();
        let cert = |serial: &str, not_after| IssuedCert {
            serial: serial.into(),
            dataplane: "web-1".into(),
            token_id: "t1".into(),
            not_after,
        };
        store.record_issued_cert("m", &cert("01", now - TimeDelta::seconds(1))).await.unwrap();
        store.record_issued_cert("m", &cert("02", now + TimeDelta::hours(1))).await.unwrap();
        store.record_issued_cert("other", &cert("03", now + TimeDelta::hours(1))).await.unwrap();
        let listed: Vec<String> = store.issued_certs("m", now).await.unwrap().into_iter().map(|c| c.serial).collect();
        assert_eq!(listed, ["02"]);
        let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM issued_certs WHERE mesh = 'm'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(kept, 1, "the expired certificate was deleted when the next one was recorded");
    }
}
