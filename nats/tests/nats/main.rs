//! The bridge against a real nats-server: each test starts its own on a free loopback port
//! with JetStream in a temporary store (`shardbus_nats::server::NatsServer`) and kills it
//! by pid at the end. Without a nats-server binary the tests skip with a loud message,
//! except under `CI=true`, where that is a failure.

mod bad_input;
mod common;
mod faults;
mod outbox;
mod partitioned;
mod patterns;
mod round_trip;
