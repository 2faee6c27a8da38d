//! Shared access signature tokens (iothub-protocol.md 7.1, 7.2).
