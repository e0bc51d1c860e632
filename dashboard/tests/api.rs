//! The API through the router, without a socket, on a `MemStore`: status
//! codes, JSON errors, guards, and that every refused change leaves the
//! stored topology exactly as it was.
//!
//! Servers in these topologies are addresses nobody listens on (port 1 and
//! friends), so calls that must reach Redis fail fast with 502; the Redis side
//! is covered by the integration tests in `tests/tests/it/control_*.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use shardis_dashboard::api::{LeaderInfo, Role};
use shardis_dashboard::routes::ROUTES;
use shardis_dashboard::{app, AppState, Config, Leadership};
use shardis_topology::{Group, MemStore, ProxyInfo, SlotState, Store, Topology};
use tokio::sync::watch;
use tower::ServiceExt;

const TOKEN: &str = "test-token-0123456789abcdef";

/// A dashboard on `store`; it campaigns like a real one. The sender stops it
/// when dropped.
struct Dash {
    state: Arc<AppState>,
    router: Router,
    _stop: watch::Sender<bool>,
}

async fn dashboard(store: &MemStore, id: &str, config: Config) -> Dash {
    let leadership = Arc::new(Leadership::new(
        id.into(),
        format!("127.0.0.1:{}", id.len()),
    ));
    let (stop, rx) = watch::channel(false);
    let store: Arc<dyn Store> = Arc::new(store.clone());
    tokio::spawn(
        leadership
            .clone()
            .campaign(store.clone(), config.lease_ttl(), rx),
    );
    let state = Arc::new(AppState::new(store, config, leadership));
    Dash {
        router: app(state.clone()),
        state,
        _stop: stop,
    }
}

fn test_config() -> Config {
    Config {
        cluster: "unit".into(),
        redis_timeout_ms: 300,
        proxy_health_timeout_ms: 300,
        barrier_timeout_secs: 1,
        catchup_timeout_secs: 1,
        ..Config::default()
    }
}

async fn leader(store: &MemStore) -> Dash {
    leader_with(store, test_config()).await
}

async fn leader_with(store: &MemStore, config: Config) -> Dash {
    let d = dashboard(store, "dash-leader", config).await;
    assert!(d.state.leadership.wait_leader(Duration::from_secs(3)).await);
    d
}

/// Sends one request; the status and the JSON body (`Value::Null` if none).
async fn call(
    router: &Router,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, value)
}

async fn get(d: &Dash, path: &str) -> (StatusCode, Value) {
    call(&d.router, "GET", path, None, &[]).await
}

async fn post(d: &Dash, path: &str, body: Value) -> (StatusCode, Value) {
    call(&d.router, "POST", path, Some(&body.to_string()), &[]).await
}

async fn delete(d: &Dash, path: &str) -> (StatusCode, Value) {
    call(&d.router, "DELETE", path, None, &[]).await
}

/// Asserts a JSON error with `status` whose text contains `needle`.
#[track_caller]
fn assert_error(got: &(StatusCode, Value), status: StatusCode, needle: &str) {
    let text = got.1["error"].as_str().unwrap_or_else(|| {
        panic!(
            "expected a JSON error with {status}, got {} {}",
            got.0, got.1
        )
    });
    assert_eq!(got.0, status, "{text}");
    assert!(
        text.contains(needle),
        "error {text:?} should mention {needle:?}"
    );
}

/// Groups 1 (`h:1` master, `h:2` replica; slots 0-99) and 2 (`h:3`; slots 100-199).
fn seeded() -> Topology {
    let mut t = Topology {
        version: 1,
        ..Topology::default()
    };
    for (id, servers) in [
        (1, ["127.0.0.1:1", "127.0.0.1:2"].as_slice()),
        (2, &["127.0.0.1:3"]),
    ] {
        t.groups.insert(
            id,
            Group {
                id,
                servers: servers.iter().map(|s| s.to_string()).collect(),
            },
        );
    }
    for s in 0..100 {
        t.slots[s] = SlotState::Normal { group: 1 };
    }
    for s in 100..200 {
        t.slots[s] = SlotState::Normal { group: 2 };
    }
    t
}

async fn seeded_store() -> MemStore {
    let store = MemStore::new();
    store.save_topology(0, &seeded()).await.unwrap();
    store
}

fn stored(store: &MemStore) -> Topology {
    store.topology().map(|t| (*t).clone()).unwrap_or_default()
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn groups_are_created_listed_and_deleted() {
    let store = MemStore::new();
    let d = leader(&store).await;

    // No content type needed: `curl -d '{"id": 1}'` works.
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/groups")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(r#"{"id": 1}"#))
        .unwrap();
    let resp = d.router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = serde_json::from_slice(
        &axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["version"], 1);
    assert_eq!(body["message"], "group 1 created");

    let before = stored(&store);
    assert_error(
        &post(&d, "/api/v1/groups", json!({"id": 1})).await,
        StatusCode::CONFLICT,
        "already exists",
    );
    assert_error(
        &post(&d, "/api/v1/groups", json!({"id": 0})).await,
        StatusCode::BAD_REQUEST,
        "1 or more",
    );
    assert_eq!(stored(&store), before, "refused changes change nothing");

    let (status, body) = get(&d, "/api/v1/groups").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["version"], 1);
    assert_eq!(body["groups"][0]["id"], 1);
    assert_eq!(body["groups"][0]["servers"], json!([]));

    assert_error(
        &delete(&d, "/api/v1/groups/7").await,
        StatusCode::NOT_FOUND,
        "unknown group 7",
    );
    let (status, body) = delete(&d, "/api/v1/groups/1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 2);
    assert!(stored(&store).groups.is_empty());
}

#[tokio::test]
async fn a_group_with_slots_is_not_deleted() {
    let store = seeded_store().await;
    let d = leader(&store).await;
    assert_error(
        &delete(&d, "/api/v1/groups/2").await,
        StatusCode::CONFLICT,
        "still owns slots 100-199",
    );
    assert_eq!(stored(&store), seeded());
}

#[tokio::test]
async fn malformed_requests_get_json_errors_and_change_nothing() {
    let store = seeded_store().await;
    let d = leader(&store).await;
    let r = &d.router;
    let cases = [
        call(r, "POST", "/api/v1/groups", Some("{"), &[]).await,
        call(r, "POST", "/api/v1/groups", Some("{\"id\": \"one\"}"), &[]).await,
        call(
            r,
            "POST",
            "/api/v1/groups",
            Some("{\"id\": 3, \"extra\": 1}"),
            &[],
        )
        .await,
        call(r, "POST", "/api/v1/groups", Some("[]"), &[]).await,
        // No body at all.
        call(r, "POST", "/api/v1/groups", None, &[]).await,
        call(r, "DELETE", "/api/v1/groups/abc", None, &[]).await,
        call(
            r,
            "POST",
            "/api/v1/groups/1/servers",
            Some("{\"addr\": \"nohost\"}"),
            &[],
        )
        .await,
        call(
            r,
            "POST",
            "/api/v1/slots/assign",
            Some("{\"slots\": 5, \"group\": 1}"),
            &[],
        )
        .await,
    ];
    for (i, got) in cases.iter().enumerate() {
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "case {i}: {}", got.1);
        assert!(got.1["error"].is_string(), "case {i}: {}", got.1);
    }
    let (status, body) = get(&d, "/api/v1/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"].as_str().unwrap().contains("openapi.json"),
        "{body}"
    );
    let (status, body) = call(r, "PUT", "/api/v1/groups", None, &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body["error"].is_string(), "{body}");
    assert_error(
        &get(&d, "/api/v1/barrier?version=x").await,
        StatusCode::BAD_REQUEST,
        "bad query",
    );
    assert_eq!(stored(&store), seeded());
}

#[tokio::test]
async fn slots_are_listed_and_only_unassigned_ones_assigned() {
    let store = seeded_store().await;
    let d = leader(&store).await;

    let (status, body) = get(&d, "/api/v1/slots").await;
    assert_eq!(status, StatusCode::OK);
    let slots = body["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 1024);
    assert_eq!(slots[5], json!({"slot": 5, "state": "normal", "group": 1}));
    assert_eq!(
        slots[500],
        json!({"slot": 500, "state": "unassigned", "group": null})
    );

    let refused = [
        (
            json!({"slots": "200-210,205", "group": 1}),
            StatusCode::BAD_REQUEST,
            "appears twice",
        ),
        (
            json!({"slots": "1000-1024", "group": 1}),
            StatusCode::BAD_REQUEST,
            "out of range",
        ),
        (
            json!({"slots": "10-5", "group": 1}),
            StatusCode::BAD_REQUEST,
            "backwards",
        ),
        (
            json!({"slots": "", "group": 1}),
            StatusCode::BAD_REQUEST,
            "bad slot ranges",
        ),
        (
            json!({"slots": "300", "group": 9}),
            StatusCode::NOT_FOUND,
            "unknown group 9",
        ),
        (
            json!({"slots": "190-205", "group": 1}),
            StatusCode::CONFLICT,
            "190-199 (normal(2))",
        ),
    ];
    for (body, status, needle) in refused {
        assert_error(
            &post(&d, "/api/v1/slots/assign", body).await,
            status,
            needle,
        );
    }
    // A group without servers cannot take slots.
    post(&d, "/api/v1/groups", json!({"id": 3})).await;
    let before = stored(&store);
    assert_error(
        &post(
            &d,
            "/api/v1/slots/assign",
            json!({"slots": "300", "group": 3}),
        )
        .await,
        StatusCode::CONFLICT,
        "has no servers",
    );
    assert_eq!(stored(&store), before);

    let (status, body) = post(
        &d,
        "/api/v1/slots/assign",
        json!({"slots": "200-299,400", "group": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], before.version + 1);
    assert_eq!(stored(&store).ranges_of(2), "100-299,400");
}

#[tokio::test]
async fn a_stale_version_is_refused() {
    let store = seeded_store().await;
    let d = leader(&store).await;
    let r = &d.router;
    // Someone else changes the topology after the caller read version 1.
    let mut next = seeded();
    next.version = 2;
    next.slots[999] = SlotState::Normal { group: 2 };
    store.save_topology(1, &next).await.unwrap();

    let got = call(
        r,
        "POST",
        "/api/v1/slots/assign",
        Some(&json!({"slots": "500", "group": 1}).to_string()),
        &[("if-match", "1")],
    )
    .await;
    assert_error(&got, StatusCode::CONFLICT, "stale version");
    assert!(
        got.1["error"].as_str().unwrap().contains("version 2"),
        "{}",
        got.1
    );
    assert_eq!(stored(&store), next);
    assert_error(
        &call(
            r,
            "DELETE",
            "/api/v1/groups/1",
            None,
            &[("if-match", "one")],
        )
        .await,
        StatusCode::BAD_REQUEST,
        "If-Match",
    );
    // Based on the current version it goes through.
    let (status, body) = call(
        r,
        "POST",
        "/api/v1/slots/assign",
        Some(&json!({"slots": "500", "group": 1}).to_string()),
        &[("if-match", "\"2\"")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 3);
}

#[tokio::test]
async fn the_admin_token_guards_changes_only() {
    let store = seeded_store().await;
    let d = leader_with(
        &store,
        Config {
            admin_token: Some(TOKEN.into()),
            ..test_config()
        },
    )
    .await;
    let r = &d.router;
    let body = json!({"id": 5}).to_string();
    assert_error(
        &call(r, "POST", "/api/v1/groups", Some(&body), &[]).await,
        StatusCode::UNAUTHORIZED,
        "Authorization: Bearer",
    );
    assert_error(
        &call(
            r,
            "POST",
            "/api/v1/groups",
            Some(&body),
            &[("authorization", "Bearer nope")],
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "wrong admin token",
    );
    assert_error(
        &call(
            r,
            "DELETE",
            "/api/v1/groups/1",
            None,
            &[("authorization", TOKEN)],
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "Bearer",
    );
    assert_eq!(stored(&store), seeded());
    let bearer = format!("Bearer {TOKEN}");
    let (status, _) = call(
        r,
        "POST",
        "/api/v1/groups",
        Some(&body),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // Reads stay open.
    assert_eq!(get(&d, "/api/v1/overview").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_standby_serves_reads_and_names_the_leader_for_changes() {
    let store = seeded_store().await;
    let _leader = leader(&store).await;
    let standby = dashboard(&store, "dash-standby", test_config()).await;
    // Give it a campaign round to learn who leads.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = post(&standby, "/api/v1/groups", json!({"id": 5})).await;
    assert_error(&got, StatusCode::SERVICE_UNAVAILABLE, "standby");
    assert_eq!(got.1["leader"]["id"], "dash-leader", "{}", got.1);
    assert_eq!(stored(&store), seeded());

    let (status, body) = get(&standby, "/api/v1/overview").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["dashboard"]["role"], "standby");
    assert_eq!(body["dashboard"]["leader"]["id"], "dash-leader");
    assert_eq!(get(&standby, "/api/v1/slots").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_leader_whose_lease_is_gone_cannot_write() {
    let store = seeded_store().await;
    let d = leader(&store).await;
    // The lease ends behind the dashboard's back (before it notices).
    for lease in store.leases() {
        store.expire_lease(lease);
    }
    let got = post(&d, "/api/v1/groups", json!({"id": 5})).await;
    assert_eq!(got.0, StatusCode::SERVICE_UNAVAILABLE, "{}", got.1);
    assert_eq!(stored(&store), seeded());
}

#[tokio::test]
async fn servers_that_cannot_be_reached_are_502_and_change_nothing() {
    let store = seeded_store().await;
    let d = leader(&store).await;
    post(&d, "/api/v1/groups", json!({"id": 3})).await;
    let before = stored(&store);
    assert_error(
        &post(
            &d,
            "/api/v1/groups/3/servers",
            json!({"addr": "127.0.0.1:9"}),
        )
        .await,
        StatusCode::BAD_GATEWAY,
        "127.0.0.1:9",
    );
    assert_error(
        &post(
            &d,
            "/api/v1/groups/9/servers",
            json!({"addr": "127.0.0.1:9"}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "unknown group 9",
    );
    assert_error(
        &post(
            &d,
            "/api/v1/groups/3/servers",
            json!({"addr": "127.0.0.1:3"}),
        )
        .await,
        StatusCode::CONFLICT,
        "already belongs to group 2",
    );
    assert_eq!(stored(&store), before);
}

#[tokio::test]
async fn masters_are_not_removed_from_under_their_slots() {
    let store = seeded_store().await;
    let d = leader(&store).await;
    assert_error(
        &delete(&d, "/api/v1/groups/1/servers/127.0.0.1:1").await,
        StatusCode::CONFLICT,
        "promote another server first",
    );
    assert_error(
        &delete(&d, "/api/v1/groups/2/servers/127.0.0.1:3").await,
        StatusCode::CONFLICT,
        "still serves slots 100-199",
    );
    assert_error(
        &delete(&d, "/api/v1/groups/1/servers/127.0.0.1:7").await,
        StatusCode::NOT_FOUND,
        "not in group 1",
    );
    assert_eq!(stored(&store), seeded());
    // A replica goes (detaching it fails here: nobody listens, so a warning).
    let (status, body) = delete(&d, "/api/v1/groups/1/servers/127.0.0.1:2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["warnings"][0]
            .as_str()
            .unwrap()
            .contains("REPLICAOF NO ONE"),
        "{body}"
    );
    assert_eq!(stored(&store).groups[&1].servers, vec!["127.0.0.1:1"]);
}

#[tokio::test]
async fn promotion_refuses_what_is_not_a_replica_of_the_group() {
    let store = seeded_store().await;
    let d = leader(&store).await;
    let cases = [
        (
            "/api/v1/groups/9/promote",
            "127.0.0.1:2",
            StatusCode::NOT_FOUND,
            "unknown group 9",
        ),
        (
            "/api/v1/groups/1/promote",
            "127.0.0.1:1",
            StatusCode::CONFLICT,
            "already the master",
        ),
        (
            "/api/v1/groups/1/promote",
            "127.0.0.1:3",
            StatusCode::CONFLICT,
            "not a replica of group 1",
        ),
        (
            "/api/v1/groups/1/promote",
            "bad",
            StatusCode::BAD_REQUEST,
            "host:port",
        ),
        // A replica of the group that cannot be reached: nothing is touched.
        (
            "/api/v1/groups/1/promote",
            "127.0.0.1:2",
            StatusCode::BAD_GATEWAY,
            "127.0.0.1:2",
        ),
    ];
    for (path, addr, status, needle) in cases {
        assert_error(&post(&d, path, json!({"addr": addr})).await, status, needle);
    }
    assert_eq!(stored(&store), seeded());

    // One operation per group at a time.
    let claim = d.state.claim_group(1, "promotion of 127.0.0.1:2").unwrap();
    assert_error(
        &post(
            &d,
            "/api/v1/groups/1/promote",
            json!({"addr": "127.0.0.1:2"}),
        )
        .await,
        StatusCode::CONFLICT,
        "group 1 is busy: promotion of 127.0.0.1:2",
    );
    drop(claim);
    assert_eq!(stored(&store), seeded());
}

fn proxy(id: &str, applied: u64) -> ProxyInfo {
    ProxyInfo {
        id: id.into(),
        addr: "127.0.0.1:19000".into(),
        // Nobody listens: the proxy shows as unhealthy.
        admin_addr: "127.0.0.1:1".into(),
        start_time: 1,
        applied_version: applied,
        pid: 7,
        lease: 0,
    }
}

#[tokio::test]
async fn proxies_and_the_barrier_show_who_lags() {
    let store = seeded_store().await;
    let d = leader(&store).await;
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    store
        .put_proxy(lease, &proxy("p-current", 1))
        .await
        .unwrap();
    store.put_proxy(lease, &proxy("p-behind", 0)).await.unwrap();

    let (status, body) = get(&d, "/api/v1/proxies").await;
    assert_eq!(status, StatusCode::OK);
    let proxies = body["proxies"].as_array().unwrap();
    assert_eq!(proxies.len(), 2);
    let behind = proxies.iter().find(|p| p["id"] == "p-behind").unwrap();
    assert_eq!(behind["lagging"], true);
    assert_eq!(behind["healthy"], false);
    assert_eq!(behind["applied_version"], 0);
    let current = proxies.iter().find(|p| p["id"] == "p-current").unwrap();
    assert_eq!(current["lagging"], false);

    let got = get(&d, "/api/v1/barrier?timeout_ms=100").await;
    assert_error(&got, StatusCode::GATEWAY_TIMEOUT, "p-behind");
    assert_eq!(
        got.1["lagging"],
        json!([{"id": "p-behind", "addr": "127.0.0.1:19000", "applied_version": 0}])
    );
    let (status, body) = get(&d, "/api/v1/barrier?version=0&timeout_ms=100").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"version": 0, "proxies": 2}));

    store.put_proxy(lease, &proxy("p-behind", 1)).await.unwrap();
    let (status, body) = get(&d, "/api/v1/barrier?timeout_ms=100").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 1);
}

#[tokio::test]
async fn the_overview_has_everything_status_shows() {
    let store = seeded_store().await;
    let d = leader(&store).await;
    let (status, body) = get(&d, "/api/v1/overview").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cluster"], "unit");
    assert_eq!(body["version"], 1);
    assert_eq!(body["dashboard"]["role"], "leader");
    assert_eq!(body["dashboard"]["leader"]["id"], "dash-leader");
    assert_eq!(body["unassigned_slots"], "200-1023");
    assert_eq!(body["busy_slots"], "");
    let g1 = &body["groups"][0];
    assert_eq!(g1["slots"], "0-99");
    assert_eq!(g1["slot_count"], 100);
    assert_eq!(g1["servers"][0]["addr"], "127.0.0.1:1");
    assert_eq!(g1["servers"][0]["role"], "master");
    assert_eq!(g1["servers"][1]["role"], "replica");
    // Unreachable servers say so instead of failing the whole overview.
    assert!(
        g1["servers"][0]["error"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{g1}"
    );
    let typed: shardis_dashboard::api::Overview = serde_json::from_value(body).unwrap();
    assert_eq!(typed.dashboard.role, Role::Leader);
    assert_eq!(
        typed.dashboard.leader.map(|l: LeaderInfo| l.addr),
        Some(typed.dashboard.addr)
    );
}

#[tokio::test]
async fn an_unreachable_store_is_a_503() {
    let store = seeded_store().await;
    let d = leader(&store).await;
    store.set_available(false);
    assert_error(
        &get(&d, "/api/v1/slots").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    store.set_available(true);
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_only_those() {
    let store = seeded_store().await;
    let d = leader(&store).await;
    let (status, doc) = get(&d, "/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut routed: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(documented, routed);

    // ROUTES is the router: every entry is served (not the 404/405
    // fallbacks), and the source registers no path ROUTES lacks.
    for (method, path) in ROUTES {
        let concrete = path.replace("{id}", "1").replace("{addr}", "127.0.0.1:1");
        let body = (*method == "POST").then_some("{}");
        let (status, answer) = call(&d.router, method, &concrete, body, &[]).await;
        assert!(
            status != StatusCode::NOT_FOUND
                || !answer["error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("no such API call"),
            "{method} {path} is not routed: {answer}"
        );
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
    }
    let source = include_str!("../src/routes.rs");
    let app_fn = &source[source.find("pub fn app(").unwrap()..];
    let app_fn = &app_fn[..app_fn.find("\n}\n").unwrap()];
    for piece in app_fn.split(".route(").skip(1) {
        let path = piece.trim_start().trim_start_matches('"');
        let path = &path[..path.find('"').unwrap()];
        assert!(
            ROUTES.iter().any(|(_, p)| *p == path),
            "app() routes {path}, which ROUTES (and so the OpenAPI test) does not list"
        );
    }
}

/// A web page of another site cannot change the cluster (a browser sends
/// its `POST` without asking first); the dashboard's own page, the CLI and
/// curl can. A rebalance never takes its options from a body.
#[tokio::test]
async fn changes_from_another_site_and_rebalance_bodies_are_refused() {
    let store = seeded_store().await;
    let d = leader(&store).await;
    let r = &d.router;
    let before = stored(&store);
    let body = json!({"id": 66}).to_string();
    for headers in [
        &[
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:18080"),
        ][..],
        &[("origin", "null"), ("host", "127.0.0.1:18080")],
        &[("sec-fetch-site", "cross-site")],
    ] {
        assert_error(
            &call(r, "POST", "/api/v1/groups", Some(&body), headers).await,
            StatusCode::FORBIDDEN,
            "another site",
        );
    }
    assert_eq!(stored(&store), before, "refused changes change nothing");
    // Reads stay open to anyone.
    let (status, _) = call(
        r,
        "GET",
        "/api/v1/groups",
        None,
        &[("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        &call(
            r,
            "POST",
            "/api/v1/rebalance",
            Some(r#"{"dry_run": true}"#),
            &[],
        )
        .await,
        StatusCode::BAD_REQUEST,
        "query string",
    );
    assert_eq!(stored(&store), before);
    // The dashboard's own page (same origin), and a caller without Origin.
    let (status, _) = call(
        r,
        "POST",
        "/api/v1/groups",
        Some(&body),
        &[
            ("origin", "http://127.0.0.1:18080"),
            ("host", "127.0.0.1:18080"),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = post(&d, "/api/v1/groups", json!({"id": 67})).await;
    assert_eq!(status, StatusCode::CREATED);
}

/// An absurdly long address is refused without being echoed back.
#[tokio::test]
async fn a_huge_address_is_refused_without_its_echo() {
    let store = seeded_store().await;
    let d = leader(&store).await;
    let addr = format!("{}:7001", "h".repeat(1 << 20));
    let got = post(&d, "/api/v1/groups/1/servers", json!({ "addr": addr })).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "too long for host:port");
    assert!(
        got.1.to_string().len() < 1000,
        "{}",
        got.1.to_string().len()
    );
    let got = call(&d.router, "POST", "/api/v1/migrations/abc/pause", None, &[]).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "ids are numbers");
}
