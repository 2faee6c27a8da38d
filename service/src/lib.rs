//! Placeholder: the service client arrives with its own issue.
