//! Traffic through the active Service: [`Proxy`], a kube-proxy stand-in that follows the
//! Service's EndpointSlices, and [`Load`], a load generator that counts what failed.
//!
//! Uses [`crate::support::http`] for each request.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::netns::RELAYER_PORT;
use crate::support::http;

/// A kube-proxy stand-in: a TCP proxy on 127.0.0.1 that forwards each connection to a ready
/// endpoint of a Service, round robin, following its EndpointSlices with a watch.
pub struct Proxy {
    pub addr: SocketAddr,
    /// Connections forwarded to each endpoint.
    served: Arc<std::sync::Mutex<BTreeMap<SocketAddr, u64>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Proxy {
    pub async fn start(client: Client, namespace: &str, service: &str) -> Self {
        let (tx, endpoints) = watch::channel(Vec::<SocketAddr>::new());
        let slices: Api<EndpointSlice> = Api::namespaced(client, namespace);
        let selector = format!("kubernetes.io/service-name={service}");
        let follow = tokio::spawn(async move {
            let (reader, writer) = kube::runtime::reflector::store();
            // NB: every event, not only applied objects: the store shows the initial list only
            // once it is complete (InitDone).
            let stream = watcher(slices, watcher::Config::default().labels(&selector))
                .default_backoff()
                .reflect(writer);
            let mut stream = std::pin::pin!(stream);
            while stream.next().await.is_some() {
                let mut ready = Vec::new();
                for slice in reader.state() {
                    let port = slice
                        .ports
                        .iter()
                        .flatten()
                        .find_map(|p| p.port)
                        .and_then(|p| u16::try_from(p).ok())
                        .unwrap_or(RELAYER_PORT);
                    for e in slice.endpoints.iter().flatten() {
                        let is_ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                        if !is_ready {
                            continue;
                        }
                        for a in &e.addresses {
                            if let Ok(ip) = a.parse::<IpAddr>() {
                                ready.push(SocketAddr::new(ip, port));
                            }
                        }
                    }
                }
                ready.sort();
                if std::env::var_os("CUTOVER_DEBUG").is_some() {
                    eprintln!("proxy endpoints: {ready:?}");
                }
                let _ = tx.send(ready);
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let served = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let counted = served.clone();
        let serve = tokio::spawn(async move {
            let mut next = 0usize;
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let targets = endpoints.borrow().clone();
                if targets.is_empty() {
                    drop(inbound); // like kube-proxy's REJECT for a Service without endpoints
                    continue;
                }
                let target = targets[next % targets.len()];
                next = next.wrapping_add(1);
                *counted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(target)
                    .or_default() += 1;
                tokio::spawn(async move {
                    // NB: only addresses from the EndpointSlices, i.e. inside the test's
                    // network namespaces.
                    if let Ok(Ok(mut outbound)) =
                        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(target))
                            .await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy {
            addr,
            served,
            tasks: vec![follow, serve],
        }
    }

    /// Connections forwarded so far, by endpoint.
    pub fn served(&self) -> BTreeMap<SocketAddr, u64> {
        self.served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Counts of a load run.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub ok: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
}

/// A load generator: `workers` loops of `GET path` through `target`, one connection per
/// request, until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<LoadReport>>,
    pub ok: Arc<AtomicU64>,
}

impl Load {
    pub fn start(target: SocketAddr, path: &str, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let tasks = (0..workers)
            .map(|_| {
                let stop = stop.clone();
                let ok = ok.clone();
                let path = path.to_owned();
                tokio::spawn(async move {
                    let mut report = LoadReport::default();
                    while !stop.load(Ordering::Relaxed) {
                        match http::get(target, &path).await {
                            Ok((200, _)) => {
                                report.ok += 1;
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok((status, _)) => {
                                report.failed += 1;
                                *report.failures.entry(format!("HTTP {status}")).or_insert(0) += 1;
                            }
                            Err(error) => {
                                report.failed += 1;
                                let key: String = error.to_string().chars().take(60).collect();
                                *report.failures.entry(key).or_insert(0) += 1;
                            }
                        }
                    }
                    report
                })
            })
            .collect();
        Self { stop, tasks, ok }
    }

    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for t in self.tasks {
            if let Ok(r) = t.await {
                total.ok += r.ok;
                total.failed += r.failed;
                for (k, v) in r.failures {
                    *total.failures.entry(k).or_insert(0) += v;
                }
            }
        }
        total
    }
}
