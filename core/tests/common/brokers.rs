//! Private brokers for tests that kill, restart or reconfigure one: their
//! own port, data folder and node name, never the machine's shared
//! RabbitMQ (5672) or Mosquitto (1883). Killed and removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::unique;

/// A free loopback TCP port (free when asked; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn pid_alive(pid: u32) -> bool {
    // A zombie still has /proc/PID; its state is Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

fn sigkill(pid: u32) {
    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// A RabbitMQ node of the test's own, run as the `rabbitmq` user (whose
/// Erlang cookie `rabbitmqctl` uses) with its data in a temp folder.
pub struct PrivateRabbit {
    pub node: String,
    pub port: u16,
    /// The port `{port}` stood for in `start_with`'s configuration.
    pub tls_port: u16,
    dist_port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    pid: Option<u32>,
}

impl PrivateRabbit {
    /// Start a node and wait until it accepts AMQP connections.
    pub fn start(name: &str) -> PrivateRabbit {
        Self::start_on(name, &[])
    }

    /// Start a node that also listens on `extra` addresses (IPs of links to
    /// network namespaces the test created), on the same port.
    pub fn start_on(name: &str, extra: &[&str]) -> PrivateRabbit {
        Self::start_with(name, extra, "")
    }

    /// Start a node with `conf` added to its rabbitmq.conf (e.g. a TLS
    /// listener); `{port}` in it is replaced by a free port of its own,
    /// which becomes `tls_port`.
    pub fn start_with(name: &str, extra: &[&str], conf_extra: &str) -> PrivateRabbit {
        let id = unique(name);
        let dir = std::env::temp_dir().join(format!("msgflo-{id}"));
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let mut r = PrivateRabbit { node: format!("{id}@localhost"), port: free_port(), dist_port: free_port(), tls_port: 0, dir, child: None, pid: None };
        let mut conf = format!("listeners.tcp.1 = 127.0.0.1:{}\n", r.port);
        for (i, ip) in extra.iter().enumerate() {
            conf.push_str(&format!("listeners.tcp.{} = {ip}:{}\n", i + 2, r.port));
        }
        // Guest over a veth link is not loopback.
        if !extra.is_empty() {
            conf.push_str("loopback_users = none\n");
        }
        r.tls_port = free_port();
        conf.push_str(&conf_extra.replace("{port}", &r.tls_port.to_string()));
        std::fs::write(r.dir.join("rabbitmq.conf"), conf).unwrap();
        if is_root() {
            let st = Command::new("chown").args(["-R", "rabbitmq:rabbitmq"]).arg(&r.dir).status().unwrap();
            assert!(st.success(), "chown the node's folder to rabbitmq");
        }
        r.run();
        r
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("HOME", "/var/lib/rabbitmq")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq.conf"))
            .env("RABBITMQ_PID_FILE", self.dir.join("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.dir.join("enabled_plugins"));
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "rabbitmq", "--", program]);
            c
        } else {
            Command::new(program)
        };
        self.env(&mut cmd);
        cmd
    }

    /// (Re)start the node on the same port and data folder.
    pub fn run(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("pid"));
        let out = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("server.out")).unwrap();
        let child = self
            .command("rabbitmq-server")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("rabbitmq-server installed (scripts/setup installs it)");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("rabbitmq-server exited ({st}); see {}", self.dir.join("server.out").display());
                }
            }
            if port_open(self.port) && self.ctl(&["await_startup", "--timeout", "5"]).is_ok() {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(90), "private RabbitMQ {} did not start; see {}", self.node, self.dir.display());
            std::thread::sleep(Duration::from_millis(200));
        }
        self.pid = std::fs::read_to_string(self.dir.join("pid")).ok().and_then(|s| s.trim().parse().ok());
        assert!(self.pid.is_some(), "pid file of {}", self.node);
    }

    /// `rabbitmqctl -n NODE args...`: its stdout, or its stderr as the error.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = self.command("rabbitmqctl").arg("-q").arg("-n").arg(&self.node).args(args).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("rabbitmqctl {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// SIGKILL the node's Erlang VM; returns once it is gone.
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            sigkill(pid);
            let start = Instant::now();
            while pid_alive(pid) {
                assert!(start.elapsed() < Duration::from_secs(20), "node {} survived SIGKILL", self.node);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("amqp://127.0.0.1:{}", self.port)
    }

    /// Join `seed`'s cluster (this node's data is reset: join before use).
    pub fn join(&self, seed: &PrivateRabbit) {
        for args in [&["stop_app"][..], &["reset"], &["join_cluster", &seed.node], &["start_app"], &["await_startup", "--timeout", "60"]] {
            if let Err(e) = self.ctl(args) {
                panic!("{} joining {}: {e}", self.node, seed.node);
            }
        }
    }

    pub fn log_dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("private RabbitMQ {} left in {} for inspection", self.node, self.dir.display());
        }
    }
}

/// A private Mosquitto on a free loopback port; `persistent` keeps its
/// sessions and queued messages in its own folder across restarts.
pub struct PrivateMosquitto {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl PrivateMosquitto {
    pub fn start(persistent: bool) -> PrivateMosquitto {
        Self::start_on(persistent, &[])
    }

    /// Also listening on `extra` addresses (links to test namespaces).
    pub fn start_on(persistent: bool, extra: &[&str]) -> PrivateMosquitto {
        Self::start_with(persistent, extra, "")
    }

    /// With `listener_extra` lines after the first listener (TLS files).
    pub fn start_with(persistent: bool, extra: &[&str], listener_extra: &str) -> PrivateMosquitto {
        let port = free_port();
        let dir = std::env::temp_dir().join(unique("msgflo-mosq"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut conf = format!("listener {port} 127.0.0.1\n{listener_extra}");
        for ip in extra {
            conf.push_str(&format!("listener {port} {ip}\n"));
        }
        conf.push_str("allow_anonymous true\n");
        if persistent {
            // Started as root, Mosquitto drops to the `mosquitto` user: the
            // database folder must be that user's.
            let db = dir.join("db");
            std::fs::create_dir_all(&db).unwrap();
            if is_root() {
                let _ = Command::new("chown").args(["-R", "mosquitto"]).arg(&db).status();
            }
            conf.push_str(&format!("persistence true\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 1000000\n", db.display()));
        }
        std::fs::write(dir.join("m.conf"), conf).unwrap();
        let mut m = PrivateMosquitto { port, dir, child: None };
        m.run();
        m
    }

    pub fn run(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("m.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto installed (scripts/setup installs it)");
        self.child = Some(child);
        let start = Instant::now();
        while !port_open(self.port) {
            assert!(start.elapsed() < Duration::from_secs(10), "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM: a clean shutdown (with persistence, it saves its database).
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    /// SIGKILL (no chance to save anything it has not saved yet).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateMosquitto {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("private Mosquitto's folder left in {} for inspection", self.dir.display());
        }
    }
}

/// A child process (a participant in another language) with its output in
/// a file; SIGKILLed on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc { name: name.to_owned(), child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// The repository's root (for the shims and the .venv).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The conformance shim (repeats `in` to `out`) in Python, as ROLE.
pub fn python_shim(role: &str, broker: &str) -> Command {
    let root = repo_root();
    let mut c = Command::new(root.join(".venv/bin/python"));
    c.arg(root.join("spec/shims/python/shim.py")).arg(role).env("MSGFLO_BROKER", broker).env("RUST_LOG", "msgflo=info");
    c
}

/// The conformance shim in Node (through the msgflo-nodejs bin), as ROLE.
pub fn node_shim(role: &str, broker: &str) -> Command {
    let root = repo_root();
    let mut c = Command::new("node");
    c.arg(root.join("node/bin/msgflo-nodejs"))
        .arg(root.join("spec/shims/node/shim.js"))
        .arg("--name")
        .arg(role)
        .env("MSGFLO_BROKER", broker)
        .env("RUST_LOG", "msgflo=info");
    c
}

/// The Rust Repeat example (`cargo build --example repeat` on first use).
pub fn rust_repeat(role: &str, broker: &str) -> Command {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let ok = Command::new(env!("CARGO")).args(["build", "-q", "-p", "msgflo", "--example", "repeat"]).status().unwrap();
        assert!(ok.success(), "building the repeat example");
    });
    let exe = std::env::current_exe().unwrap();
    let mut c = Command::new(exe.parent().unwrap().parent().unwrap().join("examples").join("repeat"));
    c.arg(role).args(["--broker", broker]).env("RUST_LOG", std::env::var("MSGFLO_FAULTS_LOG").unwrap_or("msgflo=info".into()));
    c
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
    }
}

/// A network namespace of the test's own, linked to the host by a veth
/// pair on a private /30; `partition` takes the link down, `heal` brings
/// it back. Deleting the namespace (on drop) removes the pair.
pub struct NetNs {
    pub name: String,
    inner_if: String,
    /// The host end's address (the broker listens there too).
    pub host_ip: String,
    pub ns_ip: String,
}

impl NetNs {
    /// Err when namespaces cannot be made here (not root, no `ip`).
    pub fn create() -> Result<NetNs, String> {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let b = u8::from_str_radix(&id[..2], 16).unwrap();
        let c = u8::from_str_radix(&id[2..4], 16).unwrap() & 0xfc;
        let ns = NetNs {
            name: format!("msgflo-{id}"),
            inner_if: format!("mf{id}n"),
            host_ip: format!("10.{}.{b}.{}", 200 + (b % 50), c + 1),
            ns_ip: format!("10.{}.{b}.{}", 200 + (b % 50), c + 2),
        };
        let host_if = format!("mf{id}h");
        ip(&["netns", "add", &ns.name])?;
        let n = &ns.name;
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", &ns.inner_if])?;
        ip(&["link", "set", &ns.inner_if, "netns", n])?;
        ip(&["addr", "add", &format!("{}/30", ns.host_ip), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&["-n", n, "addr", "add", &format!("{}/30", ns.ns_ip), "dev", &ns.inner_if])?;
        ip(&["-n", n, "link", "set", &ns.inner_if, "up"])?;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `cmd` run inside the namespace.
    pub fn wrap(&self, cmd: Command) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(cmd.get_program()).args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    }

    pub fn partition(&self) {
        ip(&["-n", &self.name, "link", "set", &self.inner_if, "down"]).unwrap();
    }

    pub fn heal(&self) {
        ip(&["-n", &self.name, "link", "set", &self.inner_if, "up"]).unwrap();
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}
