//! The dashboard's modules route: `GET /dashboard/api/modules?id=<device>` lists the device's
//! module identities (the registry's `GET /devices/{id}/modules`, keys left out) each with its
//! twin in the service view (`GET /twins/{id}/modules/{mid}`), for the device page's modules
//! panel.

use axum::Json;
use axum::extract::State;
use iothub_protocol::HubError;
use serde_json::{Value, json};

use super::guard::Read;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::Query;
use crate::hub::Identity;

/// `GET /dashboard/api/modules?id=<device>`: `{"modules": [...]}`, each the module's registry
/// JSON without `authentication`, plus `twin`.
pub async fn modules(
    State(st): State<AppState>,
    _: Read,
    query: Query,
) -> Result<Json<Value>, ApiError> {
    let id = query
        .get("id")
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| HubError::argument("the device id is missing"))?;
    let listed = st.ctx.hub.read(|h| {
        h.list_modules(&id).map(|modules| {
            modules
                .into_iter()
                .map(|m| {
                    let twin = h
                        .get_twin(&Identity::module(&m.device_id, &m.module_id))
                        .ok();
                    // The registry's own JSON names; the keys stay out of the page.
                    let mut v = serde_json::to_value(&m).unwrap_or_else(|_| json!({}));
                    if let Some(o) = v.as_object_mut() {
                        o.remove("authentication");
                        o.insert("twin".to_owned(), json!(twin));
                    }
                    v
                })
                .collect::<Vec<_>>()
        })
    })?;
    Ok(Json(json!({ "modules": listed })))
}
