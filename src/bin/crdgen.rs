//! `crdgen`: prints the operator's CustomResourceDefinitions as YAML, or writes them to `crds/`.
//!
//! `cargo run --bin crdgen` rewrites `crds/relayerdeployments.yaml`; `--stdout` prints instead.
//!
//! May use: the library's `crd` only.

use std::path::PathBuf;

use anyhow::Context as _;
use relayer_operator::crd::crd_yaml;

fn main() -> anyhow::Result<()> {
    let yaml = crd_yaml().context("rendering the RelayerDeployment CRD")?;
    if std::env::args().any(|a| a == "--stdout") {
        print!("{yaml}");
        return Ok(());
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relayer_operator::crd::CRD_FILE);
    std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
