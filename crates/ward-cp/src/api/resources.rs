//! Handlers for `/meshes/...`: get, list, put and delete resources.

use std::collections::HashMap;

use axum::{
    Json,
    body::{Body, to_bytes},
    extract::{Path, Query, State},
    http::{
        HeaderMap, HeaderValue, StatusCode,
        header::{CONTENT_TYPE, WARNING},
    },
    response::IntoResponse,
};
use serde::Deserialize;
use serde_json::{Value, json};
use ward_api::{Cause, Resource, ResourceType, Spec, SpiffeId, membership, mesh::Mesh, parse, policy};

use super::{ApiError, ApiState, Caller, MAX_BODY_BYTES};
use crate::discovery::snapshot::SharedSnapshot;
use crate::identity;
use crate::store::{Commit, MeshCa, Written};

/// Largest page a list returns.
const MAX_PAGE: u64 = 1000;
/// Page size when none is asked for.
const DEFAULT_PAGE: u64 = 100;
/// How many dataplanes a warning about constraints names.
const NAMED_CUT_OFF: usize = 5;

/// `?size=&offset=` of list requests.
#[derive(Debug, Deserialize)]
pub struct Page {
    size: Option<u64>,
    offset: Option<u64>,
}

/// `?showData=true` of a GET: a Secret's data is shown only when asked for, and only to an admin.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadOptions {
    #[serde(default)]
    show_data: bool,
}

/// `?dryRun=true` of a PUT: every check of the write is made, nothing is stored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteOptions {
    #[serde(default)]
    dry_run: bool,
}

fn mesh_scoped_type(plural: &str) -> Result<ResourceType, ApiError> {
    ResourceType::from_plural(plural)
        .filter(|t| t.is_mesh_scoped())
        .ok_or_else(|| ApiError::not_found(format!("unknown resource type {plural:?}; GET /_resources lists them")))
}

/// A page of resources of `ty` (in `mesh`, or everywhere for `None`); a Secret's data never shows.
pub(super) async fn list(
    state: &ApiState,
    ty: ResourceType,
    mesh: Option<&str>,
    page: Page,
    path: &str,
) -> Result<Json<Value>, ApiError> {
    let size = page.size.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let offset = page.offset.unwrap_or(0);
    let (items, total) = state.store.list(ty, mesh, offset, size).await?;
    let next = (offset + size < total).then(|| format!("{path}?size={size}&offset={}", offset + size));
    let mut snapshots = HashMap::new();
    let mut shown = Vec::with_capacity(items.len());
    for r in &items {
        shown.push(shown_json(state, r, &mut snapshots).await);
    }
    let items = shown;
    Ok(Json(json!({ "total": total, "items": items, "next": next })))
}

/// How long a read waits for the first snapshot of a mesh nobody watched yet.
const FIRST_SNAPSHOT: std::time::Duration = std::time::Duration::from_secs(5);

/// `r` as the API shows it: a MeshService or MeshExternalService with the status computed from
/// its mesh's snapshot, read once per mesh into `snapshots` however many resources a page shows.
async fn shown_json(state: &ApiState, r: &Resource, snapshots: &mut HashMap<String, SharedSnapshot>) -> Value {
    let mut json = r.to_json();
    if !matches!(r.meta.ty, ResourceType::MeshService | ResourceType::MeshExternalService) {
        return json;
    }
    if !snapshots.contains_key(&r.meta.mesh) {
        let mut live = state.snapshots.subscribe(&r.meta.mesh);
        let _ = tokio::time::timeout(FIRST_SNAPSHOT, live.wait_for(|s| s.version > 0)).await;
        let current = live.borrow().clone();
        snapshots.insert(r.meta.mesh.clone(), current);
    }
    let snapshot = &snapshots[&r.meta.mesh];
    json["status"] = if r.meta.ty == ResourceType::MeshService {
        let status = snapshot.mesh_services.get(&r.meta.name).map(|view| view.status(&r.meta.name));
        status.unwrap_or_else(|| json!({"state": "Unavailable"}))
    } else {
        let status = snapshot.external_services.get(&r.meta.name).map(|view| view.status(&r.meta.name));
        status.unwrap_or_else(|| json!({}))
    };
    json
}

/// `GET /meshes`: the meshes the token may see.
pub async fn list_meshes(
    State(state): State<ApiState>,
    caller: Caller,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    match &caller.0.meshes {
        None => list(&state, ResourceType::Mesh, None, page, "/meshes").await,
        Some(meshes) => {
            let mut items = Vec::new();
            for mesh in meshes {
                if let Some(r) = state.store.get(ResourceType::Mesh, mesh, mesh).await? {
                    items.push(r.to_json());
                }
            }
            Ok(Json(json!({ "total": items.len(), "items": items, "next": null })))
        }
    }
}

/// `GET /meshes/{mesh}/{plural}`.
pub async fn list_in_mesh(
    State(state): State<ApiState>,
    caller: Caller,
    Path((mesh, plural)): Path<(String, String)>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let ty = mesh_scoped_type(&plural)?;
    caller.read(&mesh)?;
    list(&state, ty, Some(&mesh), page, &format!("/meshes/{mesh}/{plural}")).await
}

/// One resource; a Secret's data only with `?showData=true`, for an admin of its mesh (of every
/// mesh for a GlobalSecret), and the audit log records that it was shown.
pub(super) async fn get(
    state: &ApiState,
    caller: &Caller,
    ty: ResourceType,
    mesh: &str,
    name: &str,
    options: ReadOptions,
) -> Result<Json<Value>, ApiError> {
    let Some(resource) = state.store.get(ty, mesh, name).await? else {
        let place = if ty.is_mesh_scoped() { format!(" in mesh {mesh:?}") } else { String::new() };
        return Err(ApiError::not_found(format!("{}/{name} not found{place}", ty.info().plural)));
    };
    if !options.show_data {
        return Ok(Json(shown_json(state, &resource, &mut HashMap::new()).await));
    }
    match ty {
        ResourceType::Secret => caller.write(mesh)?,
        ResourceType::GlobalSecret => caller.global_admin()?,
        _ => {
            return Err(ApiError::bad_request(format!(
                "showData: {} have no data; only secrets and global-secrets do",
                ty.info().plural
            )));
        }
    }
    let opened = state.identity.secrets().opened(resource)?;
    state.store.audit_data_read(&caller.actor(), &opened).await?;
    Ok(Json(opened.to_json()))
}

/// `GET /meshes/{name}`.
pub async fn get_mesh(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(options): Query<ReadOptions>,
) -> Result<Json<Value>, ApiError> {
    caller.read(&name)?;
    get(&state, &caller, ResourceType::Mesh, &name, &name, options).await
}

/// `GET /meshes/{mesh}/{plural}/{name}`.
pub async fn get_in_mesh(
    State(state): State<ApiState>,
    caller: Caller,
    Path((mesh, plural, name)): Path<(String, String, String)>,
    Query(options): Query<ReadOptions>,
) -> Result<Json<Value>, ApiError> {
    let ty = mesh_scoped_type(&plural)?;
    caller.read(&mesh)?;
    get(&state, &caller, ty, &mesh, &name, options).await
}

/// Reads the body as JSON or YAML (by Content-Type), refusing more than 1 MiB.
pub(super) async fn read_document(headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let is_yaml = match media.as_str() {
        "application/json" => false,
        "application/yaml" | "application/x-yaml" | "text/yaml" => true,
        _ => return Err(ApiError::unsupported_media(content_type)),
    };
    let bytes = to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| ApiError::too_large())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::bad_request("request body is not UTF-8"))?;
    if is_yaml {
        let mut docs = parse::documents(text).map_err(ApiError::from)?;
        if docs.len() != 1 {
            return Err(ApiError::bad_request(format!(
                "request body must hold one YAML document, found {}",
                docs.len()
            )));
        }
        Ok(docs.remove(0))
    } else {
        serde_json::from_str(text).map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))
    }
}

/// Fills `type`, `mesh` and `name` from the URL when the body leaves them out, refuses
/// a body that contradicts the URL, and validates the result.
pub(super) fn resource_for_path(doc: Value, ty: ResourceType, mesh: &str, name: &str) -> Result<Resource, ApiError> {
    let key = format!("{}/{name}", ty.info().plural);
    let Value::Object(mut fields) = doc else {
        return Err(ApiError::bad_field(&key, "", "must be a JSON object"));
    };
    let mut expect = vec![("type", ty.info().name), ("name", name)];
    if ty.is_mesh_scoped() {
        expect.push(("mesh", mesh));
    }
    for (field, wanted) in expect {
        match fields.get(field) {
            None => {
                fields.insert(field.into(), wanted.into());
            }
            Some(Value::String(given)) if given == wanted => {}
            Some(given) => {
                return Err(ApiError::bad_field(&key, field, &format!("is {given} but the URL says {wanted:?}")));
            }
        }
    }
    Ok(parse::resource(Value::Object(fields), &key)?)
}

/// Stores `resource` (a Secret's data sealed first) with `cas`, or with `?dryRun=true` only
/// checks that it would be stored; answers 201 when it is (or would be) new, else 200, with a
/// `Warning` header per field accepted without effect.
pub(super) async fn write(
    state: &ApiState,
    caller: &Caller,
    resource: Resource,
    cas: &[MeshCa],
    options: WriteOptions,
) -> Result<(StatusCode, HeaderMap, Json<Value>), ApiError> {
    let mut warnings = resource.warnings();
    if let Spec::Mesh(mesh) = &resource.spec {
        warnings.extend(dataplanes_cut_off(state, &resource.meta.name, mesh).await?);
    }
    let secrets = state.identity.secrets();
    secrets.check_update(&resource).await?;
    let commit = if options.dry_run { Commit::No } else { Commit::Yes };
    let written = state.store.write(secrets.seal(resource), cas, &caller.actor(), commit).await?;
    Ok(written_response(written, &warnings))
}

/// A warning naming the dataplanes of mesh `name` that `mesh`'s constraints would no longer
/// admit (their proxies are cut off), at most [`NAMED_CUT_OFF`] of them by name.
async fn dataplanes_cut_off(state: &ApiState, name: &str, mesh: &Mesh) -> Result<Option<Cause>, ApiError> {
    if mesh.constraints.as_ref().and_then(|c| c.dataplane_proxy.as_ref()).is_none() {
        return Ok(None);
    }
    let refused: Vec<String> = state
        .store
        .mesh_resources(name)
        .await?
        .into_iter()
        .filter_map(|r| match &r.spec {
            Spec::Dataplane(dp) => membership::check(name, mesh, dp).err().map(|_| r.meta.name),
            _ => None,
        })
        .collect();
    if refused.is_empty() {
        return Ok(None);
    }
    let mut names = refused.iter().take(NAMED_CUT_OFF).cloned().collect::<Vec<_>>().join(", ");
    if refused.len() > NAMED_CUT_OFF {
        names.push_str(&format!(" and {} more", refused.len() - NAMED_CUT_OFF));
    }
    Ok(Some(Cause::new(
        "constraints.dataplaneProxy",
        format!(
            "{} existing dataplane(s) do not fulfil these constraints and are cut off from the mesh: {names}",
            refused.len()
        ),
    )))
}

/// The stored resource, with a `Warning` header (as Kubernetes sends them: code 299, a quoted
/// text) per field accepted without effect.
fn written_response(written: Written, warnings: &[Cause]) -> (StatusCode, HeaderMap, Json<Value>) {
    let status = if written.created { StatusCode::CREATED } else { StatusCode::OK };
    let mut headers = HeaderMap::new();
    for warning in warnings {
        headers.append(WARNING, warning_header(warning));
    }
    (status, headers, Json(written.resource.to_json()))
}

/// `299 - "FIELD: REASON"`, with `"` and `\` escaped and anything but printable ASCII as `?`.
fn warning_header(warning: &Cause) -> HeaderValue {
    let text = format!("{}: {}", warning.field, warning.message);
    let mut quoted = String::with_capacity(text.len() + 10);
    quoted.push_str("299 - \"");
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            ' '..='~' => quoted.push(c),
            _ => quoted.push('?'),
        }
    }
    quoted.push('"');
    HeaderValue::from_str(&quoted).unwrap_or_else(|_| HeaderValue::from_static("299 - \"unprintable warning\""))
}

/// `PUT /meshes/{name}`.
pub async fn put_mesh(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(options): Query<WriteOptions>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    caller.write(&name)?;
    let doc = read_document(&headers, body).await?;
    let mut resource = resource_for_path(doc, ResourceType::Mesh, &name, &name)?;
    let cas = state.identity.prepare_mesh(&mut resource, caller.requester()).await?;
    write(&state, &caller, resource, &cas, options).await
}

/// `PUT /meshes/{mesh}/{plural}/{name}`.
pub async fn put_in_mesh(
    State(state): State<ApiState>,
    caller: Caller,
    Path((mesh, plural, name)): Path<(String, String, String)>,
    Query(options): Query<WriteOptions>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let ty = mesh_scoped_type(&plural)?;
    caller.write(&mesh)?;
    let doc = read_document(&headers, body).await?;
    let mut resource = resource_for_path(doc, ty, &mesh, &name)?;
    identity::check_trust(&resource)?;
    let cas = state.identity.prepare_identity(&mut resource, caller.requester()).await?;
    write(&state, &caller, resource, &cas, options).await
}

/// `DELETE /meshes/{name}`: the mesh and everything in it.
pub async fn delete_mesh(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.write(&name)?;
    state.store.delete(ResourceType::Mesh, &name, &name, &caller.actor()).await?;
    Ok(StatusCode::OK)
}

/// `DELETE /meshes/{mesh}/{plural}/{name}`.
pub async fn delete_in_mesh(
    State(state): State<ApiState>,
    caller: Caller,
    Path((mesh, plural, name)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let ty = mesh_scoped_type(&plural)?;
    caller.write(&mesh)?;
    state.store.delete(ty, &mesh, &name, &caller.actor()).await?;
    Ok(StatusCode::OK)
}

/// `GET /meshes/{mesh}/dataplanes/{name}/_rules`: the merged policies of every inbound and
/// outbound of this dataplane and the policies each came from, as its proxy is sent them.
pub async fn rules(
    State(state): State<ApiState>,
    caller: Caller,
    Path((mesh, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.read(&mesh)?;
    if state.store.get(ResourceType::Dataplane, &mesh, &name).await?.is_none() {
        return Err(ApiError::not_found(format!("dataplanes/{name} not found in mesh {mesh:?}")));
    }
    let mut live = state.snapshots.subscribe(&mesh);
    let _ = tokio::time::timeout(FIRST_SNAPSHOT, live.wait_for(|s| s.dataplanes.contains_key(&name))).await;
    let snapshot = live.borrow().clone();
    let rules = snapshot.rules(&name).ok_or_else(|| {
        ApiError::unavailable(format!("dataplanes/{name} is not in the control plane's view of mesh {mesh:?} yet"))
    })?;
    Ok(Json(json!({"dataplane": name, "mesh": mesh, "rules": rules})))
}

/// `?caller=` of an authorization question: a service name or a SPIFFE ID.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallerQuery {
    caller: String,
    /// A Dataplane of the caller's service whose tags the decision uses, as its proxy's would.
    caller_dataplane: Option<String>,
    /// The inbound called, by name or port; a dataplane of one inbound needs none.
    inbound: Option<String>,
}

/// The caller an authorization question names: its SPIFFE ID, and the tags of `callerDataplane`
/// when given. Without a dataplane, only the caller's service is known: policies that look at
/// more tags are decided as a proxy decides a caller whose tags it does not know.
async fn asking_caller(state: &ApiState, mesh: &str, query: &CallerQuery) -> Result<policy::Caller, ApiError> {
    let id = if query.caller.starts_with("spiffe://") {
        SpiffeId::parse(&query.caller).map_err(|e| ApiError::bad_field("_authorization", "caller", &e.to_string()))?
    } else {
        ward_api::names::check_service(&query.caller)
            .map_err(|e| ApiError::bad_field("_authorization", "caller", &e))?;
        SpiffeId::for_service(mesh, &query.caller)
            .map_err(|e| ApiError::bad_field("_authorization", "caller", &e.to_string()))?
    };
    let tags = match &query.caller_dataplane {
        None => None,
        Some(name) => {
            let found = state.store.get(ResourceType::Dataplane, mesh, name).await?;
            let Some(Spec::Dataplane(dp)) = found.map(|r| r.spec) else {
                return Err(ApiError::bad_field(
                    "_authorization",
                    "callerDataplane",
                    &format!("dataplanes/{name} not found in mesh {mesh:?}"),
                ));
            };
            Some(policy::caller_tags(&dp, id.service().unwrap_or_default()))
        }
    };
    Ok(policy::Caller::Workload { id, tags })
}

/// `GET /meshes/{mesh}/meshexternalservices/{name}/_authorization?caller=X`: would `caller`'s
/// proxy be let through to this MeshExternalService, and which policy decides.
pub async fn external_authorization(
    State(state): State<ApiState>,
    caller: Caller,
    Path((mesh, name)): Path<(String, String)>,
    Query(query): Query<CallerQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.read(&mesh)?;
    if query.inbound.is_some() {
        return Err(ApiError::bad_field("_authorization", "inbound", "a MeshExternalService has no inbounds"));
    }
    let who = asking_caller(&state, &mesh, &query).await?;
    if state.store.get(ResourceType::MeshExternalService, &mesh, &name).await?.is_none() {
        return Err(ApiError::not_found(format!("meshexternalservices/{name} not found in mesh {mesh:?}")));
    }
    let resources = state.store.mesh_resources(&mesh).await?;
    let decision = policy::decide_external(&resources, &who, &mesh, &name);
    let unknown_tags = matches!(&who, policy::Caller::Workload { tags: None, .. });
    let depends_on: Vec<ward_api::dataplane::Tags> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::MeshTrafficPermission(mtp) if unknown_tags && mtp.external_service() == Some(name.as_str()) => {
                Some(mtp)
            }
            _ => None,
        })
        .flat_map(|mtp| mtp.from.iter().flatten())
        .filter_map(|entry| entry.target_ref.subset_tags())
        .filter(policy::needs_tags)
        .collect();
    Ok(Json(json!({
        "caller": query.caller,
        "meshExternalService": name,
        "action": decision.action,
        "policy": decision.policy.as_ref().map(ToString::to_string),
        "explanation": decision.to_string(),
        "dependsOnCallerTags": depends_on,
    })))
}

/// `GET /meshes/{mesh}/dataplanes/{name}/_authorization?caller=X`: would `caller` be let
/// through to this dataplane, and which policy decides.
pub async fn authorization(
    State(state): State<ApiState>,
    caller: Caller,
    Path((mesh, name)): Path<(String, String)>,
    Query(query): Query<CallerQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.read(&mesh)?;
    let who = asking_caller(&state, &mesh, &query).await?;
    let dataplane = state
        .store
        .get(ResourceType::Dataplane, &mesh, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("dataplanes/{name} not found in mesh {mesh:?}")))?;
    let inbounds = match &dataplane.spec {
        Spec::Dataplane(dp) => dp.networking.inbound.as_slice(),
        _ => &[],
    };
    let inbound = match (&query.inbound, inbounds.len()) {
        (Some(section), _) => Some(inbounds.iter().position(|i| i.is_section(section)).ok_or_else(|| {
            ApiError::bad_field(
                "_authorization",
                "inbound",
                &format!("names no inbound of dataplanes/{name} (by its name or port): {section:?}"),
            )
        })?),
        (None, 1) => Some(0),
        (None, _) => None,
    };
    let resources = state.store.mesh_resources(&mesh).await?;
    let decision = match inbound {
        Some(i) => policy::decide_at_inbound(&resources, &who, &dataplane, i),
        None => policy::decide(&resources, &who, &dataplane),
    };
    let depends_on: Vec<std::borrow::Cow<'_, ward_api::dataplane::Tags>> = match &who {
        policy::Caller::Workload { tags: None, .. } => policy::tag_selectors(&resources),
        _ => Vec::new(),
    };
    Ok(Json(json!({
        "caller": query.caller,
        "dataplane": name,
        "inbound": inbound.map(|i| format!("networking.inbound[{i}]")),
        "action": decision.action,
        "policy": decision.policy.as_ref().map(ToString::to_string),
        "explanation": decision.to_string(),
        "dependsOnCallerTags": depends_on,
    })))
}
