//! A blocking, typed client of the dashboard's API (used by the `shardis`
//! CLI and by tests). Every call returns the API's own types, or a
//! [`ClientError`] that carries the API's error body when there is one.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use shardis_topology::GroupId;

use crate::api::{
    AddServer, AssignSlots, BarrierResponse, ChangeResponse, CreateGroup, CreateMigration,
    ErrorBody, GroupsResponse, MigrationView, Overview, Promote, PromoteResponse, ProxiesResponse,
    RebalanceResponse, SetRate, SlotsResponse,
};

/// Reads answer quickly; changes may wait for barriers (two of them for a
/// promotion, plus the replica's catch-up).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const CHANGE_TIMEOUT: Duration = Duration::from_secs(300);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The dashboard answered with an error status.
    #[error("{} (HTTP {status})", body.error)]
    Api { status: u16, body: ErrorBody },
    /// No answer: connection refused, timeout, ...
    #[error("cannot reach the dashboard at {url}: {reason}")]
    Transport { url: String, reason: String },
    /// An answer this client cannot read (another version?).
    #[error("unexpected answer from {url}: {reason}")]
    Decode { url: String, reason: String },
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    if_match: Option<u64>,
    agent: ureq::Agent,
}

/// Percent-encodes one path segment (a server address may hold `[`, `]`).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// `base`: `http://127.0.0.1:18080` (a trailing `/` is fine; no scheme
    /// means `http://`). `token`: the admin token for changes.
    pub fn new(base: &str, token: Option<String>) -> Client {
        let base = base.trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_string()
        } else {
            format!("http://{base}")
        };
        Client {
            base,
            token: token.filter(|t| !t.is_empty()),
            if_match: None,
            agent: ureq::AgentBuilder::new()
                .timeout_connect(CONNECT_TIMEOUT)
                .build(),
        }
    }

    /// Makes every change conditional on the topology still being at
    /// `version` (`If-Match`): a stale change is refused with 409.
    pub fn if_version(mut self, version: Option<u64>) -> Client {
        self.if_match = version;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    // ---- calls ----------------------------------------------------------------

    pub fn overview(&self) -> Result<Overview, ClientError> {
        self.get("/api/v1/overview")
    }

    pub fn groups(&self) -> Result<GroupsResponse, ClientError> {
        self.get("/api/v1/groups")
    }

    pub fn create_group(&self, id: GroupId) -> Result<ChangeResponse, ClientError> {
        self.send("POST", "/api/v1/groups", Some(&CreateGroup { id }))
    }

    pub fn delete_group(&self, id: GroupId) -> Result<ChangeResponse, ClientError> {
        self.send::<(), _>("DELETE", &format!("/api/v1/groups/{id}"), None)
    }

    pub fn add_server(
        &self,
        group: GroupId,
        addr: &str,
        force: bool,
    ) -> Result<ChangeResponse, ClientError> {
        let body = AddServer {
            addr: addr.to_string(),
            force,
        };
        self.send(
            "POST",
            &format!("/api/v1/groups/{group}/servers"),
            Some(&body),
        )
    }

    pub fn remove_server(&self, group: GroupId, addr: &str) -> Result<ChangeResponse, ClientError> {
        self.send::<(), _>(
            "DELETE",
            &format!("/api/v1/groups/{group}/servers/{}", segment(addr)),
            None,
        )
    }

    pub fn promote(&self, group: GroupId, addr: &str) -> Result<PromoteResponse, ClientError> {
        let body = Promote {
            addr: addr.to_string(),
        };
        self.send(
            "POST",
            &format!("/api/v1/groups/{group}/promote"),
            Some(&body),
        )
    }

    pub fn slots(&self) -> Result<SlotsResponse, ClientError> {
        self.get("/api/v1/slots")
    }

    pub fn assign_slots(&self, slots: &str, group: GroupId) -> Result<ChangeResponse, ClientError> {
        let body = AssignSlots {
            slots: slots.to_string(),
            group,
        };
        self.send("POST", "/api/v1/slots/assign", Some(&body))
    }

    pub fn proxies(&self) -> Result<ProxiesResponse, ClientError> {
        self.get("/api/v1/proxies")
    }

    /// Waits until every live proxy applied `version` (default: the current one).
    pub fn barrier(
        &self,
        version: Option<u64>,
        timeout: Option<Duration>,
    ) -> Result<BarrierResponse, ClientError> {
        let mut query = Vec::new();
        if let Some(v) = version {
            query.push(format!("version={v}"));
        }
        if let Some(t) = timeout {
            query.push(format!("timeout_ms={}", t.as_millis()));
        }
        let path = if query.is_empty() {
            "/api/v1/barrier".to_string()
        } else {
            format!("/api/v1/barrier?{}", query.join("&"))
        };
        let wait = timeout.unwrap_or(CHANGE_TIMEOUT) + READ_TIMEOUT;
        self.call::<(), _>("GET", &path, None, wait)
    }

    pub fn migrations(&self) -> Result<Vec<MigrationView>, ClientError> {
        self.get("/api/v1/migrations")
    }

    pub fn migration(&self, id: u64) -> Result<MigrationView, ClientError> {
        self.get(&format!("/api/v1/migrations/{id}"))
    }

    pub fn create_migration(&self, req: &CreateMigration) -> Result<MigrationView, ClientError> {
        self.send("POST", "/api/v1/migrations", Some(req))
    }

    /// `action`: `pause`, `resume` or `stop`.
    pub fn steer_migration(&self, id: u64, action: &str) -> Result<MigrationView, ClientError> {
        self.send::<(), _>("POST", &format!("/api/v1/migrations/{id}/{action}"), None)
    }

    pub fn set_migration_rate(
        &self,
        id: u64,
        rate: &SetRate,
    ) -> Result<MigrationView, ClientError> {
        self.send("POST", &format!("/api/v1/migrations/{id}/rate"), Some(rate))
    }

    pub fn rebalance(
        &self,
        dry_run: bool,
        groups: Option<&[GroupId]>,
    ) -> Result<RebalanceResponse, ClientError> {
        let mut path = format!("/api/v1/rebalance?dry_run={dry_run}");
        if let Some(groups) = groups {
            let list: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
            path.push_str(&format!("&groups={}", list.join(",")));
        }
        self.send::<(), _>("POST", &path, None)
    }

    /// Any GET, as raw JSON (for `--json` output of calls without a type here).
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        self.get(path)
    }

    // ---- plumbing ---------------------------------------------------------------

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>("GET", path, None, READ_TIMEOUT)
    }

    fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        self.call(method, path, body, CHANGE_TIMEOUT)
    }

    fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .agent
            .request(method, &url)
            .timeout(timeout)
            .set("Accept", "application/json");
        if method != "GET" {
            if let Some(token) = &self.token {
                request = request.set("Authorization", &format!("Bearer {token}"));
            }
            if let Some(v) = self.if_match {
                request = request.set("If-Match", &v.to_string());
            }
        }
        let answer = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        let decode = |reason: String| ClientError::Decode {
            url: url.clone(),
            reason,
        };
        match answer {
            Ok(response) => {
                let text = response.into_string().map_err(|e| decode(e.to_string()))?;
                serde_json::from_str(&text).map_err(|e| decode(format!("{e}: {text}")))
            }
            Err(ureq::Error::Status(status, response)) => {
                let text = response.into_string().unwrap_or_default();
                let body = serde_json::from_str::<ErrorBody>(&text).unwrap_or(ErrorBody {
                    error: if text.trim().is_empty() {
                        format!("HTTP {status} without a body")
                    } else {
                        text.trim().to_string()
                    },
                    leader: None,
                    lagging: Vec::new(),
                });
                Err(ClientError::Api { status, body })
            }
            Err(ureq::Error::Transport(t)) => Err(ClientError::Transport {
                url,
                reason: t.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_segments() {
        assert_eq!(
            Client::new("127.0.0.1:18080/", None).base(),
            "http://127.0.0.1:18080"
        );
        assert_eq!(Client::new("http://h:1", None).base(), "http://h:1");
        assert_eq!(segment("127.0.0.1:7001"), "127.0.0.1:7001");
        assert_eq!(segment("[::1]:7001"), "%5B::1%5D:7001");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn an_unreachable_dashboard_is_a_transport_error() {
        let err = Client::new("http://127.0.0.1:1", None)
            .overview()
            .unwrap_err();
        assert!(matches!(err, ClientError::Transport { .. }), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}
