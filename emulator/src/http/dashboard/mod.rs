//! The web dashboard on the plain-HTTP port: see and drive the emulated hub in a browser.
//!
//! # Serving
//!
//! `GET /` on the plain-HTTP port (8088 by default, loopback), so a browser shows it without
//! certificate warnings. The assets ([`assets`]) are embedded in the binary: plain HTML, one
//! script and one style sheet, no build step and nothing fetched at run time.
//!
//! # Who may use it
//!
//! Whoever started the emulator. Each start draws a random token from the OS CSPRNG; the
//! banner prints `http://<host>:<port>/?token=<token>` (as Jupyter does). Opening that URL
//! trades the token for an `HttpOnly`, `SameSite=Strict` cookie and redirects to `/`, so the
//! token leaves the address bar and history. Without the cookie the page explains how to get
//! in and every API route answers 401. [`guard`] holds the rules:
//!
//! - the `Host` header must name a loopback address or the configured host name (so a DNS
//!   rebinding page cannot talk to the dashboard under its own name);
//! - reads need the cookie;
//! - changes (`POST`) need the cookie, the page's CSRF token in `x-csrf-token`, and a
//!   same-origin `Origin` (and `Sec-Fetch-Site: same-origin` when the browser sends it);
//! - every answer carries a strict Content Security Policy and `Cache-Control: no-store`.
//!
//! `/health`, `/ready` and `/_emulator/ca.pem` stay open, as before.
//!
//! # What it does
//!
//! [`api`] reads through the hub's views ([`crate::hub::views`]) and changes through the same
//! hub operations as the control API; no hub rule lives here. [`live`] streams server-sent
//! events fed by the driver's change counters ([`crate::driver::Changes`]): coalesced "changed"
//! notices (the page re-reads what it shows) and the telemetry feed.
//!
//! | Method and path | Answer |
//! |---|---|
//! | `GET /` | the page (with the cookie), a redirect (with `?token=`), or how to get in (401) |
//! | `GET /dashboard/app.js`, `/dashboard/app.css`, `/dashboard/favicon.svg` | assets |
//! | `GET /dashboard/api/overview` | hub name, clock, counts, settings |
//! | `GET /dashboard/api/devices?after=&limit=&filter=` | a page of device summaries |
//! | `GET /dashboard/api/device?id=` | one device: registry entry, connection string, C2D queue, recent telemetry |
//! | `GET /dashboard/api/feedback` | the feedback queue |
//! | `GET /dashboard/api/events` | server-sent events: `changed`, `telemetry` |
//! | `POST /dashboard/api/devices/create`, `device/status`, `device/delete`, `device/disconnect` | registry changes |
//! | `POST /dashboard/api/c2d/send`, `c2d/purge` | C2D |
//! | `POST /dashboard/api/feedback/flush`, `clock/advance`, `reset` | hub controls |
//! | `GET /dashboard/api/twin?id=`, `POST /dashboard/api/twin/desired` | the device twin ([`twins`]) |
//! | `POST /dashboard/api/method/invoke` | a direct method ([`twins`]) |

mod api;
mod assets;
pub mod guard;
mod live;
mod modules;
mod pages;
#[cfg(test)]
mod tests;
mod twins;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use super::AppState;

/// Why the dashboard could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("the OS random number generator failed; cannot make the dashboard token")]
pub struct RandomFailed;

/// One emulator's dashboard: its secrets and the names it answers to.
#[derive(Debug)]
pub struct Dashboard {
    token: String,
    csrf: String,
    cookie: String,
    hosts: Vec<String>,
    url: String,
}

fn random_hex() -> Result<String, RandomFailed> {
    let mut bytes = [0_u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| RandomFailed)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Dashboard {
    /// A dashboard with fresh random secrets, for an emulator whose host name is `host_name`
    /// and whose plain-HTTP port is `port`.
    pub fn new(host_name: &str, port: u16) -> Result<Self, RandomFailed> {
        let token = random_hex()?;
        let url = format!("http://{host_name}:{port}/?token={token}");
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        let own = host_name.to_ascii_lowercase();
        if !hosts.contains(&own) {
            hosts.push(own);
        }
        Ok(Dashboard {
            token,
            csrf: random_hex()?,
            // Cookies ignore ports: one name per port keeps two emulators on one machine apart.
            cookie: format!("iothub-dashboard-{port}"),
            hosts,
            url,
        })
    }

    /// The URL to open, token included (the banner prints it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CSRF token the page sends with every change.
    pub fn csrf_token(&self) -> &str {
        &self.csrf
    }

    /// The name of the session cookie.
    pub fn cookie_name(&self) -> &str {
        &self.cookie
    }
}

/// The dashboard's routes, to merge into the plain-HTTP application.
pub fn routes(dashboard: Arc<Dashboard>) -> Router<AppState> {
    Router::new()
        .route("/", get(pages::index))
        .route("/dashboard/app.js", get(assets::script))
        .route("/dashboard/app.css", get(assets::style))
        .route("/dashboard/favicon.svg", get(assets::icon))
        .route("/dashboard/api/overview", get(api::overview))
        .route("/dashboard/api/devices", get(api::devices))
        .route("/dashboard/api/device", get(api::device))
        .route("/dashboard/api/feedback", get(api::feedback))
        .route("/dashboard/api/events", get(live::events))
        .route("/dashboard/api/devices/create", post(api::create_device))
        .route("/dashboard/api/device/status", post(api::set_status))
        .route("/dashboard/api/device/delete", post(api::delete_device))
        .route("/dashboard/api/device/disconnect", post(api::disconnect))
        .route("/dashboard/api/c2d/send", post(api::send_c2d))
        .route("/dashboard/api/c2d/purge", post(api::purge_c2d))
        .route("/dashboard/api/feedback/flush", post(api::flush_feedback))
        .route("/dashboard/api/clock/advance", post(api::advance_clock))
        .route("/dashboard/api/reset", post(api::reset))
        .route("/dashboard/api/twin", get(twins::twin))
        .route("/dashboard/api/twin/desired", post(twins::patch_desired))
        .route("/dashboard/api/method/invoke", post(twins::invoke_method))
        .route("/dashboard/api/modules", get(modules::modules))
        .layer(axum::middleware::from_fn(guard::security_headers))
        .layer(axum::Extension(dashboard))
}
