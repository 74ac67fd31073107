//! The test control plane itself: a real kube-apiserver and kube-controller-manager, the pod
//! simulator, RBAC with a second identity, CRDs with server-side apply, and kubectl.
//!
//! Run with `cargo test --test control_plane` after `tests/k8s/build.sh` (or let the harness
//! call it); `KUBECONFIG_TEST=/path/to/kubeconfig` runs the same tests against a cluster.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;

use support::pod_sim::{BoxFuture, NODE_NAME, PodBackend, Started};
use support::{TestEnv, expect_forbidden, from_yaml, wait_for};

/// Upper bound for anything the controllers do; on a warm machine it takes seconds.
const SETTLE: Duration = Duration::from_secs(90);

/// Names the pod image; the simulator never pulls it, a real cluster (`KUBECONFIG_TEST`) does,
/// so set it there to something pullable such as `registry.k8s.io/pause:3.10`.
const IMAGE_ENV: &str = "FORESIGHT_TEST_POD_IMAGE";

fn pod_image() -> String {
    std::env::var(IMAGE_ENV).unwrap_or_else(|_| "registry.invalid/foresight/relayer:test".into())
}

fn deployment(name: &str, replicas: i32, readiness_gate: Option<&str>) -> Deployment {
    let gates = readiness_gate
        .map(|gate| json!([{ "conditionType": gate }]))
        .unwrap_or(json!([]));
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": {
                    "readinessGates": gates,
                    "containers": [{
                        "name": "relayer",
                        "image": pod_image(),
                        "ports": [{ "name": "http", "containerPort": 3000 }],
                    }],
                },
            },
        },
    }))
    .expect("deployment fixture")
}

async fn wait_available(api: &Api<Deployment>, name: &str, replicas: i32) {
    let available = await_condition(api.clone(), name, move |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref())
            .and_then(|s| s.available_replicas)
            == Some(replicas)
    });
    match tokio::time::timeout(SETTLE, available).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => panic!("watching deployment {name}: {error}"),
        Err(_) => {
            let status = api.get(name).await.ok().and_then(|d| d.status);
            panic!(
                "deployment {name} did not report {replicas} available replicas within \
                 {SETTLE:?}; status: {status:?}{}",
                support::ControlPlane::shared().diagnose()
            )
        }
    }
}

fn owned_by(meta_owner_uid: &str, obj: &impl ResourceExt) -> bool {
    obj.owner_references()
        .iter()
        .any(|o| o.uid == meta_owner_uid && o.controller == Some(true))
}

fn in_simulated_range(ip: &str) -> bool {
    // 198.18.0.0/15: the simulator's pod range, routed nowhere.
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => matches!(v4.octets(), [198, 18 | 19, _, _]),
        _ => false,
    }
}

#[tokio::test]
async fn deployment_becomes_available_and_deleting_it_collects_its_replica_set_and_pods() {
    let env = TestEnv::new("deployment-gc").await;
    let deployments = env.api::<Deployment>();
    let replica_sets = env.api::<ReplicaSet>();
    let pods = env.api::<Pod>();

    let created = deployments
        .create(&PostParams::default(), &deployment("relayer", 2, None))
        .await
        .expect("create deployment");
    let deployment_uid = created.uid().expect("server-assigned uid");
    wait_available(&deployments, "relayer", 2).await;

    // The real deployment and replicaset controllers made these, not the test.
    let rs_list = replica_sets
        .list(&ListParams::default())
        .await
        .expect("list replicasets");
    let rs = rs_list
        .items
        .iter()
        .find(|rs| owned_by(&deployment_uid, *rs))
        .expect("a ReplicaSet controlled by the Deployment");
    let rs_uid = rs.uid().expect("replicaset uid");
    let pod_list = pods.list(&ListParams::default()).await.expect("list pods");
    let owned: Vec<&Pod> = pod_list
        .items
        .iter()
        .filter(|p| owned_by(&rs_uid, *p))
        .collect();
    assert_eq!(owned.len(), 2, "two pods controlled by the ReplicaSet");
    for pod in &owned {
        let spec = pod.spec.as_ref().expect("pod spec");
        let status = pod.status.as_ref().expect("pod status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let ip = status.pod_ip.as_deref().expect("pod IP");
        if !env.control_plane.is_external() {
            assert_eq!(spec.node_name.as_deref(), Some(NODE_NAME));
            assert!(in_simulated_range(ip), "pod IP {ip} outside 198.18.0.0/15");
        }
    }
    if !env.control_plane.is_external() {
        // The API server reaches a simulated node's "kubelet" on loopback only, where nothing
        // listens: `kubectl logs` fails at once instead of dialling out.
        let error = env
            .kubectl(&["logs", &owned[0].name_any()])
            .expect_err("no kubelet serves logs");
        assert!(
            format!("{error:#}").contains("127.0.0.1:10250"),
            "dialled: {error:#}"
        );
    }

    deployments
        .delete("relayer", &DeleteParams::background())
        .await
        .expect("delete deployment");
    wait_for(
        "the garbage collector to remove ReplicaSet and Pods",
        SETTLE,
        || {
            let (replica_sets, pods) = (replica_sets.clone(), pods.clone());
            async move {
                let rs_left = replica_sets.list(&ListParams::default()).await?.items.len();
                let pods_left = pods.list(&ListParams::default()).await?.items.len();
                Ok((rs_left == 0 && pods_left == 0).then_some(()))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn pods_wait_for_their_readiness_gates_and_ready_pods_fill_endpoint_slices() {
    let env = TestEnv::new("readiness-gates").await;
    let gate = "foresight.dev/traffic-ready";
    let deployments = env.api::<Deployment>();
    let pods = env.api::<Pod>();
    deployments
        .create(&PostParams::default(), &deployment("gated", 1, Some(gate)))
        .await
        .expect("create deployment");
    let service = from_yaml(
        "metadata: { name: gated }\n\
         spec: { selector: { app: gated }, ports: [{ name: http, port: 80, targetPort: http }] }",
    );
    env.api::<k8s_openapi::api::core::v1::Service>()
        .create(&PostParams::default(), &service)
        .await
        .expect("create service");

    // Running with an address, but not Ready while its gate is unset.
    let pod = wait_for("the gated pod to run", SETTLE, || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=gated"))
                .await?;
            Ok(list.items.into_iter().find(|p| {
                p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            }))
        }
    })
    .await;
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status == "True")
    };
    assert_eq!(
        ready(&pod),
        Some(false),
        "a pod with an unset gate is not Ready"
    );
    let available = deployments
        .get("gated")
        .await
        .expect("get deployment")
        .status
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    assert_eq!(
        available, 0,
        "nothing is available while the gate is closed"
    );

    // Opening the gate is what a load balancer controller would do.
    let name = pod.name_any();
    pods.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Strategic(json!({ "status": { "conditions": [
            { "type": gate, "status": "True" },
        ]}})),
    )
    .await
    .expect("open the readiness gate");
    wait_available(&deployments, "gated", 1).await;

    let pod_ip = pods
        .get(&name)
        .await
        .expect("get pod")
        .status
        .and_then(|s| s.pod_ip)
        .expect("pod IP");
    let slices = env.api::<EndpointSlice>();
    wait_for("an EndpointSlice listing the ready pod", SETTLE, || {
        let (slices, pod_ip) = (slices.clone(), pod_ip.clone());
        async move {
            let list = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=gated"))
                .await?;
            let found = list
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter().flatten())
                .any(|e| {
                    e.addresses.contains(&pod_ip)
                        && e.conditions.as_ref().and_then(|c| c.ready) == Some(true)
                });
            Ok(found.then_some(()))
        }
    })
    .await;
}

#[tokio::test]
async fn the_simulator_schedules_only_pods_whose_node_selector_the_fake_node_matches() {
    let env = TestEnv::new("node-selector").await;
    if env.control_plane.is_external() {
        eprintln!("not applicable against KUBECONFIG_TEST: a real scheduler places pods there");
        return;
    }
    let pods = env.api::<Pod>();
    let pod = |name: &str, selector: serde_json::Value| -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": {
                "nodeSelector": selector,
                "containers": [{ "name": "main", "image": pod_image() }],
            },
        }))
        .expect("pod fixture")
    };
    // NB: created in this order, so by the time the simulator has run the second pod (one
    // watch stream, in order) it has already decided about the first.
    pods.create(
        &PostParams::default(),
        &pod("unschedulable", json!({ "disktype": "ssd" })),
    )
    .await
    .expect("create unschedulable pod");
    pods.create(
        &PostParams::default(),
        &pod("schedulable", json!({ "kubernetes.io/os": "linux" })),
    )
    .await
    .expect("create schedulable pod");
    let running = await_condition(pods.clone(), "schedulable", conditions::is_pod_running());
    tokio::time::timeout(SETTLE, running)
        .await
        .expect("schedulable pod running in time")
        .expect("watch the pod");

    let pending = pods.get("unschedulable").await.expect("get pod");
    let spec = pending.spec.expect("pod spec");
    assert_eq!(spec.node_name, None, "no node matches disktype=ssd");
    let phase = pending.status.and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Pending"));
}

/// A backend like the one a later test will use to run a real relayer for a chosen pod: it
/// claims the pods of one namespace, gives them its own address, and reports readiness when
/// told to.
struct ScriptedBackend {
    namespace: String,
    ip: IpAddr,
    ready: tokio::sync::watch::Sender<bool>,
    stopped: std::sync::Mutex<Vec<(String, Duration)>>,
}

impl PodBackend for ScriptedBackend {
    fn claims(&self, pod: &Pod) -> bool {
        pod.namespace().as_deref() == Some(self.namespace.as_str())
    }

    fn start(&self, _pod: &Pod) -> BoxFuture<anyhow::Result<Started>> {
        let started = Started {
            ip: self.ip,
            ready: self.ready.subscribe(),
        };
        Box::pin(async move { Ok(started) })
    }

    fn stop(&self, pod: &Pod, grace: Duration) -> BoxFuture<()> {
        if let Ok(mut stopped) = self.stopped.lock() {
            stopped.push((pod.name_any(), grace));
        }
        Box::pin(async {})
    }
}

#[tokio::test]
async fn a_registered_backend_decides_a_pods_address_readiness_and_stop() {
    let env = TestEnv::new("backend-hook").await;
    let Some(simulator) = env.control_plane.simulator() else {
        eprintln!("not applicable against KUBECONFIG_TEST: kubelets run pods there");
        return;
    };
    let backend = std::sync::Arc::new(ScriptedBackend {
        namespace: env.namespace.clone(),
        // Inside the simulator's range, which nothing contacts.
        ip: "198.19.255.7".parse().expect("address"),
        ready: tokio::sync::watch::channel(false).0,
        stopped: std::sync::Mutex::new(Vec::new()),
    });
    simulator.register(backend.clone());

    let pods = env.api::<Pod>();
    let pod: Pod = from_yaml(&format!(
        "metadata: {{ name: backed }}\n\
         spec: {{ terminationGracePeriodSeconds: 7, containers: [{{ name: main, image: {} }}] }}",
        pod_image()
    ));
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let ready_is = |want: bool| {
        move |p: Option<&Pod>| {
            p.and_then(|p| p.status.as_ref())
                .filter(|s| s.pod_ip.as_deref() == Some("198.19.255.7"))
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == if want { "True" } else { "False" })
        }
    };
    tokio::time::timeout(
        SETTLE,
        await_condition(pods.clone(), "backed", ready_is(false)),
    )
    .await
    .expect("running with the backend's address, not ready, in time")
    .expect("watch the pod");

    backend.ready.send_replace(true);
    tokio::time::timeout(
        SETTLE,
        await_condition(pods.clone(), "backed", ready_is(true)),
    )
    .await
    .expect("ready once the backend says so")
    .expect("watch the pod");

    let uid = pods
        .get("backed")
        .await
        .expect("get pod")
        .uid()
        .expect("uid");
    pods.delete("backed", &DeleteParams::default())
        .await
        .expect("delete pod");
    tokio::time::timeout(
        SETTLE,
        await_condition(pods.clone(), "backed", conditions::is_deleted(&uid)),
    )
    .await
    .expect("pod removed after its backend stopped")
    .expect("watch the pod");
    let stopped = backend.stopped.lock().expect("stop log").clone();
    assert_eq!(stopped, vec![("backed".to_owned(), Duration::from_secs(7))]);
}

#[tokio::test]
async fn kubectl_and_helm_reach_the_cluster_through_the_written_kubeconfig() {
    let env = TestEnv::new("kubectl").await;
    let config_map: ConfigMap = from_yaml("metadata: { name: listed-by-kubectl }\ndata: { a: b }");
    env.api::<ConfigMap>()
        .create(&PostParams::default(), &config_map)
        .await
        .expect("create configmap");

    let names = env
        .kubectl(&["get", "configmaps", "-o", "name"])
        .expect("kubectl get configmaps");
    assert!(
        names.lines().any(|l| l == "configmap/listed-by-kubectl"),
        "kubectl listed: {names}"
    );

    // helm, built by the same recipe, reaches the cluster through the same kubeconfig.
    let helm = env
        .control_plane
        .helm()
        .args(["list", "--namespace", &env.namespace, "--output", "json"])
        .output()
        .expect("run helm");
    assert!(
        helm.status.success(),
        "helm list: {}",
        String::from_utf8_lossy(&helm.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&helm.stdout).trim(), "[]");

    let version: serde_json::Value = serde_json::from_str(
        &env.kubectl(&["version", "-o", "json"])
            .expect("kubectl version"),
    )
    .expect("kubectl version JSON");
    let server = version["serverVersion"]["gitVersion"]
        .as_str()
        .expect("server gitVersion");
    assert!(server.starts_with("v1."), "server version {server}");
    if !env.control_plane.is_external() {
        assert_eq!(server, "v1.37.2", "the pinned release");
        let nodes = env
            .kubectl(&["get", "nodes", "-o", "name"])
            .expect("kubectl get nodes");
        assert!(
            nodes.contains(&format!("node/{NODE_NAME}")),
            "nodes: {nodes}"
        );
    }
}

#[tokio::test]
async fn restricted_identity_is_refused_a_verb_its_role_does_not_grant() {
    let env = TestEnv::new("rbac").await;
    let read_config_maps = PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["configmaps".into()]),
        verbs: vec!["get".into(), "list".into()],
        ..PolicyRule::default()
    };
    let (client, kubeconfig) = env
        .restricted_identity("reader", vec![read_config_maps])
        .await
        .expect("restricted identity");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &env.namespace);

    // RBAC grants are eventually consistent in the authorizer's cache: wait for the allowed
    // verb first, so the refusal below is about the verb and not about timing.
    wait_for("the Role to allow listing configmaps", SETTLE, || {
        let config_maps = config_maps.clone();
        async move {
            match config_maps.list(&ListParams::default()).await {
                Ok(_) => Ok(Some(())),
                Err(kube::Error::Api(s)) if s.code == 403 => Ok(None),
                Err(error) => Err(error.into()),
            }
        }
    })
    .await;

    let config_map: ConfigMap = from_yaml("metadata: { name: not-allowed }");
    let status = expect_forbidden(
        config_maps
            .create(&PostParams::default(), &config_map)
            .await,
        "creating a configmap as a get/list-only identity",
    );
    let who = format!("system:serviceaccount:{}:reader", env.namespace);
    assert!(
        status.message.contains(&who),
        "names the identity: {}",
        status.message
    );
    assert!(
        status
            .message
            .contains("cannot create resource \"configmaps\""),
        "names the verb and resource: {}",
        status.message
    );
    assert_eq!(status.reason, "Forbidden");

    // The same identity reaches nothing outside its namespace.
    let elsewhere: Api<ConfigMap> = Api::namespaced(client, "default");
    expect_forbidden(
        elsewhere.list(&ListParams::default()).await,
        "listing configmaps in a namespace without a RoleBinding",
    );

    // And a real client sees the same refusal through the identity's kubeconfig.
    let output = env
        .control_plane
        .kubectl_as(&kubeconfig)
        .args(["--namespace", &env.namespace, "create", "configmap", "nope"])
        .output()
        .expect("run kubectl");
    assert!(!output.status.success(), "kubectl create must be refused");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("forbidden"), "kubectl said: {stderr}");
}

#[tokio::test]
async fn a_certificate_user_gets_what_its_group_is_bound_to_and_nothing_more() {
    let env = TestEnv::new("user-cert").await;
    if env.control_plane.pki().is_none() {
        eprintln!("not applicable against KUBECONFIG_TEST: needs the local cluster CA");
        return;
    }
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = from_yaml(
        "metadata: { name: viewers }\n\
         roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view }\n\
         subjects: [{ apiGroup: rbac.authorization.k8s.io, kind: Group, name: foresight-viewers }]",
    );
    env.api::<k8s_openapi::api::rbac::v1::RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .expect("bind the group to the view ClusterRole");
    let (client, kubeconfig) = env
        .user_identity("jane@example.test", Some("foresight-viewers"))
        .await
        .expect("user identity");
    let config_maps: Api<ConfigMap> = Api::namespaced(client, &env.namespace);
    wait_for("the group binding to allow listing", SETTLE, || {
        let config_maps = config_maps.clone();
        async move {
            match config_maps.list(&ListParams::default()).await {
                Ok(_) => Ok(Some(())),
                Err(kube::Error::Api(s)) if s.code == 403 => Ok(None),
                Err(error) => Err(error.into()),
            }
        }
    })
    .await;
    let status = expect_forbidden(
        config_maps
            .create(
                &PostParams::default(),
                &from_yaml("metadata: { name: nope }"),
            )
            .await,
        "a viewer creating a configmap",
    );
    assert!(
        status.message.contains("User \"jane@example.test\""),
        "names the user: {}",
        status.message
    );
    let whoami = env
        .control_plane
        .kubectl_as(&kubeconfig)
        .args(["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"])
        .output()
        .expect("run kubectl auth whoami");
    let groups = String::from_utf8_lossy(&whoami.stdout);
    assert!(groups.contains("foresight-viewers"), "groups: {groups}");
}

#[tokio::test]
async fn crd_applied_with_server_side_apply_becomes_established_and_serves_its_resource() {
    let env = TestEnv::new("crd").await;
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "widgets.harness.foresight.dev" },
        "spec": {
            "group": "harness.foresight.dev",
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget" },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": { "size": { "type": "integer", "minimum": 1 } },
                    }},
                }},
            }],
        },
    }))
    .expect("crd fixture");
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let apply = PatchParams::apply("foresight-tests").force();
    crds.patch("widgets.harness.foresight.dev", &apply, &Patch::Apply(&crd))
        .await
        .expect("server-side apply of the CRD");
    let established = await_condition(
        crds.clone(),
        "widgets.harness.foresight.dev",
        conditions::is_crd_established(),
    );
    tokio::time::timeout(SETTLE, established)
        .await
        .expect("CRD established in time")
        .expect("watch the CRD");

    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("harness.foresight.dev", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(env.client.clone(), &env.namespace, &resource);
    let widget = json!({
        "apiVersion": "harness.foresight.dev/v1",
        "kind": "Widget",
        "metadata": { "name": "first" },
        "spec": { "size": 3 },
    });
    // Discovery of a just-established CRD can lag a moment behind the condition.
    wait_for("the new resource to be served", SETTLE, || {
        let (widgets, widget) = (widgets.clone(), widget.clone());
        async move {
            match widgets
                .patch(
                    "first",
                    &PatchParams::apply("foresight-tests"),
                    &Patch::Apply(&widget),
                )
                .await
            {
                Ok(obj) => Ok(Some(obj)),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                Err(error) => Err(error.into()),
            }
        }
    })
    .await;
    let listed = widgets
        .list(&ListParams::default())
        .await
        .expect("list widgets");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].data["spec"]["size"], 3);

    // The schema is enforced by the API server, which a fake client could not show.
    let invalid = json!({
        "apiVersion": "harness.foresight.dev/v1",
        "kind": "Widget",
        "metadata": { "name": "invalid" },
        "spec": { "size": 0 },
    });
    match widgets
        .patch(
            "invalid",
            &PatchParams::apply("foresight-tests"),
            &Patch::Apply(&invalid),
        )
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{}", status.message);
            assert!(status.message.contains("spec.size"), "{}", status.message);
        }
        other => panic!("a widget with size 0 must be rejected, got {other:?}"),
    }
    // And kubectl sees the new resource type too.
    let names = env
        .kubectl(&["get", "widgets", "-o", "name"])
        .expect("kubectl get widgets");
    assert_eq!(names.trim(), "widget.harness.foresight.dev/first");
}

#[test]
fn missing_binaries_fail_with_a_message_naming_the_build_script() {
    let empty = tempfile::tempdir().expect("temp dir");
    let error = support::binaries::Binaries::in_dir(empty.path())
        .expect_err("an empty folder holds no binaries");
    assert!(error.contains("tests/k8s/build.sh"), "{error}");
    assert!(error.contains("kube-apiserver"), "{error}");
    assert!(error.contains("FORESIGHT_K8S_BIN"), "{error}");
}
