//! The resource store: SQLite (a file, or memory for tests), versions, audit, change feed.
//! Key material of mesh identity lives beside the resources, in `identity`.
//!
//! Callers see only [`Store`]'s methods and [`Change`] events; a PostgreSQL backend
//! would implement the same methods and feed the same channel from LISTEN/NOTIFY.

use std::{path::Path, str::FromStr, sync::Arc};

use serde::Serialize;
use sqlx::{
    Row, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous},
};
use tokio::sync::{Mutex, watch};
use ward_api::{Meta, Resource, ResourceType, Spec, parse, secret::Secret};

mod identity;
mod issued_certs;
mod secret_refs;
mod virtual_ips;

pub use identity::{DataplaneCert, MeshCa, StoredSigningKey, identity_backend, is_identity_backend};
pub use issued_certs::IssuedCert;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The resource does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A mesh-scoped resource names a mesh that does not exist.
    #[error("mesh {0:?} does not exist")]
    UnknownMesh(String),
    /// The write carried a version other than the stored one.
    #[error("{key}: version {given} is stale: the stored version is {stored}")]
    Conflict {
        /// `plural/name`.
        key: String,
        /// Version the writer had.
        given: u64,
        /// Version in the store (0: it does not exist).
        stored: u64,
    },
    /// The database failed.
    #[error("store: {0}")]
    Database(#[from] sqlx::Error),
    /// A Mesh's provided backend, or a MeshExternalService, names a Secret the mesh does not have.
    #[error("{key}: {field}: Secret {name:?} does not exist in the mesh")]
    MissingSecret {
        /// The resource naming it, e.g. `meshes/name`.
        key: String,
        /// The field naming it, e.g. `mtls.backends[0].conf.key.secret`.
        field: String,
        /// The Secret's name.
        name: String,
    },
    /// A Secret cannot be deleted while a Mesh's provided backend or a MeshExternalService names it.
    #[error("{key}: in use by {by} at {field}; remove the reference before deleting the Secret")]
    InUse {
        /// `secrets/name`.
        key: String,
        /// The resource naming it, e.g. `meshes/name`.
        by: String,
        /// The field of that resource naming it.
        field: String,
    },
    /// A Dataplane's tags do not fulfil its mesh's `constraints.dataplaneProxy`.
    #[error("{key}: {refusal}")]
    NotAMember {
        /// `dataplanes/name`.
        key: String,
        /// The field at fault and why.
        refusal: ward_api::membership::NotAMember,
    },
    /// A mesh would issue identities both from Mesh `mtls` and from a MeshIdentity.
    #[error("{key}: {field}: {reason}")]
    MixedIdentity {
        /// The resource written.
        key: String,
        /// The field at fault.
        field: String,
        /// Why.
        reason: String,
    },
    /// A stored row no longer reads as a valid resource.
    #[error("stored {key} is unreadable: {reason}")]
    Corrupt {
        /// `plural/name`.
        key: String,
        /// Why.
        reason: String,
    },
}

/// What happened to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    /// Created.
    Created,
    /// Updated.
    Updated,
    /// Deleted.
    Deleted,
}

/// One event of the change feed; `revision` grows with every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Counts changes since the store was opened.
    pub revision: u64,
    /// What changed, `None` for the initial value of the feed.
    pub what: Option<(Op, ResourceType, String, String)>,
}

/// Who made a change, for the audit log.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

/// One entry of the audit log.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Sequence number.
    pub id: i64,
    /// When (RFC 3339).
    pub time: String,
    /// Name of the token that made the change.
    pub token_name: String,
    /// created, updated, deleted, or read-data (a Secret's data was shown).
    pub action: String,
    /// `type mesh/name`.
    pub resource: String,
    /// Version before the change.
    pub old_version: Option<i64>,
    /// Version after the change.
    pub new_version: Option<i64>,
}

/// Whether a write is kept or only checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Kept, audited and announced on the change feed.
    Yes,
    /// Checked as if kept, then rolled back: a dry run.
    No,
}

/// Result of a write.
#[derive(Debug)]
pub struct Written {
    /// Whether the resource was new.
    pub created: bool,
    /// The stored resource with its new version and times.
    pub resource: Resource,
}

/// The resource store.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// Serialises writers so read-check-write sequences never interleave.
    write_lock: Arc<Mutex<u64>>,
    changes: Arc<watch::Sender<Change>>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Store {
    /// Opens (creating when absent) the SQLite database at `path` and migrates it.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        Self::migrate(pool).await
    }

    /// A store that lives in memory only, for tests.
    pub async fn in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?;
        // One connection: each in-memory connection would otherwise be its own database.
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        Self::migrate(pool).await
    }

    async fn migrate(pool: SqlitePool) -> Result<Self, StoreError> {
        sqlx::migrate!("./migrations").run(&pool).await.map_err(|e| StoreError::Database(e.into()))?;
        let (changes, _) = watch::channel(Change { revision: 0, what: None });
        Ok(Store { pool, write_lock: Arc::new(Mutex::new(0)), changes: Arc::new(changes) })
    }

    /// The change feed: always holds the latest change; wakes watchers on each one.
    pub fn subscribe(&self) -> watch::Receiver<Change> {
        self.changes.subscribe()
    }

    /// One resource, if it exists.
    pub async fn get(&self, ty: ResourceType, mesh: &str, name: &str) -> Result<Option<Resource>, StoreError> {
        let row = sqlx::query("SELECT * FROM resources WHERE type = ? AND mesh = ? AND name = ?")
            .bind(ty.info().name)
            .bind(mesh)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| decode(ty, &r)).transpose()
    }

    /// A page of resources of `ty` (in `mesh`, or all meshes for `None`), by name, and the total.
    pub async fn list(
        &self,
        ty: ResourceType,
        mesh: Option<&str>,
        offset: u64,
        size: u64,
    ) -> Result<(Vec<Resource>, u64), StoreError> {
        let filter = "type = ?1 AND (?2 IS NULL OR mesh = ?2)";
        let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM resources WHERE {filter}"))
            .bind(ty.info().name)
            .bind(mesh)
            .fetch_one(&self.pool)
            .await?;
        let rows =
            sqlx::query(&format!("SELECT * FROM resources WHERE {filter} ORDER BY mesh, name LIMIT ?3 OFFSET ?4"))
                .bind(ty.info().name)
                .bind(mesh)
                .bind(size as i64)
                .bind(offset as i64)
                .fetch_all(&self.pool)
                .await?;
        let items = rows.iter().map(|r| decode(ty, r)).collect::<Result<_, _>>()?;
        Ok((items, total as u64))
    }

    /// Every resource of a mesh, of every mesh-scoped type but Secret (what policy decisions need).
    pub async fn mesh_resources(&self, mesh: &str) -> Result<Vec<Resource>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM resources WHERE mesh = ? AND type NOT IN ('Mesh', 'Secret') ORDER BY type, name",
        )
        .bind(mesh)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.get("type");
                let ty = ResourceType::from_kind(&kind)
                    .ok_or_else(|| StoreError::Corrupt { key: kind.clone(), reason: "unknown type".into() })?;
                decode(ty, r)
            })
            .collect()
    }

    /// Creates or updates `resource`. A version other than 0 must equal the stored one.
    pub async fn put(&self, resource: Resource, actor: &Actor) -> Result<Written, StoreError> {
        self.write(resource, &[], actor, Commit::Yes).await
    }

    /// Like [`Store::put`]; for a Mesh it also writes `cas` and drops the CAs of backends the
    /// mesh no longer lists, in the same transaction. With [`Commit::No`] it makes every check
    /// and write, then rolls them back: a dry run answers exactly as the write would.
    pub async fn write(
        &self,
        resource: Resource,
        cas: &[MeshCa],
        actor: &Actor,
        commit: Commit,
    ) -> Result<Written, StoreError> {
        let mut revision = self.write_lock.lock().await;
        let meta = &resource.meta;
        let ty = meta.ty.info().name;
        if resource.spec_json().is_null() {
            return Err(StoreError::Corrupt {
                key: meta.key(),
                reason: "a Secret's data must be sealed to be stored".into(),
            });
        }
        let mut tx = self.pool.begin().await?;
        if meta.ty.is_mesh_scoped() {
            let mesh = sqlx::query("SELECT * FROM resources WHERE type = 'Mesh' AND name = ?")
                .bind(&meta.mesh)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(mesh) = mesh else { return Err(StoreError::UnknownMesh(meta.mesh.clone())) };
            let Spec::Mesh(mesh) = decode(ResourceType::Mesh, &mesh)?.spec else {
                return Err(StoreError::UnknownMesh(meta.mesh.clone()));
            };
            if let Spec::Dataplane(dp) = &resource.spec
                && let Err(refusal) = ward_api::membership::check(&meta.mesh, &mesh, dp)
            {
                return Err(StoreError::NotAMember { key: meta.key(), refusal });
            }
            if matches!(resource.spec, Spec::MeshIdentity(_)) && mesh.enabled_backend().is_some() {
                return Err(StoreError::MixedIdentity {
                    key: meta.key(),
                    field: "spec".into(),
                    reason: format!(
                        "mesh {:?} issues identities from its mtls backends; a mesh uses either Mesh mtls or \
                         MeshIdentity: remove mtls.enabledBackend first",
                        meta.mesh
                    ),
                });
            }
        }
        if let Spec::Mesh(mesh) = &resource.spec
            && mesh.enabled_backend().is_some()
        {
            let identities: Option<String> =
                sqlx::query_scalar("SELECT name FROM resources WHERE type = 'MeshIdentity' AND mesh = ? LIMIT 1")
                    .bind(&meta.name)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(identity) = identities {
                return Err(StoreError::MixedIdentity {
                    key: meta.key(),
                    field: "mtls.enabledBackend".into(),
                    reason: format!(
                        "MeshIdentity {identity:?} issues this mesh's identities; a mesh uses either Mesh mtls or \
                         MeshIdentity: delete its MeshIdentities first"
                    ),
                });
            }
        }
        let stored: Option<(i64, String)> =
            sqlx::query_as("SELECT version, created_at FROM resources WHERE type = ? AND mesh = ? AND name = ?")
                .bind(ty)
                .bind(&meta.mesh)
                .bind(&meta.name)
                .fetch_optional(&mut *tx)
                .await?;
        let stored_version = stored.as_ref().map_or(0, |(v, _)| *v as u64);
        if meta.version != 0 && meta.version != stored_version {
            return Err(StoreError::Conflict { key: meta.key(), given: meta.version, stored: stored_version });
        }
        let time = now();
        let created_at = stored.as_ref().map_or(time.clone(), |(_, c)| c.clone());
        let version = stored_version + 1;
        sqlx::query(
            "INSERT INTO resources (type, mesh, name, version, labels, spec, created_at, modified_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (type, mesh, name) DO UPDATE SET
               version = excluded.version, labels = excluded.labels, spec = excluded.spec,
               modified_at = excluded.modified_at",
        )
        .bind(ty)
        .bind(&meta.mesh)
        .bind(&meta.name)
        .bind(version as i64)
        .bind(serde_json::to_string(&meta.labels).expect("labels serialize"))
        .bind(resource.spec_json().to_string())
        .bind(&created_at)
        .bind(&time)
        .execute(&mut *tx)
        .await?;
        secret_refs::check_named(&mut tx, &meta.mesh, &meta.key(), &resource.spec).await?;
        match &resource.spec {
            Spec::Mesh(mesh) => identity::sync_mesh_cas(&mut tx, &meta.name, mesh, cas).await?,
            Spec::MeshIdentity(_) => identity::put_cas(&mut tx, &meta.mesh, cas).await?,
            _ => {}
        }
        let op = if stored.is_some() { Op::Updated } else { Op::Created };
        audit(&mut tx, actor, op, &resource, stored.map(|(v, _)| v), Some(version as i64)).await?;
        match commit {
            Commit::Yes => {
                tx.commit().await?;
                self.publish(&mut revision, op, &resource);
            }
            Commit::No => tx.rollback().await?,
        }

        let mut resource = resource;
        resource.meta.version = version;
        resource.meta.creation_time = Some(created_at);
        resource.meta.modification_time = Some(time);
        Ok(Written { created: op == Op::Created, resource })
    }

    /// Deletes a resource; deleting a Mesh deletes everything in it.
    pub async fn delete(&self, ty: ResourceType, mesh: &str, name: &str, actor: &Actor) -> Result<(), StoreError> {
        let mut revision = self.write_lock.lock().await;
        let Some(existing) = self.get(ty, mesh, name).await? else {
            return Err(StoreError::NotFound(format!("{}/{name}", ty.info().plural)));
        };
        let mut tx = self.pool.begin().await?;
        if ty == ResourceType::Mesh {
            sqlx::query("DELETE FROM resources WHERE mesh = ?").bind(name).execute(&mut *tx).await?;
            identity::delete_mesh(&mut tx, name).await?;
        } else {
            sqlx::query("DELETE FROM resources WHERE type = ? AND mesh = ? AND name = ?")
                .bind(ty.info().name)
                .bind(mesh)
                .bind(name)
                .execute(&mut *tx)
                .await?;
            if ty == ResourceType::Dataplane {
                identity::delete_dataplane(&mut tx, mesh, name).await?;
            }
            if ty == ResourceType::MeshIdentity {
                identity::delete_identity_ca(&mut tx, mesh, name).await?;
            }
            if ty == ResourceType::Secret {
                secret_refs::check_unnamed(&mut tx, mesh, name).await?;
            }
        }
        audit(&mut tx, actor, Op::Deleted, &existing, Some(existing.meta.version as i64), None).await?;
        tx.commit().await?;
        self.publish(&mut revision, Op::Deleted, &existing);
        Ok(())
    }

    /// A page of the audit log, oldest first.
    pub async fn audit_log(&self, offset: u64, size: u64) -> Result<(Vec<AuditEntry>, u64), StoreError> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit").fetch_one(&self.pool).await?;
        let rows = sqlx::query("SELECT * FROM audit ORDER BY id LIMIT ? OFFSET ?")
            .bind(size as i64)
            .bind(offset as i64)
            .fetch_all(&self.pool)
            .await?;
        let entries = rows
            .iter()
            .map(|r| AuditEntry {
                id: r.get("id"),
                time: r.get("time"),
                token_name: r.get("token_name"),
                action: r.get("action"),
                resource: r.get("resource"),
                old_version: r.get("old_version"),
                new_version: r.get("new_version"),
            })
            .collect();
        Ok((entries, total as u64))
    }

    /// Records in the audit log that `actor` read the data of the Secret or GlobalSecret `resource`.
    pub async fn audit_data_read(&self, actor: &Actor, resource: &Resource) -> Result<(), StoreError> {
        let _guard = self.write_lock.lock().await;
        let mut conn = self.pool.acquire().await?;
        let version = Some(resource.meta.version as i64);
        audit_event(&mut conn, actor, "read-data", &audit_name(&resource.meta), version, version).await
    }

    /// A sealed secret by name.
    pub async fn secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar("SELECT sealed FROM secrets WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Stores a sealed secret under `name` unless one exists; returns the one kept.
    pub async fn insert_secret(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let _guard = self.write_lock.lock().await;
        sqlx::query("INSERT OR IGNORE INTO secrets (name, sealed, created_at) VALUES (?, ?, ?)")
            .bind(name)
            .bind(sealed)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT sealed FROM secrets WHERE name = ?").bind(name).fetch_one(&self.pool).await?)
    }

    fn publish(&self, revision: &mut u64, op: Op, resource: &Resource) {
        *revision += 1;
        let meta = &resource.meta;
        self.changes.send_replace(Change {
            revision: *revision,
            what: Some((op, meta.ty, meta.mesh.clone(), meta.name.clone())),
        });
    }
}

async fn audit(
    tx: &mut sqlx::SqliteConnection,
    actor: &Actor,
    op: Op,
    resource: &Resource,
    old: Option<i64>,
    new: Option<i64>,
) -> Result<(), StoreError> {
    let meta = &resource.meta;
    let action = match op {
        Op::Created => "created",
        Op::Updated => "updated",
        Op::Deleted => "deleted",
    };
    audit_event(tx, actor, action, &audit_name(meta), old, new).await
}

/// How the audit log names a resource: `Type mesh/name`, or `Type name` for a global one.
fn audit_name(meta: &Meta) -> String {
    if meta.ty.is_mesh_scoped() {
        format!("{} {}/{}", meta.ty.info().name, meta.mesh, meta.name)
    } else {
        format!("{} {}", meta.ty.info().name, meta.name)
    }
}

/// Appends one entry to the audit log.
async fn audit_event(
    tx: &mut sqlx::SqliteConnection,
    actor: &Actor,
    action: &str,
    what: &str,
    old: Option<i64>,
    new: Option<i64>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit (time, token_name, action, resource, old_version, new_version) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(now())
    .bind(&actor.0)
    .bind(action)
    .bind(what)
    .bind(old)
    .bind(new)
    .execute(tx)
    .await?;
    Ok(())
}

fn decode(ty: ResourceType, row: &SqliteRow) -> Result<Resource, StoreError> {
    let name: String = row.get("name");
    let corrupt = |reason: String| StoreError::Corrupt { key: format!("{}/{name}", ty.info().plural), reason };
    let spec: String = row.get("spec");
    let labels: String = row.get("labels");
    let spec: serde_json::Value = serde_json::from_str(&spec).map_err(|e| corrupt(e.to_string()))?;
    let labels = serde_json::from_str(&labels).map_err(|e| corrupt(e.to_string()))?;
    let typed = |r: Result<Spec, ward_api::Cause>| r.map_err(|c| corrupt(format!("{}: {}", c.field, c.message)));
    let spec = typed(match ty {
        ResourceType::Mesh => parse::typed("", spec).map(Spec::Mesh),
        ResourceType::Dataplane => parse::typed("", spec).map(Spec::Dataplane),
        ResourceType::MeshTrafficPermission => parse::typed("spec", spec).map(Spec::MeshTrafficPermission),
        ResourceType::TrafficPermission => parse::typed("", spec).map(Spec::TrafficPermission),
        ResourceType::MeshService => parse::typed("spec", spec).map(Spec::MeshService),
        ResourceType::MeshExternalService => parse::typed("spec", spec).map(Spec::MeshExternalService),
        ResourceType::MeshTimeout => parse::typed("spec", spec).map(Spec::MeshTimeout),
        ResourceType::MeshRetry => parse::typed("spec", spec).map(Spec::MeshRetry),
        ResourceType::MeshCircuitBreaker => parse::typed("spec", spec).map(Spec::MeshCircuitBreaker),
        ResourceType::MeshHTTPRoute => parse::typed("spec", spec).map(Spec::MeshHTTPRoute),
        ResourceType::MeshTCPRoute => parse::typed("spec", spec).map(Spec::MeshTCPRoute),
        ResourceType::MeshFaultInjection => parse::typed("spec", spec).map(Spec::MeshFaultInjection),
        ResourceType::MeshRateLimit => parse::typed("spec", spec).map(Spec::MeshRateLimit),
        ResourceType::MeshIdentity => parse::typed("spec", spec).map(Spec::MeshIdentity),
        ResourceType::MeshTrust => parse::typed("spec", spec).map(Spec::MeshTrust),
        ResourceType::MeshHealthCheck => parse::typed("spec", spec).map(Spec::MeshHealthCheck),
        ResourceType::MeshLoadBalancingStrategy => parse::typed("spec", spec).map(Spec::MeshLoadBalancingStrategy),
        ResourceType::MeshOPA => parse::typed("spec", spec).map(Spec::MeshOPA),
        ResourceType::Secret | ResourceType::GlobalSecret => {
            Secret::from_stored(spec).map(Spec::Secret).map_err(|reason| ward_api::Cause::new("spec", reason))
        }
    })?;
    let version: i64 = row.get("version");
    Ok(Resource {
        meta: Meta {
            ty,
            mesh: row.get("mesh"),
            name,
            labels,
            version: version as u64,
            creation_time: Some(row.get("created_at")),
            modification_time: Some(row.get("modified_at")),
        },
        spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(yaml: &str) -> Resource {
        parse::resource(parse::documents(yaml).unwrap().remove(0), "test").unwrap()
    }

    fn admin() -> Actor {
        Actor("admin".into())
    }

    #[tokio::test]
    async fn versions_conflicts_and_cascade() {
        let store = Store::in_memory().await.unwrap();
        let mut feed = store.subscribe();
        let dp = "type: Dataplane\nmesh: m\nname: dp\nnetworking:\n  address: 1.2.3.4\n  inbound:\n  - port: 1\n    tags: {kuma.io/service: a}\n";
        assert!(matches!(store.put(resource(dp), &admin()).await, Err(StoreError::UnknownMesh(m)) if m == "m"));

        let written = store.put(resource("type: Mesh\nname: m\n"), &admin()).await.unwrap();
        assert!(written.created);
        assert_eq!(written.resource.meta.version, 1);
        assert!(feed.has_changed().unwrap());
        assert_eq!(feed.borrow_and_update().what, Some((Op::Created, ResourceType::Mesh, "m".into(), "m".into())));

        store.put(resource(dp), &admin()).await.unwrap();
        let again = store.put(resource(dp), &admin()).await.unwrap();
        assert!(!again.created);
        assert_eq!(again.resource.meta.version, 2);

        let mut stale = resource(dp);
        stale.meta.version = 1;
        let err = store.put(stale, &admin()).await.unwrap_err().to_string();
        assert_eq!(err, "dataplanes/dp: version 1 is stale: the stored version is 2");
        assert_eq!(store.get(ResourceType::Dataplane, "m", "dp").await.unwrap().unwrap().meta.version, 2);

        store.delete(ResourceType::Mesh, "m", "m", &admin()).await.unwrap();
        assert!(store.get(ResourceType::Dataplane, "m", "dp").await.unwrap().is_none());
        assert!(matches!(store.delete(ResourceType::Mesh, "m", "m", &admin()).await, Err(StoreError::NotFound(_))));
        let (log, total) = store.audit_log(0, 100).await.unwrap();
        assert_eq!(total, 4);
        let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["created", "created", "updated", "deleted"]);
        assert_eq!((log[2].old_version, log[2].new_version), (Some(1), Some(2)));
    }

    #[tokio::test]
    async fn references_to_secrets_hold_and_dry_runs_leave_nothing() {
        let store = Store::in_memory().await.unwrap();
        store.put(resource("type: Mesh\nname: m\n"), &admin()).await.unwrap();
        let feed = store.subscribe();
        let provided = resource(
            "type: Mesh\nname: m\nmtls:\n  backends:\n  - name: ca\n    type: provided\n    \
             conf: {cert: {inlineString: x}, key: {secret: ca-key}}\n",
        );
        let err = store.put(provided.clone(), &admin()).await.unwrap_err().to_string();
        assert_eq!(err, "meshes/m: mtls.backends[0].conf.key.secret: Secret \"ca-key\" does not exist in the mesh");

        let secret = Resource {
            spec: Spec::Secret(Secret::Sealed(b"sealed".to_vec())),
            ..resource("type: Secret\nmesh: m\nname: ca-key\ndata: aA==\n")
        };
        let dry = store.write(secret.clone(), &[], &admin(), Commit::No).await.unwrap();
        assert!(dry.created && dry.resource.meta.version == 1);
        assert!(store.get(ResourceType::Secret, "m", "ca-key").await.unwrap().is_none(), "a dry run stores nothing");
        assert!(!feed.has_changed().unwrap(), "nor announces anything");
        store.put(secret, &admin()).await.unwrap();
        store.put(provided, &admin()).await.unwrap();
        let err = store.delete(ResourceType::Secret, "m", "ca-key", &admin()).await.unwrap_err().to_string();
        assert_eq!(
            err,
            "secrets/ca-key: in use by meshes/m at mtls.backends[0].conf.key.secret; remove the reference before deleting the Secret"
        );
        assert!(store.get(ResourceType::Secret, "m", "ca-key").await.unwrap().is_some());
        store.delete(ResourceType::Mesh, "m", "m", &admin()).await.unwrap();
        assert!(store.get(ResourceType::Secret, "m", "ca-key").await.unwrap().is_none(), "gone with its Mesh");
        let (log, _) = store.audit_log(0, 100).await.unwrap();
        assert_eq!(log.len(), 4, "the dry run and the refusals left no entry: {log:?}");
    }

    #[tokio::test]
    async fn lists_page_by_page() {
        let store = Store::in_memory().await.unwrap();
        for name in ["c", "a", "b"] {
            store.put(resource(&format!("type: Mesh\nname: {name}\n")), &admin()).await.unwrap();
        }
        let (page, total) = store.list(ResourceType::Mesh, None, 1, 1).await.unwrap();
        assert_eq!(total, 3);
        assert_eq!(page[0].meta.name, "b");
        let dp = |mesh: &str, name: &str| {
            resource(&format!(
                "type: Dataplane\nmesh: {mesh}\nname: {name}\nnetworking:\n  address: 1.2.3.4\n  inbound:\n  - port: 1\n    tags: {{kuma.io/service: s}}\n"
            ))
        };
        for (mesh, name) in [("a", "x"), ("b", "y"), ("a", "z")] {
            store.put(dp(mesh, name), &admin()).await.unwrap();
        }
        let (in_a, total) = store.list(ResourceType::Dataplane, Some("a"), 0, 10).await.unwrap();
        let names: Vec<&str> = in_a.iter().map(|r| r.meta.name.as_str()).collect();
        assert_eq!((names, total), (vec!["x", "z"], 2));
    }

    #[tokio::test]
    async fn file_store_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ward.db");
        let store = Store::open(&path).await.unwrap();
        store.put(resource("type: Mesh\nname: kept\n"), &admin()).await.unwrap();
        drop(store);
        let store = Store::open(&path).await.unwrap();
        assert!(store.get(ResourceType::Mesh, "kept", "kept").await.unwrap().is_some());
    }
}
