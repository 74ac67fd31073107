//! Finds the Kubernetes test binaries (kube-apiserver, kube-controller-manager, kubectl, etcd,
//! helm) that `tests/k8s/build.sh` builds from their pinned Go modules.
//!
//! Lookup order: `FORESIGHT_K8S_BIN` (a folder holding all of them), else the build script,
//! which returns at once when its per-machine cache is warm and builds it otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The environment variable naming a folder with prebuilt binaries.
pub const BIN_ENV: &str = "FORESIGHT_K8S_BIN";

/// The script that builds the binaries, relative to the workspace root.
pub const BUILD_SCRIPT: &str = "tests/k8s/build.sh";

/// Every binary the control plane and the tests run.
pub const REQUIRED: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
    "helm",
];

/// A folder known to hold every required binary.
#[derive(Clone, Debug)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Checks that `dir` holds every required binary; the error names the build script.
    pub fn in_dir(dir: &Path) -> Result<Self, String> {
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|name| !dir.join(name).is_file())
            .collect();
        if missing.is_empty() {
            Ok(Self {
                dir: dir.to_path_buf(),
            })
        } else {
            Err(format!(
                "Kubernetes test binaries missing in {}: {}. Build them with `{BUILD_SCRIPT}` \
                 (needs Go; prints the bin folder) and, if you keep them elsewhere, point \
                 {BIN_ENV} at that folder.",
                dir.display(),
                missing.join(", ")
            ))
        }
    }

    /// Resolves the binaries from `FORESIGHT_K8S_BIN` or the build script's cache.
    pub fn locate() -> Result<Self, String> {
        match std::env::var_os(BIN_ENV) {
            Some(dir) if !dir.is_empty() => Self::in_dir(Path::new(&dir)),
            _ => Self::in_dir(&run_build_script()?),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Runs the idempotent build script and returns the folder it prints on its last line.
///
/// NB: its progress goes to stderr, which is inherited so a cold build shows it is alive.
fn run_build_script() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join(BUILD_SCRIPT);
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|error| {
            format!(
                "could not run `{BUILD_SCRIPT}` ({error}); run it by hand (needs Go) or point \
                 {BIN_ENV} at a folder with {}",
                REQUIRED.join(", ")
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "`{BUILD_SCRIPT}` failed ({}), so the Kubernetes test binaries are not available; \
             see its messages above, fix them (it needs Go at /usr/local/go/bin or on PATH) and \
             rerun it, or point {BIN_ENV} at a folder with {}",
            output.status,
            REQUIRED.join(", ")
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .ok_or_else(|| format!("`{BUILD_SCRIPT}` succeeded but printed no bin folder"))?;
    Ok(PathBuf::from(dir.trim()))
}
