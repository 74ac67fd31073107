//! The krew package of the `kubectl relayer` plugin, installed by krew itself: `scripts/krew.sh`
//! packs the static kubectl-relayer with LICENSE and fills `krew/relayer.yaml.tmpl` with the
//! crate version and the archive's sha256; krew v0.4.3 (built from its Go module by
//! `tests/k8s/build-krew.sh`) installs it from that manifest and archive into a scratch
//! `KREW_ROOT`, and the installed plugin reports the crate version. krew refuses an archive
//! whose sha256 is not the manifest's, and one that lacks a file the manifest names. Packing
//! twice gives the same bytes. `krew list` shows the installed plugin and `krew uninstall`
//! removes it.
//!
//! Run with `cargo test --test krew`. Offline: `--archive` replaces the manifest's download URI,
//! `--manifest` needs no plugin index (`list` and `uninstall` get an empty local git repository
//! as one), and the upgrade check is off.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_yaml::Value;
use sha2::{Digest, Sha256};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the two scripts produced: the archive and manifest, and the folder holding krew.
#[derive(Debug)]
struct Built {
    archive: PathBuf,
    manifest: PathBuf,
    krew: PathBuf,
}

/// Runs a script of the repository (progress on the inherited stderr) and returns its stdout
/// lines, or why it failed.
fn run_script(script: &str) -> Result<Vec<String>, String> {
    let output = Command::new("bash")
        .arg(repo().join(script))
        .current_dir(repo())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|error| format!("could not run {script}: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "{script} failed ({}); see its messages above",
            output.status
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The archive and manifest from `scripts/krew.sh` (it prints the archive, then the manifest).
fn pack() -> Result<(PathBuf, PathBuf), String> {
    let lines = run_script("scripts/krew.sh")?;
    match lines.as_slice() {
        [.., archive, manifest] => Ok((PathBuf::from(archive), PathBuf::from(manifest))),
        _ => Err(format!(
            "scripts/krew.sh printed {lines:?}, not the archive and manifest paths"
        )),
    }
}

fn build() -> Result<Built, String> {
    let (archive, manifest) = pack()?;
    let krew_dir = run_script("tests/k8s/build-krew.sh")?
        .pop()
        .ok_or("tests/k8s/build-krew.sh printed no bin folder")?;
    Ok(Built {
        archive,
        manifest,
        krew: PathBuf::from(krew_dir).join("krew"),
    })
}

/// Built once per test binary; every test fails with the same message if the scripts did.
fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(built) => built,
        Err(message) => panic!("{message}"),
    }
}

fn sha256_hex(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    hex::encode(Sha256::digest(bytes))
}

fn read_manifest(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    let mut at = value;
    for key in path {
        at = &at[*key];
    }
    at.as_str()
        .unwrap_or_else(|| panic!("{} is not a string in {value:?}", path.join(".")))
}

/// A scratch krew home: `KREW_ROOT`, `HOME` and the temporary folder all inside one tempdir.
struct KrewHome {
    dir: tempfile::TempDir,
}

impl KrewHome {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["home", "tmp"] {
            fs::create_dir_all(dir.path().join(sub)).expect("create scratch folder");
        }
        Self { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("krew")
    }

    fn plugin(&self) -> PathBuf {
        self.root().join("bin/kubectl-relayer")
    }

    fn receipt(&self) -> PathBuf {
        self.root().join("receipts/relayer.yaml")
    }

    /// Runs krew in this home, offline: no upgrade check, its bin folder on PATH (so it does
    /// not print setup instructions), no standard input.
    fn krew(&self, args: &[&str]) -> Output {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.root().join("bin")];
        paths.extend(std::env::split_paths(&path));
        Command::new(&built().krew)
            .args(args)
            .env("KREW_ROOT", self.root())
            .env("HOME", self.dir.path().join("home"))
            .env("TMPDIR", self.dir.path().join("tmp"))
            .env("KREW_NO_UPGRADE_CHECK", "1")
            .env("PATH", std::env::join_paths(paths).expect("PATH"))
            .stdin(Stdio::null())
            .output()
            .expect("run krew")
    }

    /// An empty git repository as the default plugin index (what `krew update` would clone),
    /// made locally: the commands other than `install --manifest` refuse to run without one.
    fn empty_index(&self) {
        let index = self.root().join("index/default");
        let init = Command::new("git")
            .args(["init", "--quiet"])
            .arg(&index)
            .env("HOME", self.dir.path().join("home"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run git (needed for an empty krew index)");
        assert!(init.status.success(), "git init: {}", describe(&init));
    }

    fn install(&self, manifest: &Path, archive: &Path) -> Output {
        self.krew(&[
            "install",
            &format!("--manifest={}", manifest.display()),
            &format!("--archive={}", archive.display()),
        ])
    }
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Writes `manifest` with its sha256 replaced by `sha256`, into `dir`, keeping the file name
/// (krew wants the file named after the plugin).
fn manifest_with_sha256(manifest: &Path, sha256: &str, dir: &Path) -> PathBuf {
    let text = fs::read_to_string(manifest).expect("read manifest");
    let original = str_at(
        &read_manifest(manifest)["spec"]["platforms"][0],
        &["sha256"],
    )
    .to_owned();
    assert_eq!(text.matches(&original).count(), 1, "one sha256 in {text}");
    let path = dir.join("relayer.yaml");
    fs::write(&path, text.replace(&original, sha256)).expect("write manifest");
    path
}

#[test]
fn manifest_is_filled_from_the_crate_version_and_the_archive() {
    let built = built();
    let text = fs::read_to_string(&built.manifest).expect("read manifest");
    assert!(!text.contains('@'), "a placeholder is left in:\n{text}");
    let manifest = read_manifest(&built.manifest);

    assert_eq!(
        str_at(&manifest, &["apiVersion"]),
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(str_at(&manifest, &["kind"]), "Plugin");
    assert_eq!(str_at(&manifest, &["metadata", "name"]), "relayer");
    assert_eq!(
        str_at(&manifest, &["spec", "version"]),
        format!("v{VERSION}")
    );
    assert_eq!(
        str_at(&manifest, &["spec", "homepage"]),
        "https://github.com/foresight/relayer-operator"
    );
    let description = str_at(&manifest, &["spec", "description"]);
    for command in [
        "status",
        "--watch",
        "set-image",
        "promote",
        "abort",
        "retry",
        "pause",
        "resume",
        "rollback",
        "--to-revision",
        "history",
        "-o json|yaml",
    ] {
        assert!(
            description.contains(command),
            "the description does not mention {command}:\n{description}"
        );
    }

    let platforms = manifest["spec"]["platforms"]
        .as_sequence()
        .expect("spec.platforms is a list");
    assert_eq!(platforms.len(), 1, "one platform: {platforms:?}");
    let platform = &platforms[0];
    assert_eq!(
        str_at(platform, &["selector", "matchLabels", "os"]),
        "linux"
    );
    assert_eq!(
        str_at(platform, &["selector", "matchLabels", "arch"]),
        "amd64"
    );
    assert_eq!(str_at(platform, &["bin"]), "kubectl-relayer");
    let archive_name = format!("kubectl-relayer_v{VERSION}_linux_amd64.tar.gz");
    assert_eq!(
        str_at(platform, &["uri"]),
        format!(
            "https://github.com/foresight/relayer-operator/releases/download/v{VERSION}/{archive_name}"
        )
    );
    assert_eq!(
        built.archive.file_name().and_then(|name| name.to_str()),
        Some(archive_name.as_str())
    );
    assert_eq!(str_at(platform, &["sha256"]), sha256_hex(&built.archive));
    let files: Vec<(&str, &str)> = platform["files"]
        .as_sequence()
        .expect("files is a list")
        .iter()
        .map(|op| (str_at(op, &["from"]), str_at(op, &["to"])))
        .collect();
    assert_eq!(files, [("kubectl-relayer", "."), ("LICENSE", ".")]);

    // The archive: exactly the two files, owned by 0:0.
    let listing = Command::new("tar")
        .args(["-tvzf"])
        .arg(&built.archive)
        .arg("--numeric-owner")
        .output()
        .expect("run tar");
    assert!(listing.status.success(), "{}", describe(&listing));
    let listing = String::from_utf8_lossy(&listing.stdout);
    let entries: Vec<(&str, &str)> = listing
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields[1], fields[fields.len() - 1])
        })
        .collect();
    assert_eq!(
        entries,
        [("0/0", "LICENSE"), ("0/0", "kubectl-relayer")],
        "{listing}"
    );
}

#[test]
fn packing_twice_gives_the_same_archive() {
    let built = built();
    let first = sha256_hex(&built.archive);
    let (archive, manifest) = pack().unwrap_or_else(|message| panic!("{message}"));
    assert_eq!(archive, built.archive);
    assert_eq!(sha256_hex(&archive), first, "the archive's bytes changed");
    assert_eq!(
        str_at(
            &read_manifest(&manifest)["spec"]["platforms"][0],
            &["sha256"]
        ),
        first
    );
}

#[test]
fn krew_installs_the_plugin_and_it_reports_the_crate_version() {
    let built = built();
    let home = KrewHome::new();
    let install = home.install(&built.manifest, &built.archive);
    assert!(
        install.status.success(),
        "krew install: {}",
        describe(&install)
    );
    let stderr = String::from_utf8_lossy(&install.stderr);
    assert!(
        stderr.contains("Installed plugin: relayer"),
        "{}",
        describe(&install)
    );

    // krew links bin/kubectl-relayer to the binary in its store, next to the LICENSE it moved.
    let store = home.root().join(format!("store/relayer/v{VERSION}"));
    let target = fs::read_link(home.plugin()).expect("bin/kubectl-relayer is a symlink");
    assert_eq!(target, store.join("kubectl-relayer"));
    assert_eq!(
        fs::read(store.join("LICENSE")).expect("installed LICENSE"),
        fs::read(repo().join("LICENSE")).expect("repository LICENSE")
    );
    assert!(home.receipt().is_file(), "no receipt for relayer");

    let version = Command::new(home.plugin())
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .expect("run the installed kubectl-relayer");
    assert!(version.status.success(), "{}", describe(&version));
    // NB: clap names the command `kubectl relayer`, as kubectl users type it.
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("kubectl relayer {VERSION}")
    );

    // The receipt krew keeps: this manifest, from no index ("detached").
    let receipt = read_manifest(&home.receipt());
    assert_eq!(
        str_at(&receipt, &["spec", "version"]),
        format!("v{VERSION}")
    );
    assert_eq!(str_at(&receipt, &["status", "source", "name"]), "detached");

    // `list` and `uninstall` want a plugin index; an empty local repository is one.
    home.empty_index();
    let list = home.krew(&["list"]);
    assert!(list.status.success(), "krew list: {}", describe(&list));
    assert_eq!(
        String::from_utf8_lossy(&list.stdout).trim(),
        "detached/relayer"
    );
    let uninstall = home.krew(&["uninstall", "relayer"]);
    assert!(
        uninstall.status.success(),
        "krew uninstall: {}",
        describe(&uninstall)
    );
    assert!(
        !home.plugin().exists(),
        "bin/kubectl-relayer left after uninstall"
    );
    assert!(!store.exists(), "{} left after uninstall", store.display());
    assert!(!home.receipt().exists(), "receipt left after uninstall");
}

#[test]
fn krew_refuses_an_archive_whose_sha256_is_not_the_manifests() {
    let built = built();
    let home = KrewHome::new();
    let good = sha256_hex(&built.archive);
    // One hex digit changed: still a well-formed sha256, so only the checksum can refuse it.
    let flipped = if good.starts_with('0') { "1" } else { "0" };
    let wrong = format!("{flipped}{}", &good[1..]);
    let manifest = manifest_with_sha256(&built.manifest, &wrong, home.dir.path());

    let install = home.install(&manifest, &built.archive);
    assert!(
        !install.status.success(),
        "krew install accepted a wrong sha256: {}",
        describe(&install)
    );
    let stderr = String::from_utf8_lossy(&install.stderr);
    assert!(
        stderr.contains("checksum does not match") && stderr.contains(&wrong),
        "{}",
        describe(&install)
    );
    assert_nothing_installed(&home);
}

#[test]
fn krew_refuses_an_archive_without_the_license() {
    let built = built();
    let home = KrewHome::new();
    // The same binary packed alone, with the manifest's sha256 made to match that archive.
    let unpacked = home.dir.path().join("unpacked");
    fs::create_dir_all(&unpacked).expect("mkdir");
    let untar = Command::new("tar")
        .arg("-xzf")
        .arg(&built.archive)
        .arg("-C")
        .arg(&unpacked)
        .arg("kubectl-relayer")
        .output()
        .expect("run tar");
    assert!(untar.status.success(), "{}", describe(&untar));
    let archive = home.dir.path().join("no-license.tar.gz");
    let tar = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpacked)
        .arg("kubectl-relayer")
        .output()
        .expect("run tar");
    assert!(tar.status.success(), "{}", describe(&tar));
    let manifest = manifest_with_sha256(&built.manifest, &sha256_hex(&archive), home.dir.path());

    let install = home.install(&manifest, &archive);
    assert!(
        !install.status.success(),
        "krew install accepted an archive without LICENSE: {}",
        describe(&install)
    );
    let stderr = String::from_utf8_lossy(&install.stderr);
    assert!(
        stderr.contains("no files in the plugin archive matched the glob pattern=LICENSE"),
        "{}",
        describe(&install)
    );
    assert_nothing_installed(&home);
}

/// After a refused install: no plugin link and no receipt.
fn assert_nothing_installed(home: &KrewHome) {
    assert!(
        !home.plugin().exists(),
        "bin/kubectl-relayer exists after a refused install"
    );
    assert!(
        !home.receipt().exists(),
        "a receipt exists after a refused install"
    );
}
