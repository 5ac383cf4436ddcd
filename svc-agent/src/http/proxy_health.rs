//! The agent's own health endpoints (kube-proxy's ProxyHealthServer) and the `/metrics`
//! route, as kube-proxy serves them:
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
//! - `/loadbalancers` (same port as `/metrics`): see [`super::lb`].
//!
//! When both addresses are equal one listener serves all three paths.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tracing::info;

use crate::metrics::Metrics;

/// What `/healthz` and `/livez` answer from; updated by the agent loop. kube-proxy's
/// ProxyHealthServer: the health of the agent itself, not of a Service (that is
/// [`super::ServiceHealthServers`]).
#[derive(Debug)]
pub struct ProxyHealth {
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

impl ProxyHealth {
    /// `timeout`: how long a change may wait for the maps before the agent is unhealthy.
    pub fn new(timeout: Duration) -> ProxyHealth {
        ProxyHealth {
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
    health: Arc<ProxyHealth>,
    metrics: Arc<Metrics>,
    lb: Arc<super::LbStatus>,
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
    let answer = s.health.answer(true);
    s.metrics.record_health_answer(true, answer.0.as_u16());
    json(answer)
}

async fn livez(State(s): State<AppState>) -> impl IntoResponse {
    let answer = s.health.answer(false);
    s.metrics.record_health_answer(false, answer.0.as_u16());
    json(answer)
}

async fn loadbalancers(State(s): State<AppState>) -> impl IntoResponse {
    let report = s.lb.snapshot().await;
    json((
        StatusCode::OK,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    ))
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

/// Where to serve the status endpoints (`/healthz` and `/livez`, `/metrics`); `None` turns
/// a server off.
#[derive(Debug, Clone, Copy)]
pub struct StatusAddrs {
    pub healthz: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

/// Binds the listeners now (so a port in use fails the start with a clear error) and
/// serves them on the current tokio runtime until it stops. Returns the bound addresses.
///
/// No connection limits here, unlike the healthCheckNodePorts: Prometheus keeps its
/// connection open between scrapes, and a cap on open connections would let idle clients
/// starve `/healthz`.
pub async fn serve(
    addrs: StatusAddrs,
    health: Arc<ProxyHealth>,
    metrics: Arc<Metrics>,
    lb: Arc<super::LbStatus>,
) -> std::io::Result<Vec<SocketAddr>> {
    let state = AppState {
        health,
        metrics,
        lb,
    };
    let metrics_routes = || {
        Router::new()
            .route("/metrics", get(metrics_page))
            .route("/loadbalancers", get(loadbalancers))
    };
    let health_routes = || {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/livez", get(livez))
    };
    let mut servers: Vec<(SocketAddr, Router<AppState>)> = Vec::new();
    match (addrs.healthz, addrs.metrics) {
        (Some(h), Some(m)) if h == m => servers.push((h, health_routes().merge(metrics_routes()))),
        (h, m) => {
            if let Some(h) = h {
                servers.push((h, health_routes()));
            }
            if let Some(m) = m {
                servers.push((m, metrics_routes()));
            }
        }
    }
    let mut bound = Vec::new();
    for (addr, router) in servers {
        let listener = super::bind(addr)?;
        let local = listener.local_addr()?;
        bound.push(local);
        super::spawn(
            listener,
            router.with_state(state.clone()),
            // The agent's lifetime: the runtime stopping ends them.
            std::future::pending(),
            "status server",
        );
        info!(addr = %local, "serving status endpoints");
    }
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        net::{Ipv4Addr, TcpStream},
    };

    use super::*;

    /// `GET path` on `addr` (HTTP/1.1, Connection: close): (status code, lowercased
    /// header lines, body).
    fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<String>, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").expect("headers end");
        let mut lines = head.split("\r\n");
        let code = lines.next().unwrap()[9..12].parse().unwrap();
        (
            code,
            lines.map(str::to_ascii_lowercase).collect(),
            body.to_string(),
        )
    }

    #[test]
    fn status_endpoints_answer_over_http() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let health = Arc::new(ProxyHealth::new(Duration::from_secs(60)));
        let metrics = Arc::new(Metrics::new("/nonexistent".into()));
        let addrs = StatusAddrs {
            healthz: Some(any),
            metrics: Some(any),
        };
        let bound = rt
            .block_on(serve(addrs, health.clone(), metrics, Default::default()))
            .unwrap();
        assert_eq!(bound.len(), 1, "equal addresses share one listener");
        let addr = bound[0];

        let (code, headers, body) = http_get(addr, "/healthz");
        assert_eq!(code, 503, "no sync yet: {body}");
        assert!(
            headers.contains(&"content-type: application/json".into()),
            "{headers:?}"
        );
        assert!(
            headers.contains(&"x-content-type-options: nosniff".into()),
            "{headers:?}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["nodeEligible"], true, "{body}");
        assert_eq!(http_get(addr, "/livez").0, 200);
        health.synced();
        assert_eq!(http_get(addr, "/healthz").0, 200);

        let (code, _, body) = http_get(addr, "/metrics");
        assert_eq!(code, 200);
        assert!(body.contains("svc_agent_syncs_total"), "{body}");
        assert_eq!(http_get(addr, "/other").0, 404);
    }

    #[test]
    fn unhealthy_until_synced_then_healthy_then_node_draining() {
        let h = ProxyHealth::new(Duration::from_secs(60));
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
        let h = ProxyHealth::new(Duration::from_millis(50));
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
