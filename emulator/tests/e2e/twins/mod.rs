//! Device twins on every transport: MQTT and AMQP device requests and desired notifications,
//! the service's twin REST operations, queries and bulk registry writes.

mod amqp;
mod http;
mod mqtt;
mod routes;
