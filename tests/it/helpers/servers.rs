//! A private `redis-server` or tansu broker, killed on drop, for a test that stops, pauses
//! or restarts one: never the shared ones.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for};

/// A private `redis-server` on a free port, killed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    /// On a free port: `redis-server --port 0` does not listen on TCP at all (0 turns TCP off),
    /// so it cannot bind port 0 and report it; the port is picked here, with the race that has.
    pub async fn start(extra_args: &[&str]) -> Self {
        Self::start_on(free_port(), extra_args).await
    }

    pub async fn start_on(port: u16, extra_args: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra_args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let server = Self { child, port };
        let client = redis::Client::open(server.url()).unwrap();
        wait_for("a private redis-server", Duration::from_secs(10), || async {
            client.get_multiplexed_async_connection().await.map(drop).map_err(|e| e.to_string())
        })
        .await;
        server
    }

    /// Stops this server after `after`, keeps it down for `down`, then starts an empty one on
    /// the same port.
    pub async fn bounce(self, after: Duration, down: Duration) -> RedisServer {
        let port = self.port;
        tokio::time::sleep(after).await;
        drop(self);
        tokio::time::sleep(down).await;
        RedisServer::start_on(port, &[]).await
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) the server: stopped, its connections stay open
    /// and nothing on them is answered, as with a host gone silent.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().expect("kill on PATH");
        assert!(status.success(), "kill {signal}");
    }

    /// Runs one command with `redis-cli` against this server; its output.
    pub fn redis_cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli on PATH");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private tansu broker (in-memory storage) on its own port, killed on drop. Tests that
/// stop or restart a broker use one, never the shared broker.
pub struct Broker {
    child: Child,
    pub port: u16,
}

impl Broker {
    /// On a free port: tansu must advertise the address it listens on, so the port is known
    /// before it starts (picked here, with the race that has).
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    pub async fn start_on(port: u16) -> Self {
        let tansu = std::env::var("PRICEFRONT_TEST_TANSU")
            .expect("PRICEFRONT_TEST_TANSU must name the tansu binary (scripts/test.sh sets it)");
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        wait_for("a private broker", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map(drop).map_err(|e| e.to_string())
        })
        .await;
        Self { child, port }
    }

    /// `kafka.brokers` for it, as a TOML string literal.
    pub fn toml(&self) -> String {
        format!("\"127.0.0.1:{}\"", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
