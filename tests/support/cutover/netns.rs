//! Pods backed by real relayer processes, each in its own network namespace, registered with
//! the pod simulator as a [`PodBackend`].
//!
//! Networking (as a CNI would do it): per pod a network namespace `fscut-<pid>-<base>-<n>`
//! (`base`: the /24 of a live backend, never shared by two at once), a veth pair
//! (`fch<pid>x<n>` on the host, `eth0` inside), an address from 10.244.0.0/16 that exists
//! only inside that namespace, a host route to it, and inside a route back to the host's own
//! address only. The relayer runs in the namespace with `ip netns exec`. Namespaces are deleted
//! (which removes their veth pair and route) by [`NetnsGuard`] on drop, also on panic, and
//! namespaces left by a crashed earlier run (whose process is gone) are swept when a backend
//! starts. While a backend lives, the rest of its /24 is routed `unreachable` on the host, so
//! an address of a pod already gone fails at once instead of leaving by the default route.
//! All other traffic goes to 127.0.0.1, or to the host's source address towards the
//! pods ([`host_address`]), where the tests' store and settlement stub listen for the pods.
//!
//! The kubelet's part: the container's environment is resolved like a kubelet does it,
//! literal values and `valueFrom.secretKeyRef` read from the Secret through the API; a missing
//! Secret or key keeps the pod from starting (`CreateContainerConfigError`), until an event of
//! the pod retries it.
//!
//! Uses [`crate::support::pod_sim`], [`crate::support::control_plane`] and
//! [`crate::support::http`] (the kubelet's readiness probe).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, EnvVar, Pod, Secret};
use kube::ResourceExt;
use kube::api::Api;
use tokio::sync::watch;

use crate::support::ControlPlane;
use crate::support::http;
use crate::support::pod_sim::{BoxFuture, PodBackend, Started};

/// Prefix of every network namespace these tests create.
const NETNS_PREFIX: &str = "fscut";
/// Port the relayer listens on inside its namespace (the config's default `0.0.0.0:3000`).
pub const RELAYER_PORT: u16 = 3000;

/// The relayer binary the tests run: `cargo build -p relayer` builds it.
pub fn relayer_binary() -> PathBuf {
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
    /// The host's source addresses the pods were given as their way back.
    sources: BTreeSet<Ipv4Addr>,
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
    /// The backend's /24, routed `unreachable` on the host while it lives (when this guard
    /// added that route).
    blackhole: Option<String>,
    /// The backend's slot in this process, released last.
    slot: usize,
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
        if let Some(subnet) = self.blackhole.take() {
            let _ = ip(&["route", "del", "unreachable", &subnet]);
        }
        release_slot(self.slot);
    }
}

/// Backends of this process that may live at once; each has its own /24.
const SLOTS: usize = 8;
/// Which of this process's slots a live backend holds. NB: a slot, not a running count, names a
/// backend's /24 and namespaces, so that tests running side by side never share addresses.
static SLOTS_IN_USE: Mutex<[bool; SLOTS]> = Mutex::new([false; SLOTS]);

fn take_slot() -> usize {
    let mut slots = SLOTS_IN_USE.lock().unwrap_or_else(|p| p.into_inner());
    let free = slots
        .iter()
        .position(|used| !used)
        .expect("at most 8 network-namespace backends at once in one test process");
    slots[free] = true;
    free
}

fn release_slot(slot: usize) {
    let mut slots = SLOTS_IN_USE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(used) = slots.get_mut(slot) {
        *used = false;
    }
}

impl NetnsBackend {
    /// Registers a backend for the pods of `namespace` with the simulator; keep the guard.
    pub fn register(namespace: &str) -> (Arc<NetnsBackend>, NetnsGuard) {
        sweep_stale_namespaces();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let slot = take_slot();
        let pid = std::process::id();
        // NB: third octets 100..=251: 19 processes apart by pid, 8 slots each.
        let backend = Arc::new(NetnsBackend {
            namespace: namespace.to_owned(),
            inner: inner.clone(),
            next: AtomicU64::new(0),
            base: (pid % 19) * SLOTS as u32 + slot as u32,
        });
        ControlPlane::shared()
            .simulator()
            .expect("cutover tests need the local control plane's pod simulator")
            .register(backend.clone());
        // NB: an address of a pod already gone (an EndpointSlice lags, a scrape of a pod that
        // just stopped) must fail at once rather than leave the host by its default route.
        let [a, b, c, _] = backend.address(0).1.octets();
        let subnet = format!("{a}.{b}.{c}.0/24");
        let blackhole = ip(&["route", "add", "unreachable", &subnet])
            .ok()
            .map(|_| subnet);
        (
            backend,
            NetnsGuard {
                inner,
                blackhole,
                slot,
            },
        )
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

    /// Where the running relayers listen (their pod address and [`RELAYER_PORT`]).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<SocketAddr> = inner
            .running
            .values()
            .map(|p| SocketAddr::new(IpAddr::V4(p.ip), RELAYER_PORT))
            .collect();
        all.sort();
        all
    }

    /// The host's source addresses the pods so far were given as their only way back.
    pub fn sources(&self) -> BTreeSet<Ipv4Addr> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sources
            .clone()
    }

    fn allocate(&self) -> (u64, Ipv4Addr) {
        self.address(self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Pod `n`'s address.
    fn address(&self, n: u64) -> (u64, Ipv4Addr) {
        let third = 100 + self.base;
        let host = u8::try_from(n % 250 + 2).unwrap_or(2);
        (
            n,
            Ipv4Addr::new(10, 244, u8::try_from(third % 256).unwrap_or(100), host),
        )
    }
}

/// Creates pod `n`'s namespace with address `addr` (see the module doc); returns its name and
/// the host's source address towards it (the only address the pod routes back to).
fn setup_netns(
    base: u32,
    inner: &Mutex<Inner>,
    n: u64,
    addr: Ipv4Addr,
) -> anyhow::Result<(String, Ipv4Addr)> {
    let pid = std::process::id();
    let netns = format!("{NETNS_PREFIX}-{pid}-{base}-{n}");
    let host_if = format!(
        "fch{}x{}",
        pid % 100_000,
        base * 1000 + u32::try_from(n).unwrap_or(0)
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
    inner
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
    let src: Ipv4Addr = src
        .parse()
        .map_err(|e| anyhow::anyhow!("source address {src:?}: {e}"))?;
    inner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .sources
        .insert(src);
    Ok((netns, src))
}

/// The host's source address towards the pod network, as the kernel picks it now (before any
/// pod exists): where a service the pods must reach (a store, a settlement endpoint) listens.
/// [`NetnsBackend::sources`] tells the addresses pods were actually given as their way back.
pub fn host_address() -> anyhow::Result<Ipv4Addr> {
    // NB: 10.244.64.0/24 is no backend's /24 (those are 10.244.{100..=255, 0..=43}.0/24).
    let route = ip(&["-o", "route", "get", "10.244.64.1"])?;
    let src = route
        .split_whitespace()
        .skip_while(|w| *w != "src")
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no source address in {route:?}"))?;
    src.parse()
        .map_err(|e| anyhow::anyhow!("source address {src:?}: {e}"))
}

/// The environment of a container as a kubelet resolves it: literal values, and
/// `valueFrom.secretKeyRef` read from the Secret in `namespace`; a missing Secret or key is an
/// error (the kubelet's `CreateContainerConfigError`: the container does not start) unless
/// the reference is `optional`. Other sources (`fieldRef` and friends) are left out.
async fn resolve_env(
    client: &kube::Client,
    namespace: &str,
    vars: Vec<EnvVar>,
) -> anyhow::Result<Vec<(String, String)>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut env = Vec::with_capacity(vars.len());
    for var in vars {
        if let Some(value) = var.value {
            env.push((var.name, value));
            continue;
        }
        let Some(reference) = var.value_from.and_then(|f| f.secret_key_ref) else {
            continue;
        };
        let optional = reference.optional.unwrap_or(false);
        let secret = match secrets.get_opt(&reference.name).await? {
            Some(secret) => secret,
            None if optional => continue,
            None => anyhow::bail!(
                "secret {:?} not found (environment variable {})",
                reference.name,
                var.name
            ),
        };
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&reference.key))
            .map(|b| b.0.clone())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(&reference.key))
                    .map(|s| s.clone().into_bytes())
            });
        let Some(bytes) = bytes else {
            if optional {
                continue;
            }
            anyhow::bail!(
                "couldn't find key {} in Secret {}/{} (environment variable {})",
                reference.key,
                namespace,
                reference.name,
                var.name
            );
        };
        let value = String::from_utf8(bytes).map_err(|_| {
            anyhow::anyhow!(
                "key {} of Secret {} is not UTF-8 (environment variable {})",
                reference.key,
                reference.name,
                var.name
            )
        })?;
        env.push((var.name, value));
    }
    Ok(env)
}

impl PodBackend for NetnsBackend {
    fn claims(&self, pod: &Pod) -> bool {
        pod.namespace().as_deref() == Some(self.namespace.as_str())
    }

    fn start(&self, pod: &Pod) -> BoxFuture<anyhow::Result<Started>> {
        let (n, addr) = self.allocate();
        let base = self.base;
        let inner = self.inner.clone();
        let pod = pod.clone();
        Box::pin(async move {
            let spec = pod.spec.clone().unwrap_or_default();
            let container = spec.containers.first().cloned().unwrap_or_default();
            let client = ControlPlane::shared().client().await?;
            let pod_namespace = pod.namespace().unwrap_or_default();
            // NB: like a kubelet, the container does not start while a Secret it needs is
            // missing; the simulator retries at the pod's next event.
            let env = resolve_env(&client, &pod_namespace, container.env.unwrap_or_default())
                .await
                .map_err(|e| anyhow::anyhow!("CreateContainerConfigError: {e:#}"))?;
            let (netns, _src) = setup_netns(base, &inner, n, addr)?;
            let config_map = spec
                .volumes
                .unwrap_or_default()
                .into_iter()
                .find_map(|v| v.config_map.map(|c| c.name))
                .ok_or_else(|| anyhow::anyhow!("pod without a config volume"))?;
            let cms: Api<ConfigMap> = Api::namespaced(client, &pod_namespace);
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
                    let ok = matches!(http::get(target, "/ready").await, Ok((200, _)));
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
