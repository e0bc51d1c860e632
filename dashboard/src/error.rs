//! One error type for the whole API, and the one place where it becomes an
//! HTTP answer: a fitting status and `{"error": "..."}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use shardis_topology::StoreError;

use crate::api::{ErrorBody, LaggingProxy, LeaderInfo};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// The request itself is wrong (bad JSON, bad address, bad slot ranges): 400.
    #[error("{0}")]
    BadRequest(String),
    /// A mutating call without the admin token, or with a wrong one: 401.
    #[error("{0}")]
    Unauthorized(String),
    /// A change sent by a web page of another site: 403.
    #[error("{0}")]
    Forbidden(String),
    /// An unknown group, server or route: 404.
    #[error("{0}")]
    NotFound(String),
    /// Not allowed in the current state (a group that still owns slots, a
    /// stale topology version, a promotion already running): 409.
    #[error("{0}")]
    Conflict(String),
    /// This dashboard is a standby (or just lost its leadership): 503, naming
    /// the leader when one is known.
    #[error("{message}")]
    Standby {
        message: String,
        leader: Option<LeaderInfo>,
    },
    /// etcd cannot be reached: 503.
    #[error("{0}")]
    StoreUnavailable(String),
    /// A Redis server could not be reached or refused a command: 502.
    #[error("{0}")]
    Server(String),
    /// Proxies did not confirm a topology version in time: 504, listing them.
    #[error("{message}")]
    Lagging {
        message: String,
        lagging: Vec<LaggingProxy>,
    },
    /// Something else took too long (a replica that does not catch up): 504.
    #[error("{0}")]
    Timeout(String),
    /// A bug or corrupt data: 500.
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Standby { .. } | AppError::StoreUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::Server(_) => StatusCode::BAD_GATEWAY,
            AppError::Lagging { .. } | AppError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The same error with `context` in front of its text (keeping its kind).
    pub fn context(self, context: impl std::fmt::Display) -> AppError {
        let with = |text: String| format!("{context}: {text}");
        match self {
            AppError::BadRequest(t) => AppError::BadRequest(with(t)),
            AppError::Unauthorized(t) => AppError::Unauthorized(with(t)),
            AppError::Forbidden(t) => AppError::Forbidden(with(t)),
            AppError::NotFound(t) => AppError::NotFound(with(t)),
            AppError::Conflict(t) => AppError::Conflict(with(t)),
            AppError::Standby { message, leader } => AppError::Standby {
                message: with(message),
                leader,
            },
            AppError::StoreUnavailable(t) => AppError::StoreUnavailable(with(t)),
            AppError::Server(t) => AppError::Server(with(t)),
            AppError::Lagging { message, lagging } => AppError::Lagging {
                message: with(message),
                lagging,
            },
            AppError::Timeout(t) => AppError::Timeout(with(t)),
            AppError::Internal(t) => AppError::Internal(with(t)),
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (leader, lagging) = match self {
            AppError::Standby { leader, .. } => (leader.clone(), Vec::new()),
            AppError::Lagging { lagging, .. } => (None, lagging.clone()),
            _ => (None, Vec::new()),
        };
        ErrorBody {
            error: self.to_string(),
            leader,
            lagging,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if self.status().is_server_error() {
            tracing::warn!(status = %self.status(), "{self}");
        }
        (self.status(), Json(self.body())).into_response()
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> AppError {
        match e {
            StoreError::Conflict { expected, found } => AppError::Conflict(format!(
                "topology changed concurrently (stale version): the change was based on \
                 version {expected}, the topology is at version {found}; nothing was changed"
            )),
            StoreError::NotLeader(why) => AppError::Standby {
                message: format!(
                    "this dashboard is no longer the leader ({why}); nothing was changed"
                ),
                leader: None,
            },
            StoreError::LeaseExpired(lease) => AppError::Standby {
                message: format!(
                    "this dashboard's etcd lease {lease:x} has expired: it is no longer the leader"
                ),
                leader: None,
            },
            StoreError::Unavailable(why) => AppError::StoreUnavailable(why),
            StoreError::Invalid(why) => AppError::BadRequest(why),
            e @ StoreError::Corrupt { .. } => AppError::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_fitting_statuses() {
        let conflict = AppError::from(StoreError::Conflict {
            expected: 3,
            found: 4,
        });
        assert_eq!(conflict.status(), StatusCode::CONFLICT);
        assert!(conflict.to_string().contains("stale version"), "{conflict}");
        assert_eq!(
            AppError::from(StoreError::Unavailable("down".into())).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            AppError::from(StoreError::NotLeader("gone".into())).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn context_keeps_the_kind() {
        let e = AppError::NotFound("no group 3".into()).context("deleting group 3");
        assert_eq!(e, AppError::NotFound("deleting group 3: no group 3".into()));
        let body = AppError::Lagging {
            message: "late".into(),
            lagging: vec![LaggingProxy {
                id: "p1".into(),
                addr: "a".into(),
                applied_version: 1,
            }],
        }
        .body();
        assert_eq!(body.lagging.len(), 1);
        let json = serde_json::to_value(AppError::Conflict("x".into()).body()).unwrap();
        assert_eq!(json, serde_json::json!({"error": "x"}));
    }
}
