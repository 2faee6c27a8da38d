//! Placeholder: the device client arrives with its own issue.
