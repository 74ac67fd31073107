//! Support for the relayer's integration tests: the one place for waits, launchers, the
//! Prometheus reader and fixtures. Each test file says `mod support;` and uses what it needs.
//!
//! - [`wait`]: `wait_for` a condition with a deadline, instead of sleeping.
//! - [`redis`]: a private `redis-server` per test (`RedisServer`), and `free_port`.
//! - [`cluster`]: a private Redis Cluster of six nodes per test (`RedisCluster`): failover,
//!   keys and command statistics per master.
//! - [`process`]: the `relayer` binary as a child process (`RelayerProcess`, `JsonLogRelayer`).
//! - [`server`]: a relayer served in-process on `127.0.0.1:0`, with a small client (`Server`).
//! - [`settle`]: a scriptable settlement endpoint (`SettlementServer`, `Mode`).
//! - [`chaos_settle`]: a settlement endpoint misbehaving at random, seeded (`ChaosSettlement`).
//! - [`tls_redis`]: a private `redis-server` speaking only TLS with a password
//!   (`TlsRedisServer`), and test CAs (`TestCa`, rcgen).
//! - [`api`]: an HTTP client for relayer processes (`Api`, `Trader`, `Reply`), the saga log as
//!   `/admin/sagas` shows it, and `check_invariants`.
//! - [`metrics`]: the Prometheus text reader; a missing series is a panic, never a 0.
//! - [`fixtures`]: the fluent `Order`, the admin token, addresses, crossing orders.
//! - [`load`]: clients placing crossing orders through a fault until stopped (`Load`).
//! - [`otlp`]: an OTLP/HTTP trace receiver decoding the protobuf export requests
//!   (`OtlpReceiver`, `SpanRecord`).
//!
//! These modules use the relayer crate's public API only. Among themselves: `fixtures`,
//! `metrics`, `otlp`, `redis`, `settle`, `chaos_settle` and `wait` use no other support module; `api`
//! uses `fixtures`, `metrics` and `wait`; `load` uses `api` and `fixtures`; `server` uses `fixtures` and `metrics`; `process`
//! `tls_redis` uses `redis`;
//! `cluster` uses `redis` and `tls_redis`.
// NB: every test binary compiles all of support but uses only part of it.
#![allow(dead_code)]

pub mod api;
pub mod chaos_settle;
pub mod cluster;
pub mod fixtures;
pub mod load;
pub mod metrics;
pub mod otlp;
pub mod process;
pub mod redis;
pub mod server;
pub mod settle;
pub mod tls_redis;
pub mod wait;
