//! Module telemetry over HTTPS: `POST /devices/{id}/modules/{mid}/messages/events` (the C#
//! module client's route; iothub-beyond-c2d.md 4), a single message or a batch exactly as on
//! the device route (`d2c.rs`), recorded with `iothub-connection-module-id`. It needs the
//! module's own token or a policy with DeviceConnect covering the module; the device's key
//! never grants it.
//!
//! IoT Hub has no cloud-to-device messages for modules: the module `messages/devicebound`
//! routes answer, after the token check, with `InvalidOperation`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use iothub_protocol::HubError;

use super::AppState;
use super::auth::Token;
use super::error::ApiError;
use super::modules::ModulePath;
use crate::auth::Need;
use crate::hub::{Identity, Origin};

/// `POST /devices/{id}/modules/{mid}/messages/events`, single or batch.
pub async fn send_event(
    State(st): State<AppState>,
    token: Token,
    path: ModulePath,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let grant = token.authorize(&st.ctx, Need::Module(&path.device_id, &path.module_id))?;
    let origin = Origin {
        identity: Identity::module(&path.device_id, &path.module_id),
        auth: grant.auth_method(),
    };
    super::d2c::record(&st, &origin, &headers, body).await
}

/// `GET /devices/{id}/modules/{mid}/messages/devicebound` and the settle routes under it.
pub async fn no_devicebound(
    State(st): State<AppState>,
    token: Token,
    path: ModulePath,
) -> Result<StatusCode, ApiError> {
    token.authorize(&st.ctx, Need::Module(&path.device_id, &path.module_id))?;
    Err(ApiError(HubError::InvalidOperation {
        detail: format!(
            "IoT Hub has no cloud-to-device messages for module '{}/{}'; receive them as the device",
            path.device_id, path.module_id
        ),
    }))
}
