use super::*;

fn resource(yaml: &str) -> Resource {
    ward_api::parse::resource(ward_api::parse::documents(yaml).unwrap().remove(0), "test").unwrap()
}

fn dataplane(name: &str, inbounds: &str) -> Resource {
    resource(&format!(
        "type: Dataplane\nmesh: m\nname: {name}\nnetworking:\n  address: 10.0.0.1\n  inbound:\n{inbounds}"
    ))
}

/// The MeshServices of mesh `m`: name, whether generated, and ports as `name:port/protocol`.
async fn mesh_services(store: &Store) -> Vec<(String, bool, Vec<String>)> {
    let mut found = Vec::new();
    for r in store.mesh_resources("m").await.unwrap() {
        let Spec::MeshService(ms) = &r.spec else { continue };
        let generated = r.meta.labels.get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1);
        let ports = ms
            .ports
            .iter()
            .map(|p| {
                format!("{}:{}/{}", p.name.as_deref().unwrap_or(""), p.port.0, p.app_protocol.as_deref().unwrap_or(""))
            })
            .collect();
        found.push((r.meta.name.clone(), generated, ports));
    }
    found.sort();
    found
}

fn entry(name: &str, generated: bool, ports: &[&str]) -> (String, bool, Vec<String>) {
    (name.to_string(), generated, ports.iter().map(|p| p.to_string()).collect())
}

#[tokio::test]
async fn mesh_services_follow_the_service_tags_while_the_mode_asks_for_them() {
    let store = Store::in_memory().await.unwrap();
    let admin = Actor("admin".into());
    store.put(resource("type: Mesh\nname: m\n"), &admin).await.unwrap();
    let web_1 = "  - port: 8080\n    name: api\n    tags: {kuma.io/service: web, kuma.io/protocol: http}\n  \
                 - port: 9090\n    tags: {kuma.io/service: web}\n  - port: 7070\n    tags: {kuma.io/service: Not_A_Label}\n";
    store.put(dataplane("web-1", web_1), &admin).await.unwrap();
    store.put(dataplane("web-2", "  - port: 8080\n    tags: {kuma.io/service: web}\n"), &admin).await.unwrap();
    store.put(dataplane("db-1", "  - port: 5432\n    tags: {kuma.io/service: db}\n"), &admin).await.unwrap();
    let own_db = "type: MeshService\nmesh: m\nname: db\nspec:\n  selector:\n    dataplaneTags: {app: db}\n  ports:\n  - port: 15432\n";
    store.put(resource(own_db), &admin).await.unwrap();

    sync(&store, "m").await.unwrap();
    assert_eq!(mesh_services(&store).await, [entry("db", false, &[":15432/"])], "mode Disabled: nothing generated");

    store.put(resource("type: Mesh\nname: m\nmeshServices:\n  mode: Exclusive\n"), &admin).await.unwrap();
    sync(&store, "m").await.unwrap();
    let web = entry("web", true, &["api:8080/http", "9090:9090/tcp"]);
    assert_eq!(
        mesh_services(&store).await,
        [entry("db", false, &[":15432/"]), web.clone()],
        "one per service that is a DNS label; a MeshService someone wrote is left alone"
    );
    let version = store.get(ResourceType::MeshService, "m", "web").await.unwrap().unwrap().meta.version;
    sync(&store, "m").await.unwrap();
    let again = store.get(ResourceType::MeshService, "m", "web").await.unwrap().unwrap().meta.version;
    assert_eq!(again, version, "nothing changed, nothing written");

    store.delete(ResourceType::Dataplane, "m", "web-1", &admin).await.unwrap();
    sync(&store, "m").await.unwrap();
    assert_eq!(mesh_services(&store).await[1], entry("web", true, &["8080:8080/tcp"]), "ports follow the dataplanes");

    store.delete(ResourceType::Dataplane, "m", "web-2", &admin).await.unwrap();
    store.delete(ResourceType::MeshService, "m", "db", &admin).await.unwrap();
    sync(&store, "m").await.unwrap();
    assert_eq!(
        mesh_services(&store).await,
        [entry("db", true, &["5432:5432/tcp"])],
        "web is gone; db is generated now"
    );

    store.put(resource("type: Mesh\nname: m\nmeshServices:\n  mode: Disabled\n"), &admin).await.unwrap();
    sync(&store, "m").await.unwrap();
    assert_eq!(mesh_services(&store).await, [], "back to Disabled: the generated ones go");
}
