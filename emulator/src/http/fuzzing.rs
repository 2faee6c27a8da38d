//! Entry points for the fuzz targets in `fuzz/` and the corpus replay test: message properties
//! from HTTP headers.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::message_headers;

/// `data` as header lines (`name: value`), turned into a message as the D2C and C2D routes do.
pub fn headers(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    if let Ok(m) = message_headers::message_from_headers(&headers, data.to_vec()) {
        let _ = message_headers::devicebound_headers(&m);
    }
}
