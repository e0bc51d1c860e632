//! The HTTP API: `app(state)` builds the router; every handler answers JSON,
//! every error is an [`AppError`] (also malformed JSON, paths and queries,
//! which axum would answer in plain text).
//!
//! Mutating calls (anything but GET) pass two guards first: the admin token
//! when one is configured (401), then leadership (503 on a standby, naming
//! the leader). Read-only calls are open and served by standbys too.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use shardis_topology::{parse_ranges, GroupId};

use crate::api::{
    AddServer, AssignSlots, BarrierResponse, ChangeResponse, ClusterStats, CreateGroup,
    CreateMigration, ErrorBody, GroupsResponse, MigrationView, Overview, PromoteResponse,
    ProxiesResponse, RebalanceResponse, SetRate, SlotsResponse, SlowlogResponse, StatsHistory,
    IF_MATCH,
};
use crate::error::AppError;
use crate::state::AppState;
use crate::{barrier, changes, migrate, openapi, promote, stats, ui, views};

pub type Shared = Arc<AppState>;

/// Every route, as `(method, path)`: the OpenAPI document must describe
/// exactly these (a test holds both to it).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/overview"),
    ("GET", "/api/v1/groups"),
    ("POST", "/api/v1/groups"),
    ("DELETE", "/api/v1/groups/{id}"),
    ("POST", "/api/v1/groups/{id}/servers"),
    ("DELETE", "/api/v1/groups/{id}/servers/{addr}"),
    ("POST", "/api/v1/groups/{id}/promote"),
    ("GET", "/api/v1/slots"),
    ("POST", "/api/v1/slots/assign"),
    ("GET", "/api/v1/proxies"),
    ("GET", "/api/v1/barrier"),
    ("GET", "/api/v1/migrations"),
    ("POST", "/api/v1/migrations"),
    ("GET", "/api/v1/migrations/{id}"),
    ("POST", "/api/v1/migrations/{id}/pause"),
    ("POST", "/api/v1/migrations/{id}/resume"),
    ("POST", "/api/v1/migrations/{id}/stop"),
    ("POST", "/api/v1/migrations/{id}/rate"),
    ("POST", "/api/v1/rebalance"),
    // Traffic statistics, Prometheus and the web UI.
    ("GET", "/metrics"),
    ("GET", "/api/v1/stats"),
    ("GET", "/api/v1/stats/history"),
    ("GET", "/api/v1/slowlog"),
    ("GET", "/"),
    ("GET", "/ui/app.js"),
    ("GET", "/ui/app.css"),
];

/// The longest a caller may ask `GET /api/v1/barrier` to wait.
const MAX_BARRIER_WAIT: Duration = Duration::from_secs(300);

pub fn app(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/groups", get(list_groups).post(create_group))
        .route("/api/v1/groups/{id}", axum::routing::delete(delete_group))
        .route("/api/v1/groups/{id}/servers", post(add_server))
        .route(
            "/api/v1/groups/{id}/servers/{addr}",
            axum::routing::delete(remove_server),
        )
        .route("/api/v1/groups/{id}/promote", post(promote_replica))
        .route("/api/v1/slots", get(list_slots))
        .route("/api/v1/slots/assign", post(assign_slots))
        .route("/api/v1/proxies", get(list_proxies))
        .route("/api/v1/barrier", get(barrier_wait))
        .route(
            "/api/v1/migrations",
            get(list_migrations).post(create_migration),
        )
        .route("/api/v1/migrations/{id}", get(get_migration))
        .route("/api/v1/migrations/{id}/pause", post(pause_migration))
        .route("/api/v1/migrations/{id}/resume", post(resume_migration))
        .route("/api/v1/migrations/{id}/stop", post(stop_migration))
        .route("/api/v1/migrations/{id}/rate", post(rate_migration))
        .route("/api/v1/rebalance", post(rebalance))
        .route("/metrics", get(metrics))
        .route("/api/v1/stats", get(cluster_stats))
        .route("/api/v1/stats/history", get(stats_history))
        .route("/api/v1/slowlog", get(slowlog))
        .route("/", get(ui::index))
        .route("/ui/app.js", get(ui::app_js))
        .route("/ui/app.css", get(ui::app_css))
        // Only matched routes are guarded: an unknown path is a 404 for anyone.
        .route_layer(middleware::from_fn_with_state(state.clone(), guard))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state)
}

// ---------------------------------------------------------------------------
// Guards and extractors
// ---------------------------------------------------------------------------

/// Admin token, then leadership, for every call that is not a read.
async fn guard(State(state): State<Shared>, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    if let Err(e) = check_same_site(request.headers()) {
        return e.into_response();
    }
    if let Some(token) = &state.config.admin_token {
        if let Err(e) = check_token(request.headers(), token) {
            return e.into_response();
        }
    }
    if let Err(e) = state.leadership.require_leader() {
        return e.into_response();
    }
    next.run(request).await
}

/// A change must not come from a web page of another site: a browser sends
/// such a page's `POST` with a plain-text body without asking first, and
/// the body is JSON all the same. The browser says where the page is from
/// (`Origin`, `Sec-Fetch-Site`); the CLI and curl send neither.
fn check_same_site(headers: &HeaderMap) -> Result<(), AppError> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let cross = match (text("sec-fetch-site"), text("origin")) {
        (Some("cross-site"), _) => true,
        (_, Some(origin)) => {
            let from = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            text("host").is_none_or(|host| !from.eq_ignore_ascii_case(host))
        }
        _ => false,
    };
    if cross {
        return Err(AppError::Forbidden(
            "a change sent by a web page of another site is refused (Origin does not match \
             Host)"
                .into(),
        ));
    }
    Ok(())
}

fn check_token(headers: &HeaderMap, token: &str) -> Result<(), AppError> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        None => Err(AppError::Unauthorized(
            "this call changes the cluster: it needs `Authorization: Bearer <admin token>` \
             (the CLI's --token or SHARDIS_TOKEN)"
                .into(),
        )),
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(AppError::Unauthorized("wrong admin token".into())),
    }
}

/// Compares without stopping at the first difference, so the answer's
/// timing does not tell how much of a guess was right (only the length,
/// which the minimum length makes worthless).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `If-Match` header: the topology version the caller based a change on.
fn based_on(headers: &HeaderMap) -> Result<Option<u64>, AppError> {
    let Some(value) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("");
    let bare = text.trim().trim_start_matches("W/").trim_matches('"');
    bare.parse().map(Some).map_err(|_| {
        AppError::BadRequest(format!(
            "If-Match {text:?} is not a topology version (a number, e.g. `If-Match: 42`)"
        ))
    })
}

/// A JSON request body. Unlike `axum::Json` it does not insist on a
/// `Content-Type: application/json` header (a plain `curl -d '{"id": 1}'`
/// sends a form type), and every failure is a JSON error.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| AppError::BadRequest(format!("bad request body: {}", r.body_text())))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(AppError::BadRequest(
                "this call needs a JSON body; see /api/v1/openapi.json".into(),
            ));
        }
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| AppError::BadRequest(format!("bad request body: {e}")))
    }
}

/// `axum::extract::Path` with JSON errors (`/groups/abc`).
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(rejection) => Err(AppError::BadRequest(format!(
                "bad path: {} (ids are numbers 1 or more)",
                rejection.body_text()
            ))),
        }
    }
}

/// `axum::extract::Query` with JSON errors.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(AppError::BadRequest(format!(
                "bad query: {}",
                rejection.body_text()
            ))),
        }
    }
}

async fn no_route(method: Method, uri: axum::http::Uri) -> AppError {
    AppError::NotFound(format!(
        "no such API call: {method} {}; the calls are listed at /api/v1/openapi.json",
        uri.path()
    ))
}

async fn wrong_method(method: Method, uri: axum::http::Uri) -> Response {
    let body = ErrorBody {
        error: format!(
            "{method} is not allowed on {}; the calls are listed at /api/v1/openapi.json",
            uri.path()
        ),
        leader: None,
        lagging: Vec::new(),
    };
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

// ---------------------------------------------------------------------------
// Read-only calls
// ---------------------------------------------------------------------------

async fn healthz() -> &'static str {
    "ok\n"
}

async fn openapi_json() -> Json<serde_json::Value> {
    Json(openapi::document())
}

async fn overview(State(s): State<Shared>) -> Result<Json<Overview>, AppError> {
    Ok(Json(views::overview(&s).await?))
}

async fn list_groups(State(s): State<Shared>) -> Result<Json<GroupsResponse>, AppError> {
    let t = s.load().await?;
    Ok(Json(GroupsResponse {
        version: t.version,
        groups: views::groups(&s, &t).await,
    }))
}

async fn list_slots(State(s): State<Shared>) -> Result<Json<SlotsResponse>, AppError> {
    let t = s.load().await?;
    Ok(Json(SlotsResponse {
        version: t.version,
        slots: views::slots(&t),
    }))
}

async fn list_proxies(State(s): State<Shared>) -> Result<Json<ProxiesResponse>, AppError> {
    let t = s.load().await?;
    Ok(Json(ProxiesResponse {
        version: t.version,
        proxies: views::proxies(&s, t.version).await?,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BarrierQuery {
    /// Default: the current topology version.
    version: Option<u64>,
    /// Default: the configured barrier timeout.
    timeout_ms: Option<u64>,
}

/// Waits until every live proxy applied a version; 504 listing the laggards.
async fn barrier_wait(
    State(s): State<Shared>,
    ApiQuery(q): ApiQuery<BarrierQuery>,
) -> Result<Json<BarrierResponse>, AppError> {
    let version = match q.version {
        Some(v) => v,
        None => s.load().await?.version,
    };
    let within = q
        .timeout_ms
        .map_or(s.config.barrier_timeout(), Duration::from_millis)
        .min(MAX_BARRIER_WAIT);
    let passed = barrier::wait_applied(s.store.as_ref(), version, within).await?;
    Ok(Json(BarrierResponse {
        version,
        proxies: passed.confirmed,
    }))
}

// ---------------------------------------------------------------------------
// Traffic statistics
// ---------------------------------------------------------------------------

/// Prometheus text: the cluster, every proxy and every server.
async fn metrics(State(s): State<Shared>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            shardis_topology::stats::PROM_CONTENT_TYPE,
        )],
        stats::metrics_text(&s).await,
    )
        .into_response()
}

async fn cluster_stats(State(s): State<Shared>) -> Json<ClusterStats> {
    Json(s.stats.latest())
}

async fn stats_history(State(s): State<Shared>) -> Json<StatsHistory> {
    Json(s.stats.history())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlowlogQuery {
    /// Newest entries over all proxies (default 50, at most 1000).
    n: Option<usize>,
}

async fn slowlog(
    State(s): State<Shared>,
    ApiQuery(q): ApiQuery<SlowlogQuery>,
) -> Result<Json<SlowlogResponse>, AppError> {
    let n = q.n.unwrap_or(50).min(1000);
    Ok(Json(stats::slowlog(&s, n).await?))
}

// ---------------------------------------------------------------------------
// Changes
// ---------------------------------------------------------------------------

fn changed(version: u64, message: String) -> ChangeResponse {
    ChangeResponse {
        version,
        message,
        warnings: Vec::new(),
        replication: None,
    }
}

async fn create_group(
    State(s): State<Shared>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateGroup>,
) -> Result<(StatusCode, Json<ChangeResponse>), AppError> {
    let based_on = based_on(&headers)?;
    let (t, ()) = s
        .change_topology(based_on, |t| changes::create_group(t, body.id))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(changed(t.version, format!("group {} created", body.id))),
    ))
}

async fn delete_group(
    State(s): State<Shared>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<GroupId>,
) -> Result<Json<ChangeResponse>, AppError> {
    let based_on = based_on(&headers)?;
    let _claim = s.claim_group(id, "deleting the group")?;
    let (t, ()) = s
        .change_topology(based_on, |t| changes::delete_group(t, id))
        .await?;
    Ok(Json(changed(t.version, format!("group {id} deleted"))))
}

/// Adds a server. The group's first server becomes its master and must hold
/// no keys (unless `force`); every further one is made a replica of the
/// master with `REPLICAOF`, which DISCARDS the data it held: one that holds
/// keys or has replicas of its own is refused unless `force`. A Redis
/// server already listed under another name (`localhost:7003` for
/// `127.0.0.1:7003`: the same `run_id`) is always refused.
async fn add_server(
    State(s): State<Shared>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<GroupId>,
    ApiJson(body): ApiJson<AddServer>,
) -> Result<(StatusCode, Json<ChangeResponse>), AppError> {
    let based_on = based_on(&headers)?;
    let addr = body.addr.trim().to_string();
    changes::check_addr(&addr)?;
    let _claim = s.claim_group(id, &format!("adding server {addr}"))?;
    // Refuse before touching the server: unknown group, server elsewhere.
    let (current, ()) = s
        .check_change(based_on, |t| changes::add_server(t, id, &addr))
        .await?;
    let master = current
        .groups
        .get(&id)
        .and_then(|g| g.master())
        .map(str::to_string);
    let info = s
        .servers
        .replication(&addr)
        .await
        .map_err(|e| e.context(format_args!("cannot add server {addr} to group {id}")))?;
    let keys = s.servers.dbsize(&addr).await?;
    refuse_known_under_another_name(&s, &current, &addr).await?;
    let mut warnings = Vec::new();
    let (message, replication) = match master {
        None => {
            if keys > 0 && !body.force {
                return Err(AppError::Conflict(format!(
                    "server {addr} holds {keys} keys: the first server of a group becomes its \
                     master and must be empty, or those keys would be served for slots they do \
                     not belong to; empty it, or pass \"force\": true to keep them"
                )));
            }
            if keys > 0 {
                warnings.push(format!("kept the {keys} keys {addr} already held (force)"));
            }
            let mut replication = info;
            if !replication.is_master() {
                let of = replication.master.clone().unwrap_or_default();
                if !body.force {
                    return Err(AppError::Conflict(format!(
                        "server {addr} is a replica of {of}: a group's master must be a master; \
                         pass \"force\": true to make it one (REPLICAOF NO ONE)"
                    )));
                }
                s.servers.make_master(&addr).await?;
                warnings.push(format!("{addr} stopped replicating {of} (force)"));
                replication = s.servers.replication(&addr).await?;
            }
            (
                format!("{addr} added to group {id} as its master"),
                replication,
            )
        }
        Some(master) => {
            // Already a replica of this master: its keys are the master's.
            let copies = !info.is_master() && info.master.as_deref() == Some(master.as_str());
            if !body.force && !copies {
                if keys > 0 {
                    return Err(AppError::Conflict(format!(
                        "server {addr} holds {keys} keys: as a replica of {master} it would \
                         discard them (REPLICAOF); empty it, or pass \"force\": true to discard \
                         them"
                    )));
                }
                if info.is_master() && info.connected_replicas > 0 {
                    return Err(AppError::Conflict(format!(
                        "server {addr} is a master with {} replicas: as a replica of {master} \
                         it would make them copy {master}'s data; pass \"force\": true if that \
                         is meant",
                        info.connected_replicas
                    )));
                }
            }
            s.servers.make_replica(&addr, &master).await?;
            if keys > 0 && !copies {
                warnings.push(format!(
                    "the {keys} keys {addr} held were discarded: it now holds a copy of {master}"
                ));
            }
            let replication = s
                .servers
                .wait_link_up(&addr, Duration::from_secs(3))
                .await?;
            if replication.master_link_status.as_deref() != Some("up") {
                warnings.push(format!(
                    "{addr} has not finished its first sync with {master} yet (link {}): a \
                     full sync can take a few seconds (repl-diskless-sync-delay); `shardis \
                     status` shows when the link is up",
                    replication
                        .master_link_status
                        .as_deref()
                        .unwrap_or("unknown")
                ));
            }
            (
                format!("{addr} added to group {id} as a replica of {master}"),
                replication,
            )
        }
    };
    let (t, ()) = s
        .change_topology(None, |t| changes::add_server(t, id, &addr))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ChangeResponse {
            version: t.version,
            message,
            warnings,
            replication: Some(replication),
        }),
    ))
}

/// Refuses `addr` when it is a Redis server of the topology under another
/// name (the same `run_id`). Servers that do not answer are not compared.
async fn refuse_known_under_another_name(
    s: &Shared,
    t: &shardis_topology::Topology,
    addr: &str,
) -> Result<(), AppError> {
    let run_id = s.servers.run_id(addr).await?;
    let known: Vec<(GroupId, &String)> = t
        .groups
        .values()
        .flat_map(|g| g.servers.iter().map(move |a| (g.id, a)))
        .collect();
    let ids = futures::future::join_all(known.iter().map(|(_, a)| s.servers.run_id(a))).await;
    for ((group, known), id) in known.iter().zip(ids) {
        if id.is_ok_and(|id| id == run_id) {
            return Err(AppError::Conflict(format!(
                "server {addr} is the Redis server listed as {known} in group {group} (the same \
                 run_id): one server cannot be listed twice"
            )));
        }
    }
    Ok(())
}

/// Removes a server. A replica is detached (`REPLICAOF NO ONE`, its data
/// kept); a master only goes when it is the group's last server and the
/// group serves no slots.
async fn remove_server(
    State(s): State<Shared>,
    headers: HeaderMap,
    ApiPath((id, addr)): ApiPath<(GroupId, String)>,
) -> Result<Json<ChangeResponse>, AppError> {
    let based_on = based_on(&headers)?;
    let _claim = s.claim_group(id, &format!("removing server {addr}"))?;
    let (t, was_master) = s
        .change_topology(based_on, |t| {
            let was_master = changes::is_master(t, id, &addr);
            changes::remove_server(t, id, &addr)?;
            Ok(was_master == Some(true))
        })
        .await?;
    let mut response = changed(t.version, format!("{addr} removed from group {id}"));
    if !was_master {
        match s.servers.make_master(&addr).await {
            Ok(()) => response.message.push_str(" and detached from its master"),
            Err(e) => response.warnings.push(format!(
                "{addr} could not be detached from its master (REPLICAOF NO ONE): {e}"
            )),
        }
    }
    Ok(Json(response))
}

/// Planned switchover (or failover when the master is unreachable).
async fn promote_replica(
    State(s): State<Shared>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<GroupId>,
    ApiJson(body): ApiJson<crate::api::Promote>,
) -> Result<Json<PromoteResponse>, AppError> {
    let based_on = based_on(&headers)?;
    Ok(Json(
        promote::promote(&s, id, body.addr.trim(), based_on).await?,
    ))
}

async fn assign_slots(
    State(s): State<Shared>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<AssignSlots>,
) -> Result<Json<ChangeResponse>, AppError> {
    let based_on = based_on(&headers)?;
    let slots = parse_ranges(&body.slots)
        .map_err(|e| AppError::BadRequest(format!("bad slot ranges: {e}")))?;
    let (t, ()) = s
        .change_topology(based_on, |t| changes::assign_slots(t, &slots, body.group))
        .await?;
    Ok(Json(changed(
        t.version,
        format!(
            "assigned {} slots ({}) to group {}",
            slots.len(),
            shardis_topology::format_ranges(slots.iter().copied()),
            body.group
        ),
    )))
}

// ---------------------------------------------------------------------------
// Migrations
// ---------------------------------------------------------------------------

async fn list_migrations(State(s): State<Shared>) -> Result<Json<Vec<MigrationView>>, AppError> {
    Ok(Json(migrate::list(&s).await?))
}

async fn create_migration(
    State(s): State<Shared>,
    ApiJson(body): ApiJson<CreateMigration>,
) -> Result<(StatusCode, Json<MigrationView>), AppError> {
    Ok((StatusCode::CREATED, Json(migrate::create(&s, body).await?)))
}

async fn get_migration(
    State(s): State<Shared>,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<MigrationView>, AppError> {
    Ok(Json(migrate::get(&s, id).await?))
}

async fn pause_migration(
    State(s): State<Shared>,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<MigrationView>, AppError> {
    Ok(Json(migrate::pause(&s, id).await?))
}

async fn resume_migration(
    State(s): State<Shared>,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<MigrationView>, AppError> {
    Ok(Json(migrate::resume(&s, id).await?))
}

async fn stop_migration(
    State(s): State<Shared>,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<MigrationView>, AppError> {
    Ok(Json(migrate::stop(&s, id).await?))
}

async fn rate_migration(
    State(s): State<Shared>,
    ApiPath(id): ApiPath<u64>,
    ApiJson(body): ApiJson<SetRate>,
) -> Result<Json<MigrationView>, AppError> {
    Ok(Json(migrate::set_rate(&s, id, body).await?))
}

#[derive(Debug, Deserialize)]
struct RebalanceQuery {
    #[serde(default)]
    dry_run: Option<String>,
    /// `1,2`: spread over these groups only (default: every group with a master).
    #[serde(default)]
    groups: Option<String>,
}

async fn rebalance(
    State(s): State<Shared>,
    ApiQuery(q): ApiQuery<RebalanceQuery>,
    body: axum::body::Bytes,
) -> Result<Json<RebalanceResponse>, AppError> {
    // `{"dry_run": true}` in a body must not start a real rebalance.
    if !body.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::BadRequest(
            "rebalance takes its options in the query string (?dry_run=true&groups=1,2), not in \
             a body"
                .into(),
        ));
    }
    let dry_run = match q.dry_run.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(other) => {
            return Err(AppError::BadRequest(format!(
                "dry_run must be true or false, not {other:?}"
            )))
        }
    };
    let among = match q.groups.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            text.split(',')
                .map(|g| {
                    g.trim().parse::<GroupId>().map_err(|_| {
                        AppError::BadRequest(format!(
                            "groups must be group ids separated by commas, e.g. 1,2 (got {text:?})"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(Json(migrate::rebalance(&s, dry_run, among).await?))
}
