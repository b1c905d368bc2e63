//! Integration tests against the real Redis and Kafka-protocol broker that
//! scripts/test.sh starts. Each test has its own topics, group and keys.

mod api;
mod api_platform;
mod api_support;
mod cli;
mod contract;
mod crash;
mod dead_letters;
mod dev;
mod helpers;
mod lifecycle;
mod model;
mod observability;
mod scale;
