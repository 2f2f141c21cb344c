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
    /// Which instance of the role (0 for the first; several instances
    /// share the role's queues, see `Coordinator::scale`).
    pub instance: u32,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Working directory (default: the coordinator's).
    pub dir: Option<std::path::PathBuf>,
}

/// A child process ended (it is restarted after a backoff).
#[derive(Debug, Clone)]
pub struct Exited {
    pub role: String,
    pub instance: u32,
    /// The participant id the process was given.
    pub participant: String,
    pub how: String,
}

/// A running child's visible state (for status).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChildStatus {
    pub role: String,
    pub instance: u32,
    /// The participant id the current process was given
    /// (`MSGFLO_PARTICIPANT_ID`).
    pub participant: String,
    pub command: String,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// How the last run ended, if it did.
    pub last_exit: Option<String>,
}

/// One supervised child.
struct Running {
    status: Arc<Mutex<ChildStatus>>,
    argv: Vec<String>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Supervises the children of one coordinator, by role and instance.
#[derive(Clone)]
pub struct Supervisor {
    children: Arc<Mutex<BTreeMap<(String, u32), Running>>>,
    stop: CancellationToken,
    grace: Duration,
    exits: tokio::sync::broadcast::Sender<Exited>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new(Duration::from_secs(5))
    }
}

impl Supervisor {
    /// `grace`: how long a child may take to exit after SIGTERM.
    pub fn new(grace: Duration) -> Self {
        Supervisor { children: Default::default(), stop: CancellationToken::new(), grace, exits: tokio::sync::broadcast::channel(256).0 }
    }

    /// Children that ended, as they end.
    pub fn exits(&self) -> tokio::sync::broadcast::Receiver<Exited> {
        self.exits.subscribe()
    }

    /// Start a child for `spec.role` and keep it running until
    /// [`Supervisor::stop`] or [`Supervisor::shutdown`]. A child already
    /// running for the role with the same command is left alone; with
    /// another command it is replaced. Fails only if the command cannot be
    /// started at all (not found): later failures are restarts.
    pub async fn start(&self, spec: Spec) -> crate::Result<()> {
        let key = (spec.role.clone(), spec.instance);
        {
            let children = self.children.lock().await;
            if children.get(&key).is_some_and(|r| r.argv == spec.argv) {
                return Ok(());
            }
        }
        self.stop_instance(&spec.role, spec.instance).await;
        let status = Arc::new(Mutex::new(ChildStatus {
            role: spec.role.clone(),
            instance: spec.instance,
            participant: String::new(),
            command: spec.argv.join(" "),
            pid: None,
            restarts: 0,
            last_exit: None,
        }));
        let (first, participant) = spawn(&spec).map_err(|e| {
            crate::Error::InvalidDefinition(format!("cannot start {:?} for role {:?}: {e}", spec.argv.join(" "), spec.role))
        })?;
        {
            let mut st = status.lock().await;
            st.pid = first.id();
            st.participant = participant;
        }
        let stop = self.stop.child_token();
        let argv = spec.argv.clone();
        let task = tokio::spawn(keep_running(spec, first, status.clone(), stop.clone(), self.grace, self.exits.clone()));
        self.children.lock().await.insert(key, Running { status, argv, stop, task });
        Ok(())
    }

    /// Roles with a supervised child.
    pub async fn roles(&self) -> Vec<String> {
        let mut roles: Vec<String> = self.children.lock().await.keys().map(|(r, _)| r.clone()).collect();
        roles.dedup();
        roles
    }

    /// Every supervised `(role, instance)`.
    pub async fn instances(&self) -> Vec<(String, u32)> {
        self.children.lock().await.keys().cloned().collect()
    }

    pub async fn status(&self) -> Vec<ChildStatus> {
        let mut out = Vec::new();
        for c in self.children.lock().await.values() {
            out.push(c.status.lock().await.clone());
        }
        out
    }

    /// Stop the child of `role` (SIGTERM to its group, SIGKILL after the
    /// grace period) and wait for it. Nothing if there is none.
    pub async fn stop(&self, role: &str) {
        let keys: Vec<(String, u32)> = self.children.lock().await.keys().filter(|(r, _)| r == role).cloned().collect();
        for (r, i) in keys {
            self.stop_instance(&r, i).await;
        }
    }

    /// Stop one instance of `role` (a scale-down: SIGTERM lets it finish
    /// and settle what it holds) and wait for it.
    pub async fn stop_instance(&self, role: &str, instance: u32) {
        let running = self.children.lock().await.remove(&(role.to_owned(), instance));
        if let Some(r) = running {
            r.stop.cancel();
            let _ = r.task.await;
        }
    }

    /// Stop every child and wait for them.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let children: Vec<Running> = std::mem::take(&mut *self.children.lock().await).into_values().collect();
        for r in children {
            let _ = r.task.await;
        }
    }
}

/// Start the process; returns it and the participant id it was given.
fn spawn(spec: &Spec) -> std::io::Result<(Child, String)> {
    let participant = format!("{}-{}", spec.role, &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let (program, args) = spec.argv.split_first().ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut cmd = Command::new(program);
    if let Some(d) = &spec.dir {
        cmd.current_dir(d);
    }
    cmd.args(args)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("MSGFLO_PARTICIPANT_ID", &participant)
        .env("MSGFLO_PARTICIPANT_ROLE", &spec.role)
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
    let role = if spec.instance == 0 { spec.role.clone() } else { format!("{}#{}", spec.role, spec.instance) };
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
    Ok((child, participant))
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
    exits: tokio::sync::broadcast::Sender<Exited>,
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
            let _ = exits.send(Exited { role: spec.role.clone(), instance: spec.instance, participant: st.participant.clone(), how: how.clone() });
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
            Ok((c, participant)) => {
                child = c;
                let mut st = status.lock().await;
                st.pid = child.id();
                st.participant = participant;
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
