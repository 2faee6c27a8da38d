//! Device and service connection strings (iothub-protocol.md 7.5).
