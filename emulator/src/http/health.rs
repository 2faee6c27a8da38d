//! Liveness, readiness and the CA download; no authentication.
//!
//! Reference: anchors.md 3.9 items 4 and 6. `GET /health` answers 200 `{"status":"ok"}` while the
//! process serves at all. `GET /ready` answers 200 `{"status":"ready",...}` once every listener
//! is serving and 503 `{"status":"starting"}` before that (and during shutdown). Both are on the
//! HTTPS and the plain port. `GET /_emulator/ca.pem` (plain port) returns the CA certificate
//! clients must trust, so a container can be trusted with one `curl`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

/// The emulator's version, also sent as `x-emulator-version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `GET /health`.
pub async fn health() -> Response {
    Json(json!({ "status": "ok", "version": VERSION })).into_response()
}

/// `GET /ready`.
pub async fn ready(State(st): State<AppState>) -> Response {
    let info = &st.ctx.info;
    if info.is_ready() {
        let e = info.endpoints;
        let body = json!({
            "status": "ready",
            "version": VERSION,
            "hostName": st.ctx.host_name,
            "endpoints": {
                "https": e.https,
                "mqtt": e.mqtt,
                "amqp": e.amqp,
                "http": e.http,
                "mqttTcp": e.mqtt_tcp,
            },
        });
        (StatusCode::OK, Json(body)).into_response()
    } else {
        let body = json!({ "status": "starting", "version": VERSION });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// `GET /_emulator/ca.pem`.
pub async fn ca_pem(State(st): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        st.ctx.info.ca_pem.clone(),
    )
        .into_response()
}
