//! The agent's own HTTP endpoints, as kube-proxy serves them:
//!
//! - `/healthz` (default `0.0.0.0:10256`, `--healthz-bind-address`): `200` once the agent has
//!   programmed the maps from a complete view of the cluster and no change has been waiting
//!   longer than the health timeout; `503` before the first sync, while map writes keep
//!   failing, or while this node is being deleted (deletionTimestamp, or the cluster
//!   autoscaler's `ToBeDeletedByClusterAutoscaler` taint), so that load balancers that probe
//!   it stop sending new connections. Body: `{"lastUpdated":"…","currentTime":"…","nodeEligible":true}`
//!   (RFC 3339 times; kube-proxy prints Go's time format).
//! - `/livez` (same port): `503` only when changes have been failing to reach the maps for
//!   longer than the health timeout after a first successful sync. It ignores the node (a
//!   node being drained must not get its proxy restarted) and a missing first sync (an agent
//!   waiting for an unreachable API server is not helped by a restart; the pinned datapath
//!   keeps serving meanwhile).
//! - `/metrics` (default `127.0.0.1:10249`, `--metrics-bind-address`): see [`crate::metrics`].
//!
//! When both addresses are equal one listener serves all three paths.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tracing::{info, warn};

use crate::metrics::Metrics;

/// What `/healthz` and `/livez` answer from; updated by the agent loop.
#[derive(Debug)]
pub struct Health {
    timeout: Duration,
    state: Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    /// Wall-clock time of the last complete sync.
    last_synced: Option<SystemTime>,
    /// Since when a change has been waiting to reach the maps (a failed write, or the
    /// first view of the cluster not complete yet). None: nothing waits.
    pending_since: Option<Instant>,
    node_ineligible: bool,
}

impl Health {
    /// `timeout`: how long a change may wait for the maps before the agent is unhealthy.
    pub fn new(timeout: Duration) -> Health {
        Health {
            timeout,
            state: Mutex::new(HealthState {
                pending_since: Some(Instant::now()),
                ..Default::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        // A panic elsewhere while holding the lock leaves plain data: keep serving it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A sync wrote everything.
    pub fn synced(&self) {
        let mut s = self.lock();
        s.last_synced = Some(SystemTime::now());
        s.pending_since = None;
    }

    /// A sync left something unwritten (it is retried): the clock keeps running from the
    /// first failure.
    pub fn sync_failed(&self) {
        let mut s = self.lock();
        s.pending_since.get_or_insert_with(Instant::now);
    }

    pub fn set_node_eligible(&self, eligible: bool) {
        self.lock().node_ineligible = !eligible;
    }

    /// (status, body) for `/healthz` (`readiness`: also needs a first sync and an eligible
    /// node) or `/livez`.
    pub fn answer(&self, readiness: bool) -> (StatusCode, String) {
        let s = self.lock();
        let stuck = s.pending_since.is_some_and(|t| t.elapsed() >= self.timeout);
        let eligible = !s.node_ineligible;
        let healthy = if readiness {
            s.last_synced.is_some() && !stuck && eligible
        } else {
            s.last_synced.is_none() || !stuck
        };
        let time = |t: SystemTime| {
            jiff::Timestamp::try_from(t)
                .map(|t| t.to_string())
                .unwrap_or_default()
        };
        let body = serde_json::json!({
            "lastUpdated": s.last_synced.map(time).unwrap_or_default(),
            "currentTime": time(SystemTime::now()),
            "nodeEligible": eligible,
        })
        .to_string();
        let code = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (code, body)
    }
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

fn json(answer: (StatusCode, String)) -> impl IntoResponse {
    (
        answer.0,
        [
            ("content-type", "application/json"),
            ("x-content-type-options", "nosniff"),
        ],
        answer.1,
    )
}

async fn healthz(State(s): State<AppState>) -> impl IntoResponse {
    json(s.health.answer(true))
}

async fn livez(State(s): State<AppState>) -> impl IntoResponse {
    json(s.health.answer(false))
}

async fn metrics_page(State(s): State<AppState>) -> impl IntoResponse {
    // Reading the maps walks them: keep it off the runtime's worker.
    let body = tokio::task::spawn_blocking(move || s.metrics.encode())
        .await
        .unwrap_or_default();
    (
        StatusCode::OK,
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// Where to serve what; `None` turns a server off.
#[derive(Debug, Clone, Copy)]
pub struct StatusAddrs {
    pub healthz: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

/// Binds the listeners now (so a port in use fails the start with a clear error) and
/// serves them on the current tokio runtime until it stops.
pub async fn serve(
    addrs: StatusAddrs,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> std::io::Result<Vec<SocketAddr>> {
    let state = AppState { health, metrics };
    let health_routes = || {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/livez", get(livez))
    };
    let mut servers: Vec<(SocketAddr, Router<AppState>)> = Vec::new();
    match (addrs.healthz, addrs.metrics) {
        (Some(h), Some(m)) if h == m => {
            servers.push((h, health_routes().route("/metrics", get(metrics_page))))
        }
        (h, m) => {
            if let Some(h) = h {
                servers.push((h, health_routes()));
            }
            if let Some(m) = m {
                servers.push((m, Router::new().route("/metrics", get(metrics_page))));
            }
        }
    }
    let mut bound = Vec::new();
    for (addr, router) in servers {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("binding {addr}: {e}")))?;
        let local = listener.local_addr()?;
        bound.push(local);
        let app = router.with_state(state.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                warn!(addr = %local, error = %e, "status server stopped");
            }
        });
        info!(addr = %local, "serving status endpoints");
    }
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_until_synced_then_healthy_then_node_draining() {
        let h = Health::new(Duration::from_secs(60));
        assert_eq!(h.answer(true).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            h.answer(false).0,
            StatusCode::OK,
            "alive while waiting for a first view"
        );
        h.synced();
        let (code, body) = h.answer(true);
        assert_eq!(code, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["nodeEligible"], true);
        assert!(
            v["lastUpdated"].as_str().unwrap().starts_with("20"),
            "{body}"
        );
        h.set_node_eligible(false);
        assert_eq!(h.answer(true).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(h.answer(false).0, StatusCode::OK, "livez ignores the node");
    }

    #[test]
    fn failing_writes_turn_unhealthy_after_the_timeout() {
        let h = Health::new(Duration::from_millis(50));
        h.synced();
        h.sync_failed();
        assert_eq!(h.answer(true).0, StatusCode::OK, "within the timeout");
        std::thread::sleep(Duration::from_millis(80));
        h.sync_failed();
        assert_eq!(h.answer(true).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(h.answer(false).0, StatusCode::SERVICE_UNAVAILABLE, "stuck");
        h.synced();
        assert_eq!(h.answer(true).0, StatusCode::OK);
    }
}
