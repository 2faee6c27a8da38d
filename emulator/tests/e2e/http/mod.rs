//! HTTPS and plain HTTP: authorization, registry, C2D and feedback, the control API,
//! WebSocket upgrades, robustness.

mod auth;
mod c2d;
mod control;
mod device_ids;
mod header_bytes;
mod registry;
mod robustness;
mod websocket;
