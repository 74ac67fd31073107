//! The two OCI images, built by `scripts/images.sh` (buildah, no daemon) and run from their
//! archives by `scripts/image-run.sh` (the layers unpacked, the root filesystem mounted
//! read-only, the entrypoint run as the image's user): they are tagged with the crate
//! version, labelled, hold one static binary and nothing else to run, are under 30 MB; the
//! relayer image serves `/health` and the README's quick-start walk-through; the operator
//! image, given the test control plane's kubeconfig, reconciles a RelayerDeployment to
//! Available. The chart, the sample and the README name exactly the built tags.
//!
//! Needs root (mount namespace, chroot), like the cutover tests.

mod support;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use kube::ResourceExt;
use relayer_operator::crd::RelayerDeployment;
use serde_json::Value;
use support::fixtures::rd;
use support::operator::OperatorProcess;
use support::{TestEnv, http, wait_for};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The README's and the chart's promise.
const MAX_IMAGE_BYTES: u64 = 30 * 1000 * 1000;
const SETTLE: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One image as its archive holds it.
struct Image {
    name: &'static str,
    archive: PathBuf,
    /// The archive's `index.json`.
    index: Value,
    /// The image configuration (`config` of the config blob).
    config: Value,
    /// The files of its layers, unpacked: path → (mode, size).
    files: BTreeMap<String, (u32, u64)>,
    /// Where the layers were unpacked (kept for the test's life).
    rootfs: tempfile::TempDir,
}

impl Image {
    fn tag(&self) -> String {
        format!("ghcr.io/foresight/{}:{VERSION}", self.name)
    }

    fn label(&self, key: &str) -> &str {
        self.config["Labels"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no label {key} in {:#}", self.name, self.config))
    }

    /// `scripts/image-run.sh <archive> args…`, not started yet.
    fn run(&self, args: &[&str]) -> Command {
        let mut command = Command::new(repo().join("scripts/image-run.sh"));
        command.arg(&self.archive).args(args);
        command
    }
}

/// Both images, built once per test binary by `scripts/images.sh` from this checkout.
fn images() -> &'static [Image; 2] {
    static IMAGES: OnceLock<[Image; 2]> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let status = Command::new(repo().join("scripts/images.sh"))
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .expect("run scripts/images.sh");
        assert!(status.success(), "scripts/images.sh failed: {status}");
        ["relayer", "relayer-operator"].map(read_image)
    })
}

fn read_image(name: &'static str) -> Image {
    let archive = repo().join(format!("target/images/{name}.oci.tar"));
    let unpacked = tempfile::tempdir().expect("a scratch folder");
    let layout = unpacked.path().join("layout");
    std::fs::create_dir(&layout).expect("layout folder");
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout),
    );
    let blob = |digest: &str| -> Value {
        let (algorithm, hex) = digest.split_once(':').expect("a digest");
        let text = std::fs::read(layout.join("blobs").join(algorithm).join(hex)).expect("a blob");
        serde_json::from_slice(&text).expect("a JSON blob")
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json"))
            .expect("index JSON");
    let manifest = blob(
        index["manifests"][0]["digest"]
            .as_str()
            .expect("manifest digest"),
    );
    let config = blob(
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    )["config"]
        .clone();
    let rootfs = tempfile::tempdir().expect("a rootfs folder");
    for layer in manifest["layers"].as_array().expect("layers") {
        let digest = layer["digest"].as_str().expect("layer digest");
        let (algorithm, hex) = digest.split_once(':').expect("a digest");
        let gzip = layer["mediaType"]
            .as_str()
            .is_some_and(|m| m.ends_with("+gzip"));
        run_ok(
            Command::new("tar")
                .arg(if gzip { "-xzf" } else { "-xf" })
                .arg(layout.join("blobs").join(algorithm).join(hex))
                .arg("-C")
                .arg(rootfs.path()),
        );
    }
    let mut files = BTreeMap::new();
    walk(rootfs.path(), rootfs.path(), &mut files);
    Image {
        name,
        archive,
        index,
        config,
        files,
        rootfs,
    }
}

fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, (u32, u64)>) {
    for entry in std::fs::read_dir(dir).expect("read a folder") {
        let path = entry.expect("a folder entry").path();
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        if meta.is_dir() {
            walk(root, &path, files);
        } else {
            let relative = path.strip_prefix(root).expect("inside the root");
            files.insert(
                format!("/{}", relative.display()),
                (meta.permissions().mode(), meta.len()),
            );
        }
    }
}

fn run_ok(command: &mut Command) -> String {
    let out = command.output().expect("start a command");
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether an ELF file asks for a program interpreter (a dynamic loader): a static binary
/// has no `PT_INTERP` program header.
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF", "an ELF file");
    assert_eq!(elf[4], 2, "64-bit ELF");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let u64_at = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&elf[at..at + 8]);
        u64::from_le_bytes(bytes) as usize
    };
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes([elf[at], elf[at + 1], elf[at + 2], elf[at + 3]]) == 3
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The uid a running process has (the first of `Uid:` in its status).
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
        .expect("a Uid line")
}

/// Whether the root filesystem a running process sees is mounted read-only.
fn root_is_read_only(pid: u32) -> bool {
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("its mounts");
    // NB: the last mount on "/" is the one the process sees; field 5 is the mount point and
    // field 6 its options.
    let root = mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .rfind(|f| f.len() > 5 && f[4] == "/")
        .expect("a root mount");
    root[5].split(',').any(|o| o == "ro")
}

/// A child killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn chart_sample_and_readme_name_the_built_tags() {
    let chart = std::fs::read_to_string(repo().join("charts/relayer-operator/Chart.yaml"))
        .expect("Chart.yaml");
    let chart: serde_yaml::Value = serde_yaml::from_str(&chart).expect("Chart YAML");
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(VERSION),
        "the chart's appVersion"
    );

    let values = std::fs::read_to_string(repo().join("charts/relayer-operator/values.yaml"))
        .expect("values.yaml");
    let values: serde_yaml::Value = serde_yaml::from_str(&values).expect("values YAML");
    assert_eq!(
        values["image"]["repository"].as_str(),
        Some("ghcr.io/foresight/relayer-operator"),
        "the chart's operator image"
    );
    // An empty tag means the appVersion (templates/deployment.yaml).
    assert_eq!(
        values["image"]["tag"].as_str(),
        Some(""),
        "the chart's operator tag"
    );
    // What the chart renders for the operator's pod, with the default values.
    let helm = support::binaries::Binaries::locate()
        .unwrap_or_else(|e| panic!("{e}"))
        .path("helm");
    let rendered = run_ok(
        Command::new(helm)
            .args(["template", "relayer-operator"])
            .arg(repo().join("charts/relayer-operator"))
            .args(["--show-only", "templates/deployment.yaml"]),
    );
    let deployment: serde_yaml::Value = serde_yaml::from_str(&rendered).expect("rendered YAML");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"].as_str(),
        Some(format!("ghcr.io/foresight/relayer-operator:{VERSION}").as_str()),
        "the image of the chart's operator pod"
    );

    let sample = std::fs::read_to_string(repo().join("crds/samples/relayerdeployment.yaml"))
        .expect("the sample");
    let sample: serde_yaml::Value = serde_yaml::from_str(&sample).expect("sample YAML");
    let relayer = format!("ghcr.io/foresight/relayer:{VERSION}");
    assert_eq!(
        sample["spec"]["image"].as_str(),
        Some(relayer.as_str()),
        "the sample's image"
    );

    // Every image reference in these files is one of the two built tags.
    let built = [
        relayer,
        format!("ghcr.io/foresight/relayer-operator:{VERSION}"),
    ];
    let mut seen = 0;
    for file in [
        "README.md",
        "charts/relayer-operator/values.yaml",
        "charts/relayer-operator/Chart.yaml",
        "crds/samples/relayerdeployment.yaml",
    ] {
        let text = std::fs::read_to_string(repo().join(file)).expect(file);
        for (at, _) in text.match_indices("ghcr.io/foresight/") {
            let reference: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "/.:-_@".contains(*c))
                .collect();
            let reference = reference.trim_end_matches(['.', ':']);
            // A repository without a tag (values.yaml's image.repository) is fine; a tag must
            // be a built one.
            if reference.contains(':') {
                assert!(
                    built.iter().any(|b| b == reference),
                    "{file} names {reference}, which scripts/images.sh does not build ({built:?})"
                );
                seen += 1;
            }
        }
    }
    assert!(
        seen >= 3,
        "the README, the values and the sample name the tags ({seen} seen)"
    );
}

#[test]
fn the_images_are_tagged_labelled_non_root_static_and_small() {
    let revision = run_ok(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(repo()),
    );
    let revision = revision.trim();
    for image in images() {
        let what = image.name;
        assert_eq!(
            image.index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
                .as_str(),
            Some(image.tag().as_str()),
            "{what}: the archive's reference (what `kind load image-archive` names it)"
        );
        assert_eq!(
            image.label("org.opencontainers.image.version"),
            VERSION,
            "{what}"
        );
        assert_eq!(
            image.label("org.opencontainers.image.source"),
            "https://github.com/foresight/relayer-operator",
            "{what}"
        );
        assert_eq!(
            image.label("org.opencontainers.image.licenses"),
            env!("CARGO_PKG_LICENSE"),
            "{what}"
        );
        let labelled = image.label("org.opencontainers.image.revision");
        assert!(
            labelled == revision || labelled == format!("{revision}-dirty"),
            "{what}: revision label {labelled}, HEAD {revision}"
        );
        assert_eq!(
            image.config["User"].as_str(),
            Some("65532:65532"),
            "{what}: user"
        );
        let binary = format!("/usr/local/bin/{}", image.name);
        assert_eq!(
            image.config["Entrypoint"],
            serde_json::json!([binary]),
            "{what}: entrypoint"
        );

        // One static binary, the CA bundle and the user's passwd entry: no shell, no loader.
        let names: Vec<&str> = image.files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "/etc/group",
                "/etc/passwd",
                "/etc/ssl/certs/ca-certificates.crt",
                binary.as_str()
            ],
            "{what}: the files of the image"
        );
        let elf = std::fs::read(image.rootfs.path().join(&binary[1..])).expect("the binary");
        assert!(
            !has_interpreter(&elf),
            "{what}: {binary} is linked statically"
        );
        assert!(
            image.files[&binary].0 & 0o005 == 0o005,
            "{what}: {binary} is readable and executable by uid 65532"
        );
        let passwd =
            std::fs::read_to_string(image.rootfs.path().join("etc/passwd")).expect("passwd");
        assert!(
            passwd
                .lines()
                .any(|l| l.starts_with("nonroot:x:65532:65532:")),
            "{what}: {passwd}"
        );

        let unpacked: u64 = image.files.values().map(|(_, size)| size).sum();
        let archived = std::fs::metadata(&image.archive)
            .expect("the archive")
            .len();
        eprintln!(
            "image {}: {unpacked} bytes unpacked ({:.1} MB), archive {archived} bytes ({:.1} MB)",
            image.tag(),
            unpacked as f64 / 1e6,
            archived as f64 / 1e6
        );
        assert!(
            unpacked < MAX_IMAGE_BYTES,
            "{what}: {unpacked} bytes unpacked"
        );
        assert!(
            archived < MAX_IMAGE_BYTES,
            "{what}: {archived} bytes archived"
        );

        let printed = run_ok(&mut image.run(&["--version"]));
        assert_eq!(
            printed.trim(),
            format!("{} {VERSION}", image.name),
            "{what}: --version"
        );
    }
}

#[tokio::test]
async fn the_relayer_image_serves_health_and_the_quick_start_read_only_as_65532() {
    let image = &images()[0];
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let token = "image-admin-token-0123456789";
    let relayer = Running(
        image
            .run(&[])
            .env("RELAYER_LISTEN", addr.to_string())
            .env("RELAYER_ADMIN_TOKEN", token)
            .env("RELAYER_SHUTDOWN__READINESS_DELAY_MS", "0")
            .stdin(Stdio::null())
            .spawn()
            .expect("start the relayer image"),
    );
    wait_for(
        "the relayer from its image to be ready",
        SETTLE,
        || async move { Ok(http::get_body(addr, "/ready").await.ok().map(|_| ())) },
    )
    .await;
    let pid = relayer.0.id();
    assert_eq!(uid_of(pid), 65532, "the relayer runs as the image's user");
    assert!(root_is_read_only(pid), "its root filesystem is read-only");
    let (status, text) = http::exchange(addr, "GET", "/health", &[], &[], Duration::from_secs(5))
        .await
        .expect("GET /health");
    assert_eq!(status, 200, "{text}");

    let walk = Command::new(repo().join("scripts/quickstart.sh"))
        .env("RELAYER", format!("http://{addr}"))
        .env("RELAYER_ADMIN_TOKEN", token)
        .output()
        .expect("run the quick start");
    assert!(
        walk.status.success(),
        "the README's walk-through against the image: {}\n{}",
        String::from_utf8_lossy(&walk.stdout),
        String::from_utf8_lossy(&walk.stderr)
    );
}

/// The admin kubeconfig with its certificate files copied into `dir` (readable by the image's
/// user) and named by their paths under `mount`, where the image will see `dir`.
fn kubeconfig_for_the_image(env: &TestEnv, dir: &Path, mount: &str) {
    let text = std::fs::read_to_string(env.control_plane.kubeconfig()).expect("the kubeconfig");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    let mut copied = 0;
    let mut move_file = |value: &mut serde_yaml::Value| {
        if let Some(path) = value.as_str().map(PathBuf::from) {
            let name = format!("file-{copied}");
            copied += 1;
            std::fs::copy(&path, dir.join(&name)).expect("copy a kubeconfig file");
            std::fs::set_permissions(dir.join(&name), std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
            *value = format!("{mount}/{name}").into();
        }
    };
    for list in ["clusters", "users"] {
        for entry in config[list].as_sequence_mut().expect("a list").iter_mut() {
            let inner = if list == "clusters" {
                "cluster"
            } else {
                "user"
            };
            for key in ["certificate-authority", "client-certificate", "client-key"] {
                if let Some(value) = entry[inner].get_mut(key) {
                    move_file(value);
                }
            }
        }
    }
    std::fs::write(
        dir.join("config"),
        serde_yaml::to_string(&config).expect("YAML"),
    )
    .expect("write the kubeconfig");
    std::fs::set_permissions(dir.join("config"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[tokio::test]
async fn the_operator_image_reconciles_a_relayer_deployment_to_available() {
    let image = &images()[1];
    let env = TestEnv::new("image-operator").await;
    env.install_crds(&repo().join("crds")).await;
    let kube = tempfile::tempdir().expect("a folder for the kubeconfig");
    kubeconfig_for_the_image(&env, kube.path(), "/etc/kube");

    let mut command = image.run(&[]);
    command
        .env(
            "IMAGE_RUN_MOUNTS",
            format!("{}:/etc/kube", kube.path().display()),
        )
        .env("KUBECONFIG", "/etc/kube/config");
    let operator = OperatorProcess::launch_command(&env, "image", command)
        .args(["--namespace", &env.namespace])
        .args(["--leader-election=false"])
        .args(["--pod-networks", support::operator::POD_NETWORK])
        .spawn();
    wait_for(
        "the operator from its image to serve /ready",
        SETTLE,
        || async {
            Ok(http::get_body(operator.metrics, "/ready")
                .await
                .ok()
                .map(|_| ()))
        },
    )
    .await;
    assert_eq!(
        uid_of(operator.pid()),
        65532,
        "the operator runs as the image's user"
    );
    assert!(
        root_is_read_only(operator.pid()),
        "its root filesystem is read-only"
    );

    rd("from-image")
        .image(&format!("ghcr.io/foresight/relayer:{VERSION}"))
        .apply(&env, "images-test")
        .await;
    let api = env.api::<RelayerDeployment>();
    let available = wait_for("the RelayerDeployment to become Available", SETTLE, || {
        let api = api.clone();
        async move {
            let rd = api.get("from-image").await?;
            let available = rd.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Available" && c.status == "True")
            });
            Ok(available.then_some(rd))
        }
    })
    .await;
    assert_eq!(
        available
            .status
            .as_ref()
            .and_then(|s| s.active_color.as_ref())
            .map(|c| c.as_str()),
        Some("blue"),
        "{}",
        available.name_any()
    );
    let metrics = operator.scrape().await.expect("the operator's metrics");
    assert!(
        metrics.value("relayer_operator_reconcile_total") >= 1.0,
        "{}",
        operator.log()
    );
}
