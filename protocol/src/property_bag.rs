//! MQTT property bags in topic names (iothub-protocol.md 3.4).
