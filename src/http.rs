//! The agent's HTTP endpoints: `/healthz`, `/readyz`, `/metrics`, `/denials`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::agent::Health;
use crate::denials::Denials;
use crate::metrics::Metrics;

/// The default listen address (all interfaces; the DaemonSet runs on the host network).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9808";

#[derive(Clone)]
struct Shared {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    denials: Option<Arc<Denials>>,
}

async fn healthz(State(s): State<Shared>) -> impl IntoResponse {
    if s.health.is_alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the reconcile loop stopped\n",
        )
    }
}

async fn readyz(State(s): State<Shared>) -> impl IntoResponse {
    if s.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no successful sync yet, or the last one failed\n",
        )
    }
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// The last denials, oldest first, as a JSON array (see the README); 404 without `--deny-log`.
async fn denials(State(s): State<Shared>) -> axum::response::Response {
    match &s.denials {
        Some(denials) => Json(denials.recent()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "the deny log is off (see --deny-log)\n",
        )
            .into_response(),
    }
}

/// The router, for serving and for tests; `denials` is what `/denials` serves, with `--deny-log`.
pub fn router(health: Arc<Health>, metrics: Arc<Metrics>, denials: Option<Arc<Denials>>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(self::metrics))
        .route("/denials", get(self::denials))
        .with_state(Shared {
            health,
            metrics,
            denials,
        })
}

/// Binds `addr` and serves until the task is dropped; returns the bound address (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    denials: Option<Arc<Denials>>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(health, metrics, denials);
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok((local, handle))
}
