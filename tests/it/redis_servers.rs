//! Real Redis servers for tests that need more than the plain private one in
//! [`crate::helpers::RedisServer`]:
//!
//! - [`TlsRedis`]: a `redis-server` that only speaks TLS (`rediss://localhost:PORT`), with a
//!   throwaway CA, server certificate and client certificate made with `rcgen` (see `certs`) at
//!   test time; optionally requiring client certificates (mTLS). It can create ACL users, and
//!   be stopped and restarted on the same port with the same certificates.
//! - [`RedisCluster`]: a three-master, no-replica Redis Cluster on free ports. Any master can
//!   be SIGKILLed (the cluster then goes `cluster_state:fail`, as
//!   `cluster-require-full-coverage` is on) and restarted with its own `nodes.conf`, after
//!   which it rejoins and the cluster is `ok` again. The restarted master comes back
//!   **empty**: there is no persistence and there are no replicas.
//!
//! Both run `redis-server` from `PATH` as child processes, each in a fresh directory of its
//! own under the system temp dir (`pricefront-tls-<uuid>`, `pricefront-cluster-<uuid>`) that
//! holds its certificates or `nodes.conf`, its `redis.log` (`--logfile`) and its stdout and
//! stderr (`output.log`). Every panic while starting or waiting for them carries the tail of
//! those logs. They are SIGKILLed on drop (also when a test panics) and their directories
//! removed. They never touch the shared Redis on 6379.
//!
//! The smoke tests at the bottom (`cargo test --test it redis_servers`) prove the servers
//! work with the redis-rs client setups the app uses: `Client::build_with_tls` with a CA and
//! a client certificate, an ACL user in a `rediss://user:pass@` URL, and an async
//! `ClusterClient` across a master's death and return.

use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::helpers::wait_for;

/// How long a server may take to answer after it was spawned.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long a cluster may take to agree that it is healthy (after creation or a restart).
const HEALTH_DEADLINE: Duration = Duration::from_secs(60);
/// How many lines of each log a panic message carries.
const LOG_LINES: usize = 40;
/// The number of masters in a [`RedisCluster`].
/// Masters in a test cluster.
const MASTERS: usize = 3;

// ---------------------------------------------------------------------------------------------
// Plumbing shared by both flavours
// ---------------------------------------------------------------------------------------------

/// A fresh, empty directory under the system temp dir, removed (with its contents) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(kind: &str) -> Self {
        let path = std::env::temp_dir().join(format!("pricefront-{kind}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The last `lines` lines of a text file, or why there are none.
fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Polls `check` every `interval` until it yields `Ok`; after `deadline`, `Err` with the last
/// thing it saw (callers panic with that and their servers' logs). Like
/// [`crate::helpers::wait_for`], but leaves the panic message to the caller.
async fn poll<T, F, Fut>(deadline: Duration, interval: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        let seen = match check().await {
            Ok(value) => return Ok(value),
            Err(seen) => seen,
        };
        if started.elapsed() > deadline {
            return Err(seen);
        }
        tokio::time::sleep(interval).await;
    }
}

/// One `redis-server` child: the exact arguments it was started with (so that it can be
/// restarted identically), the directory it works and logs in, and the process while it runs.
///
/// The child sits in a `Mutex` so that liveness checks work through `&self`.
struct ServerProcess {
    label: String,
    args: Vec<String>,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

impl ServerProcess {
    /// Not started yet. `args` get `--bind 127.0.0.1 --save '' --appendonly no --dir DIR
    /// --logfile DIR/redis.log` added; `dir` must exist.
    fn new(label: String, dir: &Path, args: &[&str]) -> Self {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let log = dir.join("redis.log");
        all.extend(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"].map(String::from));
        all.extend(["--dir".into(), dir.display().to_string(), "--logfile".into(), log.display().to_string()]);
        Self { label, args: all, dir: dir.to_owned(), child: Mutex::new(None) }
    }

    fn spawn(&self) {
        let mut child = self.child.lock().unwrap();
        assert!(child.is_none(), "{} is already running", self.label);
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("output.log"))
            .expect("open output.log");
        let spawned = Command::new("redis-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server for {} (is it on PATH?): {e}", self.label));
        *child = Some(spawned);
    }

    /// SIGKILL and reap; nothing if it is not running.
    fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn is_running(&self) -> bool {
        self.child.lock().unwrap().is_some()
    }

    /// The tails of its `redis.log` and of its stdout/stderr (where config errors go).
    fn logs(&self) -> String {
        format!(
            "--- {} {} (last {LOG_LINES} lines) ---\n{}\n--- its stdout/stderr ---\n{}",
            self.label,
            self.dir.join("redis.log").display(),
            tail(&self.dir.join("redis.log"), LOG_LINES),
            tail(&self.dir.join("output.log"), LOG_LINES),
        )
    }

    /// Panics with its logs if it was started and has exited since.
    fn assert_alive(&self) {
        let mut child = self.child.lock().unwrap();
        if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            *child = None;
            drop(child);
            panic!("{} exited by itself ({status}) with `redis-server {:?}`\n{}", self.label, self.args, self.logs());
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// A TLS-only `redis-server` (plain TCP is off: `--port 0`) with a throwaway CA, on a free
/// port, killed on drop. Its certificate is for `localhost` and `127.0.0.1`.
///
/// With `client_auth` it requires a client certificate signed by its CA
/// ([`client_cert`](Self::client_cert) / [`client_key`](Self::client_key)).
pub struct TlsRedis {
    // Dropped in this order: the server dies before its directory goes.
    server: ServerProcess,
    dir: TempDir,
    port: u16,
    client_auth: bool,
}

impl TlsRedis {
    /// Makes the certificates, starts the server and waits until it answers `PING` over TLS.
    pub async fn start(client_auth: bool) -> Self {
        let dir = TempDir::new("tls");
        crate::certs::make_set(dir.path());
        // Restarted on the same port: one outside the ephemeral range, like the cluster's.
        let port = quiet_port();
        let file = |name: &str| dir.path().join(name).display().to_string();
        let (tls_port, cert, key, ca) = (port.to_string(), file("server.pem"), file("server.key"), file("ca.pem"));
        let server = ServerProcess::new(
            format!("TLS redis-server on port {port}"),
            dir.path(),
            &[
                "--port",
                "0",
                "--tls-port",
                &tls_port,
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                if client_auth { "yes" } else { "no" },
            ],
        );
        let mut tls = Self { server, dir, port, client_auth };
        tls.restart().await;
        tls
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA certificate (PEM) that signed the server and client certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A client certificate (PEM, `clientAuth`) signed by the CA.
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }

    /// The key of [`client_cert`](Self::client_cert): PKCS#8 PEM (`BEGIN PRIVATE KEY`), EC P-256.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }

    /// `rediss://localhost:PORT`
    pub fn url(&self) -> String {
        format!("rediss://localhost:{}", self.port)
    }

    /// `rediss://user:pass@localhost:PORT`, both percent-encoded.
    pub fn url_with_user(&self, user: &str, pass: &str) -> String {
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        format!("rediss://{}:{}@localhost:{}", enc(user), enc(pass), self.port)
    }

    /// What redis-rs needs to connect (`redis::Client::build_with_tls`,
    /// `ClusterClientBuilder::certs`): the CA, plus the client certificate and key when the
    /// server requires them.
    pub fn certificates(&self) -> redis::TlsCertificates {
        let read = |path: PathBuf| std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        redis::TlsCertificates {
            client_tls: self.client_auth.then(|| redis::ClientTlsConfig {
                client_cert: read(self.client_cert()),
                client_key: read(self.client_key()),
            }),
            root_cert: Some(read(self.ca_file())),
        }
    }

    /// Creates (or resets) an ACL user with password `pass` that may use every key, every
    /// channel and every command.
    pub fn acl_setuser(&self, user: &str, pass: &str) {
        self.acl_setuser_with(user, pass, &["~*", "&*", "+@all"]);
    }

    /// Creates (or resets) `user` with exactly `rules` (key patterns, channels, commands).
    pub fn acl_setuser_with(&self, user: &str, pass: &str, rules: &[&str]) {
        let password = format!(">{pass}");
        let mut args = vec!["ACL", "SETUSER", user, "reset", "on", &password];
        args.extend_from_slice(rules);
        let reply = self.redis_cli(&args);
        assert_eq!(reply.trim(), "OK", "ACL SETUSER {user} on {}", self.server.label);
    }

    /// Runs one command with `redis-cli` over TLS (as the default user, with the client
    /// certificate when one is required) and returns its raw output, trimmed. Error replies
    /// come back as text (`ERR …`); panics only when `redis-cli` itself fails (e.g. cannot
    /// connect), with the server's logs.
    pub fn redis_cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(self.cli_args(args))
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli (is it on PATH?): {e}"));
        if !output.status.success() {
            panic!(
                "redis-cli {args:?} against {} failed ({}): {}{}\n{}",
                self.server.label,
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                self.server.logs()
            );
        }
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// SIGKILLs the server and waits for it to be gone (its port refuses connections).
    pub fn stop(&mut self) {
        self.server.kill();
    }

    /// Starts the server (again) on the same port with the same certificates, and waits until
    /// it answers. Stops it first if it is running. ACL users and data do not survive.
    pub async fn restart(&mut self) {
        self.server.kill();
        self.server.spawn();
        let ping = self.cli_args(&["PING"]);
        let server = &self.server;
        let ready = poll(START_DEADLINE, Duration::from_millis(20), || {
            server.assert_alive();
            let ping = ping.clone();
            async move {
                let output = tokio::process::Command::new("redis-cli")
                    .args(&ping)
                    .kill_on_drop(true)
                    .output()
                    .await
                    .map_err(|e| format!("cannot run redis-cli: {e}"))?;
                let said = format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout).trim(),
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                if said == "PONG" { Ok(()) } else { Err(said) }
            }
        })
        .await;
        if let Err(seen) = ready {
            panic!(
                "timed out after {START_DEADLINE:?} waiting for {} to answer PING; last seen: {seen}\n{}",
                self.server.label,
                self.server.logs()
            );
        }
    }

    /// `redis-cli` arguments for one command over TLS to this server.
    fn cli_args(&self, command: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec!["--tls".into(), "--cacert".into(), self.ca_file().display().to_string()];
        if self.client_auth {
            args.extend(["--cert".into(), self.client_cert().display().to_string()]);
            args.extend(["--key".into(), self.client_key().display().to_string()]);
        }
        args.extend(["-h".into(), "127.0.0.1".into(), "-p".into(), self.port.to_string()]);
        args.extend(command.iter().map(|a| a.to_string()));
        args
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------

/// A Redis Cluster of three masters and no replicas on free ports of 127.0.0.1 (each with its
/// cluster bus on port + 10000), all killed on drop.
///
/// Node `i` owns a third of the slots; [`node_for_key`](Self::node_for_key) says which. With
/// no replicas, killing a master takes the whole cluster to `cluster_state:fail` (after the
/// 2 s node timeout) until it is restarted.
pub struct RedisCluster {
    // Dropped in this order: the servers die before their directories go.
    nodes: Vec<ServerProcess>,
    ports: Vec<u16>,
    /// The nodes' directories live under it; kept only to be removed on drop.
    _dir: TempDir,
}

impl RedisCluster {
    /// Starts three empty cluster-enabled servers, joins them with
    /// `redis-cli --cluster create`, and waits until every node reports `cluster_state:ok`.
    pub async fn start() -> Self {
        Self::start_with(0).await
    }

    /// [`Self::start`] with a replica for each master (six nodes; `redis-cli` assigns the
    /// replicas, nodes 3 to 5): a master killed is failed over to its replica (after the 2 s
    /// node timeout), and the cluster stays `ok`.
    pub async fn start_with_replicas() -> Self {
        Self::start_with(1).await
    }

    async fn start_with(replicas: usize) -> Self {
        let dir = TempDir::new("cluster");
        let ports = cluster_ports(MASTERS * (1 + replicas));
        let nodes = ports
            .iter()
            .map(|&port| {
                let node_dir = dir.path().join(port.to_string());
                std::fs::create_dir(&node_dir).unwrap();
                let (port, config) = (port.to_string(), format!("nodes-{port}.conf"));
                ServerProcess::new(
                    format!("cluster node 127.0.0.1:{port}"),
                    &node_dir,
                    &[
                        "--port",
                        &port,
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &config,
                        "--cluster-node-timeout",
                        "2000",
                    ],
                )
            })
            .collect();
        let cluster = Self { nodes, ports, _dir: dir };
        for i in 0..cluster.nodes.len() {
            cluster.nodes[i].spawn();
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_answers(i).await;
        }

        let addresses: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let create = tokio::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(HEALTH_DEADLINE, create).await {
            Ok(Ok(output)) if output.status.success() => {}
            Ok(Ok(output)) => panic!(
                "redis-cli --cluster create {addresses:?} failed ({}):\n{}{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                cluster.logs()
            ),
            Ok(Err(e)) => panic!("cannot run redis-cli (is it on PATH?): {e}"),
            Err(_) => {
                panic!("redis-cli --cluster create {addresses:?} hung for {HEALTH_DEADLINE:?}\n{}", cluster.logs())
            }
        }
        cluster.wait_healthy().await;
        cluster
    }

    /// `redis://127.0.0.1:PORT` for each node, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect()
    }

    pub fn ports(&self) -> Vec<u16> {
        self.ports.clone()
    }

    /// SIGKILLs node `i` and reaps it. Its slots are unserved until
    /// [`restart_master`](Self::restart_master); its data is gone for good.
    pub fn kill_master(&mut self, i: usize) {
        assert!(self.nodes[i].is_running(), "{} is not running", self.nodes[i].label);
        self.nodes[i].kill();
    }

    /// Starts node `i` again on the same port in the same directory, so it reloads its
    /// `nodes.conf` (node id, slots, config epoch, peers) and rejoins; waits until it answers
    /// `PING`. It comes back empty. Call [`wait_healthy`](Self::wait_healthy) to wait until the
    /// cluster is `ok` again.
    pub async fn restart_master(&mut self, i: usize) {
        assert!(!self.nodes[i].is_running(), "{} is still running; kill_master first", self.nodes[i].label);
        self.nodes[i].spawn();
        self.wait_answers(i).await;
    }

    /// Waits until every running node reports `cluster_state:ok` with all 16384 slots served
    /// (none failing in its view) and knows all three nodes. Panics after 60 s with what each
    /// node said, its view of the cluster and the logs.
    pub async fn wait_healthy(&self) {
        let known = self.nodes.len().to_string();
        let wanted = [
            ("cluster_state", "ok"),
            ("cluster_slots_ok", "16384"),
            ("cluster_slots_pfail", "0"),
            ("cluster_slots_fail", "0"),
            ("cluster_known_nodes", &known),
        ];
        self.wait_cluster_info("the cluster to be healthy", &wanted).await;
    }

    /// Waits until every running node reports `cluster_state:fail`: after a
    /// [`kill_master`](Self::kill_master), the survivors have agreed the master is dead (about
    /// the 2 s node timeout plus gossip) and refuse every command with `CLUSTERDOWN`.
    pub async fn wait_down(&self) {
        self.wait_cluster_info("the cluster to be down", &[("cluster_state", "fail")]).await;
    }

    /// Polls `CLUSTER INFO` on every running node until each has all the `wanted` fields.
    async fn wait_cluster_info(&self, what: &str, wanted: &[(&str, &str)]) {
        let outcome = poll(HEALTH_DEADLINE, Duration::from_millis(50), || {
            let running: Vec<u16> = (0..self.nodes.len())
                .filter(|&i| {
                    self.nodes[i].assert_alive();
                    self.nodes[i].is_running()
                })
                .map(|i| self.ports[i])
                .collect();
            async move {
                let mut off = String::new();
                for port in running {
                    let info = match node_command(port, &["CLUSTER", "INFO"]).await {
                        Ok(info) => info,
                        Err(e) => {
                            write!(off, "[{port}: {e}] ").unwrap();
                            continue;
                        }
                    };
                    let field = |name: &str| {
                        info.lines()
                            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
                            .unwrap_or("?")
                            .to_owned()
                    };
                    if wanted.iter().any(|(name, value)| field(name) != *value) {
                        let seen: Vec<String> =
                            wanted.iter().map(|(name, _)| format!("{name}:{}", field(name))).collect();
                        write!(off, "[{port}: {}] ", seen.join(" ")).unwrap();
                    }
                }
                if off.is_empty() { Ok(()) } else { Err(off) }
            }
        })
        .await;
        if let Err(seen) = outcome {
            let views: String = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].is_running())
                .map(|i| {
                    let nodes = Command::new("redis-cli")
                        .args(["-h", "127.0.0.1", "-p", &self.ports[i].to_string(), "CLUSTER", "NODES"])
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                        .unwrap_or_default();
                    format!("--- CLUSTER NODES on {} ---\n{nodes}\n", self.ports[i])
                })
                .collect();
            panic!(
                "timed out after {HEALTH_DEADLINE:?} waiting for {what} (cluster {:?}); last seen: {seen}\n{views}{}",
                self.ports,
                self.logs()
            );
        }
    }

    /// The index of the master that owns `key`'s slot (by `CLUSTER KEYSLOT` and
    /// `CLUSTER NODES`, asked of a running node), also while that master is down.
    pub fn node_for_key(&self, key: &str) -> usize {
        let asked = (0..self.nodes.len()).find(|&i| self.nodes[i].is_running()).expect("no cluster node is running");
        let slot: u16 = self
            .redis_cli(asked, &["CLUSTER", "KEYSLOT", key])
            .parse()
            .unwrap_or_else(|e| panic!("CLUSTER KEYSLOT {key}: {e}"));
        let nodes = self.redis_cli(asked, &["CLUSTER", "NODES"]);
        // <id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot or range>...
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") {
                continue;
            }
            let owns = fields[8..].iter().filter(|s| !s.starts_with('[')).any(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                let (low, high): (u16, u16) = (low.parse().unwrap(), high.parse().unwrap());
                (low..=high).contains(&slot)
            });
            if owns {
                let port: u16 = fields[1]
                    .split('@')
                    .next()
                    .and_then(|address| address.rsplit(':').next())
                    .and_then(|port| port.parse().ok())
                    .unwrap_or_else(|| panic!("no port in CLUSTER NODES line {line:?}"));
                return self
                    .ports
                    .iter()
                    .position(|&p| p == port)
                    .unwrap_or_else(|| panic!("slot {slot} is owned by port {port}, not one of {:?}", self.ports));
            }
        }
        panic!("no master owns slot {slot} (key {key:?}) per node {}:\n{nodes}", self.ports[asked]);
    }

    /// Runs one command with `redis-cli` (no `-c`: it is not redirected) on node `i`; its raw
    /// output, trimmed. Error replies come back as text; panics if `redis-cli` fails.
    pub fn redis_cli(&self, i: usize, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.ports[i].to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli (is it on PATH?): {e}"));
        if !output.status.success() {
            panic!(
                "redis-cli {args:?} against {} failed ({}): {}{}\n{}",
                self.nodes[i].label,
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                self.nodes[i].logs()
            );
        }
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Waits until node `i` answers `PING` (in any cluster state).
    async fn wait_answers(&self, i: usize) {
        let (node, port) = (&self.nodes[i], self.ports[i]);
        let answered = poll(START_DEADLINE, Duration::from_millis(20), || {
            node.assert_alive();
            async move {
                match node_command(port, &["PING"]).await? {
                    pong if pong == "PONG" => Ok(()),
                    other => Err(other),
                }
            }
        })
        .await;
        if let Err(seen) = answered {
            panic!(
                "timed out after {START_DEADLINE:?} waiting for {} to answer PING; last seen: {seen}\n{}",
                node.label,
                node.logs()
            );
        }
    }

    fn logs(&self) -> String {
        self.nodes.iter().map(ServerProcess::logs).collect::<Vec<_>>().join("\n")
    }
}

fn free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A free port below the ephemeral range and below the cluster's (which a restart re-binds).
fn quiet_port() -> u16 {
    (0..1000).map(|_| fastrand::u16(5000..11000)).find(|&p| free(p)).expect("a free port in 5000..11000")
}

/// `count` distinct free ports whose cluster bus ports (port + 10000) are free too, both below
/// the kernel's ephemeral range (32768 and up here), so no client socket takes one while a node
/// is down for a restart.
fn cluster_ports(count: usize) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::new();
    for _ in 0..1000 {
        let port = fastrand::u16(12000..22000);
        let taken = |p: u16| ports.iter().any(|&q| q == p || q + 10000 == p || q == p + 10000);
        if taken(port) || !free(port) || !free(port + 10000) {
            continue;
        }
        ports.push(port);
        if ports.len() == count {
            return ports;
        }
    }
    panic!("found no {count} free ports with free cluster bus ports (got {ports:?})");
}

/// One command to one node over plain TCP, not cluster-aware; the reply as text.
async fn node_command(port: u16, args: &[&str]) -> Result<String, String> {
    let query = async {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).map_err(|e| e.to_string())?;
        let mut con = client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
        redis::cmd(args[0]).arg(&args[1..]).query_async::<String>(&mut con).await.map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), query).await.map_err(|_| format!("{args:?} timed out"))?
}

// ---------------------------------------------------------------------------------------------
// Smoke tests
// ---------------------------------------------------------------------------------------------

/// SET then GET through any async redis-rs connection.
async fn set_get(con: &mut impl redis::aio::ConnectionLike, key: &str, value: &str) -> redis::RedisResult<String> {
    redis::cmd("SET").arg(key).arg(value).exec_async(con).await?;
    redis::cmd("GET").arg(key).query_async(con).await
}

#[tokio::test]
async fn tls_with_client_certificate_serves_redis_rs_and_survives_a_restart() {
    let mut server = TlsRedis::start(true).await;
    assert_eq!(server.url(), format!("rediss://localhost:{}", server.port()));

    let certs = redis::TlsCertificates {
        client_tls: Some(redis::ClientTlsConfig {
            client_cert: std::fs::read(server.client_cert()).unwrap(),
            client_key: std::fs::read(server.client_key()).unwrap(),
        }),
        root_cert: Some(std::fs::read(server.ca_file()).unwrap()),
    };
    let client = redis::Client::build_with_tls(server.url(), certs).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.expect("mTLS connection");
    assert_eq!(set_get(&mut con, "pf:tls", "over-tls").await.unwrap(), "over-tls");
    assert_eq!(server.redis_cli(&["GET", "pf:tls"]), "over-tls");

    // Trusting the CA is not enough: the server wants a client certificate. (The refusal may
    // come at connect or, with TLS 1.3, at the first command.)
    let anonymous = redis::Client::build_with_tls(
        server.url(),
        redis::TlsCertificates { client_tls: None, root_cert: Some(std::fs::read(server.ca_file()).unwrap()) },
    )
    .unwrap();
    if let Ok(mut con) = anonymous.get_multiplexed_async_connection().await {
        let pong = redis::cmd("PING").query_async::<String>(&mut con).await;
        assert!(pong.is_err(), "a client without a certificate was served: {pong:?}");
    }

    // Down and back on the same port with the same certificates: a ConnectionManager
    // reconnects by itself.
    let mut manager = redis::aio::ConnectionManager::new(client.clone()).await.unwrap();
    assert_eq!(set_get(&mut manager, "pf:tls", "before").await.unwrap(), "before");
    server.stop();
    assert!(redis::cmd("PING").query_async::<String>(&mut manager).await.is_err(), "PING answered while stopped");
    server.restart().await;
    wait_for("the ConnectionManager to get through to the restarted TLS server", Duration::from_secs(20), || {
        let mut manager = manager.clone();
        async move { set_get(&mut manager, "pf:tls", "after").await.map_err(|e| e.to_string()) }
    })
    .await;
    assert_eq!(server.redis_cli(&["GET", "pf:tls"]), "after");
}

#[tokio::test]
async fn tls_acl_user_can_use_redis_and_a_wrong_password_cannot() {
    let server = TlsRedis::start(false).await;
    server.acl_setuser("shop", "s3cret");

    let client = redis::Client::build_with_tls(server.url_with_user("shop", "s3cret"), server.certificates()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.expect("connect as the ACL user");
    assert_eq!(set_get(&mut con, "pf:acl", "as-shop").await.unwrap(), "as-shop");
    assert_eq!(redis::cmd("ACL").arg("WHOAMI").query_async::<String>(&mut con).await.unwrap(), "shop");

    let wrong = redis::Client::build_with_tls(server.url_with_user("shop", "wrong"), server.certificates()).unwrap();
    match wrong.get_multiplexed_async_connection().await {
        Ok(mut con) => {
            panic!("a wrong password connected: PING -> {:?}", redis::cmd("PING").query_async::<String>(&mut con).await)
        }
        Err(e) => assert_eq!(e.kind(), redis::ErrorKind::AuthenticationFailed, "{e}"),
    }
}

#[tokio::test]
async fn cluster_serves_hash_tagged_keys_and_recovers_from_a_dead_master() {
    let mut cluster = RedisCluster::start().await;
    let ports = cluster.ports();
    assert_eq!(cluster.urls(), ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>());
    // The library's own keys for one product: hash-tagged by its id.
    let (keys, id) = (pricefront::cache::Keys::new("pf"), pricefront::domain::ProductId::parse("sku-1").unwrap());
    let (result, pending) = (keys.result(&id), keys.pending(&id));
    let (result, pending) = (result.as_str(), pending.as_str());

    // Few, short retries so that a command against the dead master fails at once. With the
    // defaults (`builder(urls).build()`: 16 retries, waits from 1.28 s growing to minutes) a
    // command during the outage does not fail: it is still retrying 20 s later, and succeeds
    // once the master is back.
    let client = redis::cluster::ClusterClient::builder(cluster.urls())
        .retries(2)
        .min_retry_wait(50)
        .max_retry_wait(200)
        .connection_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut con = client.get_async_connection().await.expect("cluster connection");
    for key in ["pf:a", "pf:b", "pf:c", "pf:d", result, pending] {
        assert_eq!(set_get(&mut con, key, key).await.unwrap(), key);
    }

    // Both keys hash to one slot, so one script may touch both.
    let script = "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[2]); \
                  return redis.call('GET', KEYS[1]) .. '/' .. redis.call('GET', KEYS[2])";
    let both: String = redis::cmd("EVAL")
        .arg(script)
        .arg(2)
        .arg(result)
        .arg(pending)
        .arg("r")
        .arg("p")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(both, "r/p");
    let untagged = redis::cmd("EVAL")
        .arg(script)
        .arg(2)
        .arg("pf:result:sku-1")
        .arg("pf:pending:sku-1")
        .arg("r")
        .arg("p")
        .query_async::<String>(&mut con)
        .await;
    assert!(untagged.is_err(), "keys in two slots in one script: {untagged:?}");

    let owner = cluster.node_for_key(result);
    assert_eq!(owner, cluster.node_for_key(pending));

    cluster.kill_master(owner);
    let started = Instant::now();
    let down = tokio::time::timeout(Duration::from_secs(30), set_get(&mut con, result, "while-down")).await;
    assert!(matches!(down, Ok(Err(_))), "a command for the dead master's slot: {down:?}");
    println!("a command against the dead master failed after {:?}", started.elapsed());

    // Once the survivors agree it is dead, they refuse everything, also keys they own.
    cluster.wait_down().await;
    println!("cluster down {:?} after the kill", started.elapsed());
    let elsewhere = (0..100).map(|n| format!("pf:other:{n}")).find(|k| cluster.node_for_key(k) != owner).unwrap();
    let refused = set_get(&mut con, &elsewhere, "x").await;
    assert!(refused.is_err(), "a living master served {elsewhere} while the cluster was down: {refused:?}");
    println!("a command for a living master while down: {}", refused.unwrap_err());

    cluster.restart_master(owner).await;
    let started = Instant::now();
    cluster.wait_healthy().await;
    println!("cluster healthy {:?} after the master was restarted", started.elapsed());

    // The same connection gets through again; the restarted master came back empty.
    let again = wait_for("the cluster connection to serve {sku-1} again", Duration::from_secs(30), || {
        let mut con = con.clone();
        async move {
            redis::cmd("GET").arg(pending).query_async::<Option<String>>(&mut con).await.map_err(|e| e.to_string())
        }
    })
    .await;
    assert_eq!(again, None, "the restarted master has no persistence");
    assert_eq!(set_get(&mut con, result, "after").await.unwrap(), "after");

    let mut fresh = client.get_async_connection().await.expect("a fresh cluster connection");
    for key in ["pf:a", "pf:b", result] {
        assert_eq!(set_get(&mut fresh, key, "fresh").await.unwrap(), "fresh");
    }
}
