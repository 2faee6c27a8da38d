//! Acknowledged means durable, for every HTTPS request that can change the hub: the response
//! leaves only after the changes it made are on disk (`crate::persist`). One layer covers the
//! registry, twins, modules, C2D send and settle, feedback and telemetry alike; reads pass
//! straight through, and an in-memory hub is never waited for.

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use iothub_protocol::HubError;

use super::AppState;
use super::error::hub_error_response;

/// Runs the request, then waits for the hub's state to be on disk before answering. A failed
/// write turns the answer into a `ServerError`: the change may be lost, so it is not confirmed.
pub async fn synced(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let resp = next.run(req).await;
    if !writes {
        return resp;
    }
    match st.ctx.hub.synced().await {
        Ok(()) => resp,
        Err(e) => hub_error_response(&HubError::ServerError {
            detail: e.to_string(),
        }),
    }
}
