//! Child processes that cannot outlive the test process.
//!
//! Rust never drops statics, and a killed test process runs no destructors at all, so a
//! control plane shared by a test binary needs a teardown that does not depend on either. Each
//! child runs under a tiny bash watchdog whose stdin is a pipe from the test process: when that
//! pipe closes (the test process exited, panicked out, or was killed with SIGKILL) the watchdog
//! reads EOF, sends SIGTERM to its child and SIGKILL after a grace period. The write end lives
//! in [`Supervised`]; std opens pipes close-on-exec, so no other child holds it open.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Seconds between SIGTERM and SIGKILL when the watchdog stops its child.
pub const GRACE_SECONDS: u32 = 5;

/// The watchdog: `bash -c WATCHDOG watchdog GRACE RM_DIR CMD ARGS...`.
///
/// It polls once a second for either event: its child exited (then it exits with the child's
/// code) or its stdin reached EOF (then it stops the child). With a non-empty RM_DIR it removes
/// that folder once its child is gone, which is how the control plane's scratch folder goes.
const WATCHDOG: &str = r#"
grace=$1; rm_dir=$2; shift 2
"$@" </dev/null &
child=$!
while kill -0 "$child" 2>/dev/null; do
    read -r -t 1 _
    rc=$?
    # 0: a line (never sent), >128: the timeout; only EOF (1) means the test process is gone.
    if [ "$rc" -eq 0 ] || [ "$rc" -gt 128 ]; then continue; fi
    kill -TERM "$child" 2>/dev/null
    for _ in $(seq $((grace * 10))); do
        kill -0 "$child" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$child" 2>/dev/null
    break
done
wait "$child"
rc=$?
if [ -n "$rm_dir" ]; then
    sleep $((grace + 2))   # let sibling watchdogs stop their children first
    rm -rf -- "$rm_dir"
fi
exit $rc
"#;

/// A child process under a watchdog; dropping it (or the test process ending) stops the child.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Supervised {
    /// Starts `program args` under a watchdog, with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> anyhow::Result<Self> {
        Self::spawn_with_cleanup(name, program, args, log, None)
    }

    /// Like [`Supervised::spawn`], and removes `cleanup_dir` once the child is gone.
    pub fn spawn_with_cleanup(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        cleanup_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let rm_dir = cleanup_dir
            .map(|dir| dir.display().to_string())
            .unwrap_or_default();
        let child = Command::new("bash")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(GRACE_SECONDS.to_string())
            .arg(rm_dir)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            // NB: its own process group, so a signal to the test's group (Ctrl-C, `timeout`)
            // does not kill the watchdog before it has stopped its child and cleaned up.
            .process_group(0)
            .spawn()
            .map_err(|error| anyhow::anyhow!("could not start {name} under bash: {error}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `None` while running, else how it ended.
    pub fn exit_status(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(status.to_string()),
            Err(error) => Some(format!("unknown ({error})")),
        }
    }

    /// The last `max` bytes of the child's log, for error messages.
    pub fn log_tail(&self, max: u64) -> String {
        let read = || -> std::io::Result<String> {
            let mut file = File::open(&self.log)?;
            let len = file.metadata()?.len();
            file.seek(SeekFrom::Start(len.saturating_sub(max)))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        match read() {
            Ok(text) => text,
            Err(error) => format!("(could not read {}: {error})", self.log.display()),
        }
    }

    /// Closes the watchdog's stdin and waits until it has stopped the child.
    pub fn stop(&mut self) {
        drop(self.child.stdin.take());
        let deadline =
            std::time::Instant::now() + Duration::from_secs(u64::from(GRACE_SECONDS) + 5);
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // NB: by now the watchdog has sent its child SIGKILL, so ending the watchdog itself
        // leaves nothing behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes that depend on the ones started before them; dropping the group stops them in
/// reverse order (the controller-manager before the API server before etcd).
#[derive(Debug, Default)]
pub struct Group(Vec<Supervised>);

impl Group {
    pub fn push(&mut self, process: Supervised) {
        self.0.push(process);
    }

    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Supervised> {
        self.0.iter_mut()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        while let Some(mut process) = self.0.pop() {
            process.stop();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}
