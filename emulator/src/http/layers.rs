//! What wraps every request: path normalisation, the access log, the version header, the
//! `api-version` note, the per-request timeout, and the hub's time in error bodies.
//!
//! Path normalisation must happen before routing, so these wrap the whole router (see
//! `finish` in the module above), not single routes.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::Response;
use iothub_protocol::ErrorCode;

use super::AppState;
use super::error::{ERROR_CODE_HEADER, code_response, stamp};
use super::extract::Query;
use super::health::VERSION;

/// The response header that names the emulator's version.
pub const VERSION_HEADER: &str = "x-emulator-version";

/// Lower-cases the literal segments of a path and drops a trailing `/`, keeping the case of
/// the segments that are parameters (device ids are case-sensitive; lock tokens are kept as
/// sent). So `/devices/Dev1/messages/deviceBound/` routes like
/// `/devices/Dev1/messages/devicebound`.
pub fn normalize_path(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".to_owned();
    }
    let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let is = |i: usize, lit: &str| lower.get(i).is_some_and(|s| s == lit);
    let mut params = Vec::new();
    if is(0, "devices") || is(0, "twins") {
        params.push(1);
        if is(2, "messages") && is(3, "devicebound") {
            params.push(4);
        }
        // Module ids are case-sensitive too.
        if is(2, "modules") {
            params.push(3);
        }
    } else if is(0, "_emulator") && is(1, "devices") {
        params.push(2);
    } else if is(0, "messages") && is(1, "servicebound") && is(2, "feedback") {
        params.push(3);
    }
    let mut out = String::with_capacity(trimmed.len());
    for (i, (seg, low)) in segs.iter().zip(&lower).enumerate() {
        out.push('/');
        out.push_str(if params.contains(&i) { seg } else { low });
    }
    out
}

/// Rewrites the request's path with [`normalize_path`], keeping the query.
pub fn normalize_request<B>(mut req: axum::http::Request<B>) -> axum::http::Request<B> {
    let uri = req.uri();
    let path = normalize_path(uri.path());
    if path != uri.path() {
        let pq = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut parts = uri.clone().into_parts();
        if let Ok(pq) = pq.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(new) = Uri::from_parts(parts) {
                *req.uri_mut() = new;
            }
        }
    }
    req
}

/// The `api-version` values the official SDKs and the REST docs use.
const KNOWN_API_VERSIONS: [&str; 9] = [
    "2016-11-14",
    "2017-06-30",
    "2018-06-30",
    "2019-03-30",
    "2019-10-01",
    "2020-03-13",
    "2020-05-31-preview",
    "2020-09-30",
    "2021-04-12",
];

/// Remembers which unknown `api-version` values were logged, so each is logged once.
#[derive(Debug, Default)]
pub struct ApiVersions {
    seen: Mutex<HashSet<String>>,
}

impl ApiVersions {
    /// How many distinct unknown versions are remembered (and logged) at most.
    const MAX: usize = 32;

    /// Logs `version` once if it is not a known one. Any version is accepted.
    pub fn note(&self, version: &str) {
        if KNOWN_API_VERSIONS.contains(&version) {
            return;
        }
        let shown: String = version.chars().take(64).collect();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() < Self::MAX && seen.insert(shown.clone()) {
            tracing::info!(api_version = %shown, "unknown api-version; accepted anyway");
        }
    }
}

/// One access-log line per request (method, path without the query, status, milliseconds,
/// error code; successful `/health` and `/ready` probes at debug level), the
/// `x-emulator-version` header, and the `api-version` note. The `Authorization` header and the
/// query string are never logged.
pub async fn access_log(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path: String = req.uri().path().chars().take(256).collect();
    if let Some(v) = Query::parse(req.uri().query().unwrap_or("")).get("api-version") {
        st.api_versions.note(v);
    }
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .insert(VERSION_HEADER, HeaderValue::from_static(VERSION));
    let error = resp
        .headers()
        .get(ERROR_CODE_HEADER)
        .and_then(|v| v.to_str().ok());
    let status = resp.status().as_u16();
    let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    // Health probes (Docker, Kubernetes) poll all day; keep them out of the default log.
    let probe = status == 200 && matches!(normalize_path(&path).as_str(), "/health" | "/ready");
    if probe {
        tracing::debug!(
            target: "iothub_emulator::access",
            method = %method,
            path = %path,
            status,
            ms,
            "request"
        );
    } else {
        tracing::info!(
            target: "iothub_emulator::access",
            method = %method,
            path = %path,
            status,
            ms,
            error,
            "request"
        );
    }
    resp
}

/// Writes the body of every error response, stamped with the hub's time (see
/// [`super::error`]). Wraps everything that can answer with an error, the request timeout
/// included.
pub async fn stamp_errors(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    stamp(&mut resp, st.ctx.hub.now());
    resp
}

/// Ends a request that takes longer than the limit (in practice: a client that sends its
/// body too slowly) with 503 `ServiceUnavailable`.
///
/// A direct-method call waits for the device for up to its connect plus response timeout (the
/// hub always answers by then), so it gets [`super::methods::LONGEST_CALL`] more.
pub async fn request_timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let limit = if super::methods::is_method_call(req.uri().path()) {
        limit + super::methods::LONGEST_CALL
    } else {
        limit
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => code_response(
            ErrorCode::ServiceUnavailable,
            &format!(
                "the request did not complete within {} s; send the whole request at once",
                limit.as_secs()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_segments_are_lowered_and_parameters_kept() {
        assert_eq!(
            normalize_path("/Devices/Dev1/Messages/DeviceBound/AbC/Abandon/"),
            "/devices/Dev1/messages/devicebound/AbC/abandon"
        );
        assert_eq!(normalize_path("/devices/"), "/devices");
        assert_eq!(
            normalize_path("/Twins/Dev1/Modules/ModA/Methods"),
            "/twins/Dev1/modules/ModA/methods"
        );
        assert_eq!(
            normalize_path("/devices/Dev1/modules/ModA/messages/Events"),
            "/devices/Dev1/modules/ModA/messages/events"
        );
        assert_eq!(normalize_path("/twins/Dev1"), "/twins/Dev1");
        assert_eq!(normalize_path("/DEVICES/Messages"), "/devices/Messages");
        assert_eq!(
            normalize_path("/messages/serviceBound/feedback/LOCK/ABANDON"),
            "/messages/servicebound/feedback/LOCK/abandon"
        );
        assert_eq!(
            normalize_path("/_Emulator/Devices/X/C2D"),
            "/_emulator/devices/X/c2d"
        );
        assert_eq!(
            normalize_path("/_emulator/Feedback/FLUSH"),
            "/_emulator/feedback/flush"
        );
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/$IotHub/WebSocket/"), "/$iothub/websocket");
        assert_eq!(normalize_path("/Statistics/Devices"), "/statistics/devices");
    }

    #[test]
    fn the_query_survives_normalisation() {
        let req = axum::http::Request::builder()
            .uri("/Devices/D1/?api-version=2021-04-12&top=5")
            .body(())
            .unwrap();
        let req = normalize_request(req);
        assert_eq!(req.uri().path(), "/devices/D1");
        assert_eq!(req.uri().query(), Some("api-version=2021-04-12&top=5"));
    }
}
