//! Keeps a test control plane up for manual use: poke it with kubectl or helm while
//! developing, or point `KUBECONFIG_TEST` of another test run at it.
//!
//! ```text
//! cargo test --test k8s_up -- --ignored --nocapture
//! ```
//!
//! It prints the kubeconfig and the binaries' folder, then holds the control plane (with the
//! pod simulator) for `FORESIGHT_K8S_UP_SECONDS` (default 3600) or until interrupted; the
//! watchdogs stop everything when this process ends.

mod support;

use std::time::{Duration, Instant};

use support::ControlPlane;

#[tokio::test]
#[ignore = "manual tool: holds a control plane until interrupted"]
async fn hold_a_control_plane_for_manual_use() {
    let control_plane = ControlPlane::shared();
    let client = control_plane.client().await.expect("admin client");
    let version = client
        .apiserver_version()
        .await
        .expect("API server version");
    let seconds: u64 = std::env::var("FORESIGHT_K8S_UP_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3600);
    println!(
        "Kubernetes {} is up for {seconds}s (Ctrl-C stops it).\n  export KUBECONFIG={}\n  \
         kubectl: {}\n  helm: {}",
        version.git_version,
        control_plane.kubeconfig().display(),
        control_plane.binary("kubectl").display(),
        control_plane.binary("helm").display(),
    );
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let diagnosis = control_plane.diagnose();
        assert!(diagnosis.is_empty(), "a component stopped:{diagnosis}");
    }
}
