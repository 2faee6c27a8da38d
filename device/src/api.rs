//! What the client says about itself to the hub on every transport.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// The api-version the client speaks (the Node SDK's), in the MQTT user name and HTTPS queries.
pub(crate) const API_VERSION: &str = "2021-04-12";
/// What the client calls itself in `DeviceClientType` and `User-Agent`.
pub(crate) const CLIENT_TYPE: &str = concat!("iothub-device-rust/", env!("CARGO_PKG_VERSION"));
/// What query values keep unencoded: the RFC 3986 unreserved characters.
pub(crate) const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
