//! Support of the cutover tests: pods backed by real relayer processes in their own network
//! namespaces, a kube-proxy-like TCP proxy that follows the active Service's EndpointSlices, a
//! load generator, and an invariant watcher.
//!
//! Networking (as a CNI would do it): per pod a network namespace `fscut-<pid>-<n>`, a veth
//! pair (`fch<pid>x<n>` on the host, `eth0` inside), an address from 10.244.0.0/16 that exists
//! only inside that namespace, a host route to it, and inside a route back to the host's own
//! address only. The relayer runs in the namespace with `ip netns exec`. Namespaces are deleted
//! (which removes their veth pair and route) by [`NetnsBackend`]'s guard on drop, also on
//! panic, and namespaces left by a crashed earlier run (whose process is gone) are swept when a
//! backend starts. All other traffic goes to 127.0.0.1 only.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::ControlPlane;
use crate::support::pod_sim::{BoxFuture, PodBackend, Started};

/// Prefix of every network namespace these tests create.
const NETNS_PREFIX: &str = "fscut";
/// Port the relayer listens on inside its namespace (the config's default `0.0.0.0:3000`).
pub const RELAYER_PORT: u16 = 3000;

fn relayer_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/debug/relayer")
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Deletes namespaces of earlier runs whose test process is gone.
pub fn sweep_stale_namespaces() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(&format!("{NETNS_PREFIX}-")) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// One relayer process in its namespace.
struct PodProcess {
    netns: String,
    child: Child,
    ip: Ipv4Addr,
    config: String,
    env: Vec<(String, String)>,
    pod: String,
}

#[derive(Default)]
struct Inner {
    /// By pod uid.
    running: HashMap<String, PodProcess>,
    /// Every namespace created (deleted on drop).
    namespaces: Vec<String>,
    /// What each pod started with: pod name → (config text, env).
    started: BTreeMap<String, (String, Vec<(String, String)>)>,
}

/// Backs the pods of one Kubernetes namespace by real relayer processes.
pub struct NetnsBackend {
    namespace: String,
    inner: Arc<Mutex<Inner>>,
    next: AtomicU64,
    /// Third octet base, distinct per test process.
    base: u32,
}

/// Removes every namespace and process of a backend when dropped.
pub struct NetnsGuard {
    inner: Arc<Mutex<Inner>>,
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (_, mut p) in inner.running.drain() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        for ns in inner.namespaces.drain(..) {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

static NEXT_BACKEND: AtomicU64 = AtomicU64::new(0);

impl NetnsBackend {
    /// Registers a backend for the pods of `namespace` with the simulator; keep the guard.
    pub fn register(namespace: &str) -> (Arc<NetnsBackend>, NetnsGuard) {
        sweep_stale_namespaces();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let index = NEXT_BACKEND.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let backend = Arc::new(NetnsBackend {
            namespace: namespace.to_owned(),
            inner: inner.clone(),
            next: AtomicU64::new(0),
            base: (pid % 50) * 4 + u32::try_from(index % 4).unwrap_or(0),
        });
        ControlPlane::shared()
            .simulator()
            .expect("cutover tests need the local control plane's pod simulator")
            .register(backend.clone());
        (backend, NetnsGuard { inner })
    }

    /// Config text and environment each pod started with, by pod name.
    pub fn started(&self) -> BTreeMap<String, (String, Vec<(String, String)>)> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .started
            .clone()
    }

    /// Relayer processes running now.
    pub fn running(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .running
            .len()
    }

    fn allocate(&self) -> (u64, Ipv4Addr) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let third = 100 + self.base;
        let host = u8::try_from(n % 250 + 2).unwrap_or(2);
        (
            n,
            Ipv4Addr::new(10, 244, u8::try_from(third % 256).unwrap_or(100), host),
        )
    }

    fn setup_netns(&self, n: u64, addr: Ipv4Addr) -> anyhow::Result<String> {
        let pid = std::process::id();
        let netns = format!("{NETNS_PREFIX}-{pid}-{}-{n}", self.base);
        let host_if = format!(
            "fch{}x{}",
            pid % 100_000,
            self.base * 1000 + u32::try_from(n).unwrap_or(0)
        );
        let host_if: String = host_if.chars().take(15).collect();
        let peer_if = format!("{host_if}p")
            .chars()
            .rev()
            .take(15)
            .collect::<String>()
            .chars()
            .rev()
            .collect::<String>();
        ip(&["netns", "add", &netns])?;
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .namespaces
            .push(netns.clone());
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
        ])?;
        ip(&["link", "set", &peer_if, "netns", &netns])?;
        ip(&["link", "set", &host_if, "up"])?;
        let ns = |args: &[&str]| -> anyhow::Result<String> {
            let mut all = vec!["netns", "exec", &netns, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        ns(&["link", "set", &peer_if, "name", "eth0"])?;
        ns(&["link", "set", "lo", "up"])?;
        ns(&["addr", "add", &format!("{addr}/32"), "dev", "eth0"])?;
        ns(&["link", "set", "eth0", "up"])?;
        ip(&["route", "add", &format!("{addr}/32"), "dev", &host_if])?;
        // The host's source address towards the pod; the pod routes only that address back.
        let route = ip(&["-o", "route", "get", &addr.to_string()])?;
        let src = route
            .split_whitespace()
            .skip_while(|w| *w != "src")
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("no source address in {route:?}"))?
            .to_owned();
        ns(&["route", "add", &format!("{src}/32"), "dev", "eth0"])?;
        Ok(netns)
    }
}

impl PodBackend for NetnsBackend {
    fn claims(&self, pod: &Pod) -> bool {
        pod.namespace().as_deref() == Some(self.namespace.as_str())
    }

    fn start(&self, pod: &Pod) -> BoxFuture<anyhow::Result<Started>> {
        let (n, addr) = self.allocate();
        let netns = self.setup_netns(n, addr);
        let inner = self.inner.clone();
        let pod = pod.clone();
        Box::pin(async move {
            let netns = netns?;
            let spec = pod.spec.clone().unwrap_or_default();
            let container = spec.containers.first().cloned().unwrap_or_default();
            let env: Vec<(String, String)> = container
                .env
                .unwrap_or_default()
                .into_iter()
                .filter_map(|e| Some((e.name, e.value?)))
                .collect();
            let config_map = spec
                .volumes
                .unwrap_or_default()
                .into_iter()
                .find_map(|v| v.config_map.map(|c| c.name))
                .ok_or_else(|| anyhow::anyhow!("pod without a config volume"))?;
            let client = ControlPlane::shared().client().await?;
            let cms: Api<ConfigMap> = Api::namespaced(client, &pod.namespace().unwrap_or_default());
            let cm = cms.get(&config_map).await?;
            let config = cm
                .data
                .unwrap_or_default()
                .remove("config.yaml")
                .ok_or_else(|| anyhow::anyhow!("config map without config.yaml"))?;
            let dir = ControlPlane::shared().work_dir().join("relayers");
            std::fs::create_dir_all(&dir)?;
            let file = dir.join(format!("{}.yaml", pod.name_any()));
            std::fs::write(&file, &config)?;
            let log = std::fs::File::create(dir.join(format!("{}.log", pod.name_any())))?;
            let mut command = Command::new("ip");
            command
                .args(["netns", "exec", &netns])
                .arg(relayer_binary())
                .arg("--config")
                .arg(&file)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            for (k, v) in &env {
                command.env(k, v);
            }
            let child = command.spawn()?;
            let uid = pod.uid().unwrap_or_default();
            {
                let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
                inner
                    .started
                    .insert(pod.name_any(), (config.clone(), env.clone()));
                inner.running.insert(
                    uid.clone(),
                    PodProcess {
                        netns,
                        child,
                        ip: addr,
                        config,
                        env,
                        pod: pod.name_any(),
                    },
                );
            }
            // The kubelet's readiness probe: GET /ready every 100 ms while the process runs.
            let (tx, ready) = watch::channel(false);
            let target = SocketAddr::new(IpAddr::V4(addr), RELAYER_PORT);
            let probe_inner = inner.clone();
            tokio::spawn(async move {
                loop {
                    let alive = {
                        let mut inner = probe_inner.lock().unwrap_or_else(|p| p.into_inner());
                        match inner.running.get_mut(&uid) {
                            Some(p) => matches!(p.child.try_wait(), Ok(None)),
                            None => false,
                        }
                    };
                    if !alive {
                        let _ = tx.send(false);
                        return;
                    }
                    let ok = matches!(http_get(target, "/ready").await, Ok((200, _)));
                    if *tx.borrow() != ok && tx.send(ok).is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            Ok(Started {
                ip: IpAddr::V4(addr),
                ready,
            })
        })
    }

    fn stop(&self, pod: &Pod, grace: Duration) -> BoxFuture<()> {
        let inner = self.inner.clone();
        let uid = pod.uid().unwrap_or_default();
        Box::pin(async move {
            let pid = {
                let inner = inner.lock().unwrap_or_else(|p| p.into_inner());
                inner.running.get(&uid).map(|p| p.child.id())
            };
            if let Some(pid) = pid {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            let deadline = Instant::now() + grace;
            loop {
                let exited = {
                    let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
                    match inner.running.get_mut(&uid) {
                        Some(p) => !matches!(p.child.try_wait(), Ok(None)),
                        None => true,
                    }
                };
                if exited || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let removed = inner
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .running
                .remove(&uid);
            if let Some(mut p) = removed {
                let _ = p.child.kill();
                let _ = p.child.wait();
                let _ = ip(&["netns", "del", &p.netns]);
                inner
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .namespaces
                    .retain(|n| n != &p.netns);
            }
        })
    }
}

/// A minimal `GET` with `Connection: close`, bounded by 2 s.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(Duration::from_secs(2), async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: relayer\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no status line in {text:?}"))?;
        Ok((status, text))
    })
    .await
    .map_err(|_| anyhow::anyhow!("GET {path} from {addr}: no answer within 2 s"))?
}

/// A kube-proxy stand-in: a TCP proxy on 127.0.0.1 that forwards each connection to a ready
/// endpoint of a Service, round robin, following its EndpointSlices with a watch.
pub struct Proxy {
    pub addr: SocketAddr,
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
            tasks: vec![follow, serve],
        }
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
                        match http_get(target, &path).await {
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

/// Records, at every observed change of the active Service or a colour's Deployment, whether
/// the Service selects a colour with available pods, and the colours it selected in order.
pub struct InvariantWatcher {
    state: Arc<Mutex<Invariants>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default, Clone)]
pub struct Invariants {
    /// Colours the active Service selected, in order (repeats collapsed).
    pub selected: Vec<String>,
    /// Observations where the selected colour had no available pod.
    pub violations: Vec<String>,
    /// Observations made.
    pub checks: u64,
    /// Highest `spec.replicas` of each Deployment seen, and the first non-zero one.
    pub first_replicas: BTreeMap<String, i32>,
    /// Lowest non-zero `spec.replicas` of each Deployment while the other colour was active.
    pub min_replicas: BTreeMap<String, i32>,
}

impl Drop for InvariantWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl InvariantWatcher {
    pub fn start(client: Client, namespace: &str, name: &str) -> Self {
        let state = Arc::new(Mutex::new(Invariants::default()));
        let services: Api<Service> = Api::namespaced(client.clone(), namespace);
        let deployments: Api<Deployment> = Api::namespaced(client, namespace);
        let (svc_reader, svc_writer) = kube::runtime::reflector::store();
        let (dep_reader, dep_writer) = kube::runtime::reflector::store();
        let name = name.to_owned();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let svc = watcher(
                services,
                watcher::Config::default().fields(&format!("metadata.name={name}")),
            )
            .default_backoff()
            .reflect(svc_writer)
            .map(|_| ());
            let dep = watcher(deployments, watcher::Config::default())
                .default_backoff()
                .reflect(dep_writer)
                .map(|_| ());
            let both = futures::stream::select(svc, dep);
            let mut both = std::pin::pin!(both);
            while both.next().await.is_some() {
                let Some(service) = svc_reader.state().into_iter().next() else {
                    continue;
                };
                let Some(color) = service
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .and_then(|s| s.get("relayer.foresight.dev/color"))
                    .cloned()
                else {
                    continue;
                };
                let mut st = shared.lock().unwrap_or_else(|p| p.into_inner());
                st.checks += 1;
                if st.selected.last() != Some(&color) {
                    st.selected.push(color.clone());
                }
                let mut available = None;
                for d in dep_reader.state() {
                    let dname = d.name_any();
                    let replicas = d.spec.replicas.unwrap_or(0);
                    if replicas > 0 {
                        st.first_replicas.entry(dname.clone()).or_insert(replicas);
                        if !dname.ends_with(&format!("-{color}")) {
                            let min = st.min_replicas.entry(dname.clone()).or_insert(replicas);
                            *min = (*min).min(replicas);
                        }
                    }
                    if dname == format!("{name}-{color}") {
                        available = Some(
                            d.status
                                .as_ref()
                                .and_then(|s| s.available_replicas)
                                .unwrap_or(0),
                        );
                    }
                }
                if let Some(n) = available
                    && n < 1
                {
                    st.violations.push(format!(
                        "the Service selects {color}, which has {n} available pods"
                    ));
                }
            }
        });
        Self { state, task }
    }

    pub fn snapshot(&self) -> Invariants {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
