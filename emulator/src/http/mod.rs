//! The HTTPS surface (registry, device and service REST, control API, WebSocket upgrades) and
//! the plain-HTTP port (health, CA download).
//!
//! # Routes
//!
//! Paths match without ASCII case in their fixed segments (`deviceBound` = `devicebound`), with
//! or without a trailing `/`; device ids and lock tokens keep their case. Any `api-version` is
//! accepted (an unknown one is logged once). Hub routes take a SAS token in `Authorization`.
//!
//! HTTPS port (443 by default):
//!
//! | Method and path | Needs | Answer |
//! |---|---|---|
//! | `PUT /devices/{id}` | RegistryWrite | 200 device JSON + `ETag`; no `If-Match` creates (409 if it exists), `If-Match: *` or an etag updates (404, 412) |
//! | `GET /devices/{id}` | RegistryRead | 200 device JSON + `ETag`, 404 |
//! | `DELETE /devices/{id}` | RegistryWrite | 204; optional `If-Match` (412) |
//! | `GET /devices?top=N` | RegistryRead | 200 array of devices (`top` 1–1000, default 1000) |
//! | `GET /statistics/devices` | RegistryRead | 200 `{totalDeviceCount, enabledDeviceCount, disabledDeviceCount}` |
//! | `DELETE /devices/{id}/commands` | ServiceConnect | 200 `{totalMessagesPurged, deviceId}` (purge) |
//! | `GET /messages/serviceBound/feedback` | ServiceConnect | 200 JSON array of records + `ETag: "<lock>"`, or 204 |
//! | `DELETE /messages/serviceBound/feedback/{lock}` | ServiceConnect | 204 (complete), 412 |
//! | `POST /messages/serviceBound/feedback/{lock}/abandon` | ServiceConnect | 204, 412 |
//! | `GET /devices/{id}/messages/deviceBound` | device token or DeviceConnect | 200 body + `ETag: "<lock>"` + `iothub-*` headers, or 204 |
//! | `DELETE /devices/{id}/messages/deviceBound/{lock}` | device | 204 (complete); with `?reject`: reject; 412 on a lost lock |
//! | `POST /devices/{id}/messages/deviceBound/{lock}/abandon` | device | 204, 412 |
//! | `POST /devices/{id}/messages/events` | device | 204; single message, or a batch with `Content-Type: application/vnd.microsoft.iothub.json` |
//! | `GET/PATCH/PUT /twins/{id}`, `POST /devices/query`, `POST /devices` (bulk) | see [`twins`] | twins, queries, bulk registry writes |
//! | `POST /twins/{id}/methods` | ServiceConnect | 200 `{status, payload}` as the device answered; 404103 `DeviceNotOnline`, 504101 `GatewayTimeout` (direct methods, [`methods`]) |
//! | `POST /twins/{id}/modules/{mid}/methods` | ServiceConnect | as `/twins/{id}/methods`, for a module (404010 `ModuleNotFound` when it is not registered) |
//! | `PUT/GET/DELETE /devices/{id}/modules/{mid}`, `GET /devices/{id}/modules`, `GET/PATCH/PUT /twins/{id}/modules/{mid}` | see [`modules`] | module identities and module twins |
//! | `POST /devices/{id}/modules/{mid}/messages/events` | module token or DeviceConnect | 204, as the device route, recorded with `iothub-connection-module-id`; the module `messages/deviceBound` routes answer 400 `InvalidOperation` (no C2D for modules) |
//! | `GET /$iothub/websocket` | (in-protocol) | WebSocket: `Sec-WebSocket-Protocol: mqtt` or `AMQPWSB10` (as registered by the server) |
//! | `GET /$servicebus/websocket` | (in-protocol) | WebSocket: `AMQPWSB10` (as registered by the server) |
//! | `GET /health` | — | 200 `{"status":"ok"}` |
//! | `GET /ready` | — | 200 `{"status":"ready",...}` once every listener serves, else 503 |
//! | `POST /_emulator/devices/{id}/messages` | ServiceConnect | 200 `{deviceId, messageId, sequenceNumber, expiresAt}`: send a C2D message (see below) |
//! | `POST /_emulator/reset` | iothubowner | 200 `{devicesRemoved}`: remove every device, message and feedback |
//! | `GET /_emulator/devices` | iothubowner | 200 array: id, status, connection state, C2D pending and locked counts, D2C count |
//! | `GET /_emulator/devices/{id}/c2d` | iothubowner | 200 array: each pending message with state (`enqueued`/`locked`), delivery count, lock token and expiry, expiry, properties, body |
//! | `GET /_emulator/devices/{id}/d2c` | iothubowner | 200 array: recorded telemetry, oldest first |
//! | `POST /_emulator/feedback/flush` | iothubowner | 200 `{feedbackAvailable}`: release feedback waiting for the batch window |
//! | `POST /_emulator/clock/advance?seconds=N` | iothubowner | 200 `{advancedSeconds, now}`; 400 unless started with `--virtual-clock` |
//! | `POST /_emulator/devices/{id}/disconnect` | iothubowner | 200 `{deviceId, connectionsClosed}`: close its MQTT/AMQP connections |
//!
//! Plain-HTTP port (8088 by default): `GET /health`, `GET /ready`, `GET /_emulator/ca.pem`
//! (the CA certificate to trust), and the web dashboard at `/` (see [`dashboard`]).
//!
//! Sending C2D with curl (the hub itself has no HTTPS send; the SDKs use AMQP):
//!
//! ```text
//! curl --cacert ca.pem -X POST "https://localhost/_emulator/devices/dev1/messages" \
//!   -H "Authorization: $SAS" -H "iothub-messageid: m1" -H "iothub-ack: full" \
//!   -H "iothub-expiry: 2030-01-01T00:00:00Z" -H "iothub-app-color: blue" -d 'hello'
//! ```
//!
//! Headers: `iothub-messageid` (a GUID when absent), `iothub-correlationid`, `iothub-userid`,
//! `iothub-ack` (`none|positive|negative|full`), `iothub-expiry` (RFC 3339; default TTL
//! otherwise), `iothub-contenttype`, `iothub-contentencoding`, `iothub-app-<name>` (names arrive
//! lower-case: HTTP header names are case-insensitive).
//!
//! # Errors
//!
//! Every error, including unknown routes (400 `InvalidOperation`), malformed JSON or a wrong
//! content type (400 `ArgumentInvalid`) and oversize bodies (413 `MessageTooLarge`; C2D 64 KB,
//! D2C 256 KB), is the hub's: status, `iothub-errorcode` header and
//! `{"Message":"ErrorCode:<Name>;...","ExceptionMessage":"..."}` ([`error`]). Every response
//! carries `x-emulator-version`.

mod auth;
mod control;
mod d2c;
pub mod dashboard;
mod devicebound;
pub mod error;
mod extract;
mod feedback;
#[doc(hidden)]
pub mod fuzzing;
mod health;
mod layers;
mod message_headers;
mod methods;
mod module_messages;
mod modules;
mod registry;
pub mod server;
mod service;
mod twins;
pub mod websocket;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Uri};
use axum::middleware::from_fn_with_state;
use axum::routing::{any, delete, get, post};
use iothub_protocol::HubError;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceBuilder;
use tower::util::BoxCloneService;

use crate::context::Context;
use error::ApiError;
use layers::ApiVersions;
pub use server::{App, Limits};
pub use websocket::{WebSocketRoutes, WsPath, WsStream};

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    /// The emulator's shared context.
    pub ctx: Context,
    /// Unknown `api-version` values already logged.
    api_versions: Arc<ApiVersions>,
    /// Which protocol serves which WebSocket subprotocol.
    websockets: WebSocketRoutes,
}

impl AppState {
    /// State for the routes of one emulator, refusing every WebSocket upgrade.
    pub fn new(ctx: Context) -> Self {
        AppState {
            ctx,
            api_versions: Arc::new(ApiVersions::default()),
            websockets: WebSocketRoutes::new(),
        }
    }

    /// The same state, handing WebSocket upgrades to the protocols in `routes`.
    pub fn with_websockets(mut self, routes: WebSocketRoutes) -> Self {
        self.websockets = routes;
        self
    }
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError(HubError::InvalidOperation {
        detail: format!(
            "the emulator has no route for {method} {path}; see the route list in the README"
        ),
    })
}

fn hub_routes() -> Router<AppState> {
    Router::new()
        .route("/devices", get(registry::list_devices).post(twins::bulk))
        .route(
            "/devices/{id}",
            get(registry::get_device)
                .put(registry::put_device)
                .delete(registry::delete_device),
        )
        .route("/statistics/devices", get(registry::statistics))
        .route("/devices/{id}/commands", delete(service::purge))
        .route("/messages/servicebound/feedback", get(feedback::receive))
        .route(
            "/messages/servicebound/feedback/{lock}",
            delete(feedback::complete),
        )
        .route(
            "/messages/servicebound/feedback/{lock}/abandon",
            post(feedback::abandon),
        )
        .route(
            "/devices/{id}/messages/devicebound",
            get(devicebound::receive),
        )
        .route(
            "/devices/{id}/messages/devicebound/{lock}",
            delete(devicebound::settle),
        )
        .route(
            "/devices/{id}/messages/devicebound/{lock}/abandon",
            post(devicebound::abandon),
        )
        .route("/devices/{id}/messages/events", post(d2c::send_event))
        .merge(twin_routes())
        .merge(module_routes())
        .route("/twins/{id}/methods", post(methods::invoke))
        .route(
            "/twins/{id}/modules/{mid}/methods",
            post(methods::invoke_module),
        )
        .route("/$iothub/websocket", any(websocket::iothub))
        .route("/$servicebus/websocket", any(websocket::servicebus))
}

/// Twins and queries (`twins.rs`, which lists them).
fn twin_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/twins/{id}",
            get(twins::get_twin)
                .patch(twins::patch_twin)
                .put(twins::put_twin),
        )
        .route("/devices/query", post(twins::query))
}

/// Module identities and module twins (`modules.rs`, which lists them).
fn module_routes() -> Router<AppState> {
    Router::new()
        .route("/devices/{id}/modules", get(modules::list_modules))
        .route(
            "/devices/{id}/modules/{mid}",
            get(modules::get_module)
                .put(modules::put_module)
                .delete(modules::delete_module),
        )
        .route(
            "/twins/{id}/modules/{mid}",
            get(modules::get_module_twin)
                .patch(modules::patch_module_twin)
                .put(modules::put_module_twin),
        )
        .route(
            "/devices/{id}/modules/{mid}/messages/events",
            post(module_messages::send_event),
        )
        .route(
            "/devices/{id}/modules/{mid}/messages/devicebound",
            get(module_messages::no_devicebound),
        )
        .route(
            "/devices/{id}/modules/{mid}/messages/devicebound/{*rest}",
            any(module_messages::no_devicebound),
        )
}

fn control_routes() -> Router<AppState> {
    Router::new()
        .route("/_emulator/devices/{id}/messages", post(service::send))
        .route("/_emulator/reset", post(control::reset))
        .route("/_emulator/devices", get(control::devices))
        .route("/_emulator/devices/{id}/c2d", get(control::peek_c2d))
        .route("/_emulator/devices/{id}/d2c", get(control::d2c))
        .route("/_emulator/feedback/flush", post(control::flush_feedback))
        .route("/_emulator/clock/advance", post(control::advance_clock))
        .route(
            "/_emulator/devices/{id}/disconnect",
            post(control::disconnect),
        )
}

fn health_routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
}

/// Wraps routes with everything every request gets (see [`layers`]).
fn finish(routes: Router<AppState>, state: AppState, limits: Limits) -> App {
    let router = routes
        .fallback(no_route)
        .method_not_allowed_fallback(no_route)
        .with_state(state.clone());
    let service = ServiceBuilder::new()
        .layer(from_fn_with_state(state.clone(), layers::access_log))
        .layer(from_fn_with_state(state, layers::stamp_errors))
        .layer(from_fn_with_state(limits.request, layers::request_timeout))
        .map_request(layers::normalize_request::<Body>)
        .service(router);
    BoxCloneService::new(service)
}

/// The application of the HTTPS port.
pub fn https_app(state: AppState, limits: Limits) -> App {
    let routes = hub_routes().merge(control_routes()).merge(health_routes());
    finish(routes, state, limits)
}

/// The application of the plain-HTTP port, with the dashboard when one is given.
pub fn plain_app(state: AppState, limits: Limits, dash: Option<Arc<dashboard::Dashboard>>) -> App {
    let mut routes = health_routes().route("/_emulator/ca.pem", get(health::ca_pem));
    if let Some(d) = dash {
        routes = routes.merge(dashboard::routes(d));
    }
    finish(routes, state, limits)
}

/// Serves HTTPS until shutdown; WebSocket upgrades go to the protocols in `websockets`.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ctx: Context,
    websockets: WebSocketRoutes,
) {
    let limits = Limits::default();
    let app = https_app(
        AppState::new(ctx.clone()).with_websockets(websockets),
        limits,
    );
    server::serve(listener, Some(TlsAcceptor::from(tls)), app, ctx, limits).await;
}

/// Serves the plain-HTTP port (health, readiness, CA download, the dashboard) until shutdown.
pub async fn serve_plain(
    listener: TcpListener,
    ctx: Context,
    dash: Option<Arc<dashboard::Dashboard>>,
) {
    let limits = Limits::default();
    let app = plain_app(AppState::new(ctx.clone()), limits, dash);
    server::serve(listener, None, app, ctx, limits).await;
}

#[cfg(test)]
mod tests;
