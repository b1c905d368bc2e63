//! Integration tests against the real Redis and Kafka-protocol broker that
//! scripts/test.sh starts. Each test has its own topics, group and keys.

mod cli;
mod crash;
mod dead_letters;
mod helpers;
mod lifecycle;
mod observability;
mod scale;
