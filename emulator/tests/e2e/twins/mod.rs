//! Device twins on every transport: MQTT and AMQP device requests and desired notifications,
//! the service's twin REST operations, queries and bulk registry writes.

mod http;
mod mqtt;
