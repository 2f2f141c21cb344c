//! Starting participant processes and keeping them running.
//!
//! Each child runs in its own process group with the broker URL in
//! `MSGFLO_BROKER`. Its output comes out of ours line by line, prefixed with
//! its role (`display | Temperature: 22.3 C`). A child that exits is
//! restarted with a backoff (0.5 s doubling to 30 s, reset after a minute of
//! running) and a log line that says how it ended. No child outlives the
//! coordinator: on shutdown each group gets SIGTERM, then SIGKILL after a
//! grace period; if the coordinator dies without shutting down (SIGKILL,
//! crash), the kernel sends the child SIGTERM (`PR_SET_PDEATHSIG`). The
//! original left its children running.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// How a child is started.
#[derive(Debug, Clone)]
pub struct Spec {
    pub role: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Working directory (default: the coordinator's).
    pub dir: Option<std::path::PathBuf>,
}

/// A running child's visible state (for status).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChildStatus {
    pub role: String,
    pub command: String,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// How the last run ended, if it did.
    pub last_exit: Option<String>,
}

/// Supervises the children of one coordinator.
#[derive(Clone)]
pub struct Supervisor {
    children: Arc<Mutex<BTreeMap<String, Arc<Mutex<ChildStatus>>>>>,
    stop: CancellationToken,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    grace: Duration,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new(Duration::from_secs(5))
    }
}

impl Supervisor {
    /// `grace`: how long a child may take to exit after SIGTERM.
    pub fn new(grace: Duration) -> Self {
        Supervisor {
            children: Default::default(),
            stop: CancellationToken::new(),
            tasks: Default::default(),
            grace,
        }
    }

    /// Start a child and keep it running until [`Supervisor::shutdown`].
    /// Fails only if the command cannot be started at all (not found):
    /// later failures are restarts.
    pub async fn start(&self, spec: Spec) -> crate::Result<()> {
        let status = Arc::new(Mutex::new(ChildStatus {
            role: spec.role.clone(),
            command: spec.argv.join(" "),
            pid: None,
            restarts: 0,
            last_exit: None,
        }));
        let first = spawn(&spec).map_err(|e| {
            crate::Error::InvalidDefinition(format!("cannot start {:?} for role {:?}: {e}", spec.argv.join(" "), spec.role))
        })?;
        status.lock().await.pid = first.id();
        self.children.lock().await.insert(spec.role.clone(), status.clone());
        let stop = self.stop.clone();
        let grace = self.grace;
        let task = tokio::spawn(async move { keep_running(spec, first, status, stop, grace).await });
        self.tasks.lock().await.push(task);
        Ok(())
    }

    pub async fn status(&self) -> Vec<ChildStatus> {
        let mut out = Vec::new();
        for c in self.children.lock().await.values() {
            out.push(c.lock().await.clone());
        }
        out
    }

    /// Stop every child (SIGTERM to its group, SIGKILL after the grace
    /// period) and wait for them.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().await);
        for t in tasks {
            let _ = t.await;
        }
    }
}

fn spawn(spec: &Spec) -> std::io::Result<Child> {
    let (program, args) = spec.argv.split_first().ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut cmd = Command::new(program);
    if let Some(d) = &spec.dir {
        cmd.current_dir(d);
    }
    cmd.args(args)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Die with the coordinator, even if it is killed outright.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The coordinator may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let role = spec.role.clone();
    if let Some(out) = child.stdout.take() {
        let role = role.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                println!("{role} | {line}");
            }
        });
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{role} ! {line}");
            }
        });
    }
    Ok(child)
}

fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "unknown status".to_owned(),
    }
}

async fn keep_running(
    spec: Spec,
    mut child: Child,
    status: Arc<Mutex<ChildStatus>>,
    stop: CancellationToken,
    grace: Duration,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = Instant::now();
        let exit = tokio::select! {
            e = child.wait() => e,
            _ = stop.cancelled() => {
                terminate(&mut child, &spec.role, grace).await;
                return;
            }
        };
        let how = match exit {
            Ok(s) => describe_exit(s),
            Err(e) => format!("wait failed: {e}"),
        };
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(500);
        }
        {
            let mut st = status.lock().await;
            st.last_exit = Some(how.clone());
            st.pid = None;
        }
        warn!(
            role = %spec.role,
            "participant {} exited ({how}) after {:.1} s; restarting in {:.1} s",
            spec.role,
            started.elapsed().as_secs_f64(),
            backoff.as_secs_f64()
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
        match spawn(&spec) {
            Ok(c) => {
                child = c;
                let mut st = status.lock().await;
                st.pid = child.id();
                st.restarts += 1;
                info!(role = %spec.role, pid = ?st.pid, "participant {} restarted", spec.role);
            }
            Err(e) => {
                error!(role = %spec.role, "cannot restart participant {}: {e}; giving up on it", spec.role);
                return;
            }
        }
    }
}

/// SIGTERM to the child's process group; SIGKILL if it is still there
/// after `grace`.
async fn terminate(child: &mut Child, role: &str, grace: Duration) {
    let Some(pid) = child.id() else { return };
    let group = -(pid as libc::pid_t);
    // SAFETY: plain syscall on a process group we created.
    unsafe { libc::kill(group, libc::SIGTERM) };
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(_) => {}
        Err(_) => {
            warn!(role, "participant {role} ignored SIGTERM for {:.0} s; killing it", grace.as_secs_f64());
            unsafe { libc::kill(group, libc::SIGKILL) };
            let _ = child.wait().await;
        }
    }
    // Whatever the leader left behind in its group goes too.
    unsafe { libc::kill(group, libc::SIGKILL) };
}
