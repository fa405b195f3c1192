//! The real binaries as child processes, with this test's config file alone, their JSON logs
//! in a file each. They bind port 0 and the test reads what they bound from their logs (the
//! producer's `producer listening`, the consumer's `metrics listening`): no port is picked
//! here, freed, and raced for. A process that must fail at start-up runs through
//! [`TestEnv::run_to_exit`], which waits for no log line.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;

use super::{TestEnv, wait_for};

impl TestEnv {
    /// Starts the real `consumer` binary with this test's config, capturing its JSON logs, and
    /// waits until its `/metrics` listens.
    pub async fn spawn_consumer_process(&self) -> ConsumerProcess {
        self.spawn_consumer_process_with(&[]).await
    }

    /// [`Self::spawn_consumer_process`] with more environment (which wins over ours). It binds
    /// port 0 for its metrics listener (unless `env` names one) and says in its log which port
    /// it got, as the producer does.
    pub async fn spawn_consumer_process_with(&self, env: &[(&str, String)]) -> ConsumerProcess {
        self.start_consumer_process(env, None).await
    }

    /// [`Self::spawn_consumer_process`] with its wall clock shifted by `offset` (`+3s`, `-3s`,
    /// through libfaketime), for a clock that disagrees with Redis's.
    pub async fn spawn_consumer_process_shifted(&self, offset: &str) -> ConsumerProcess {
        self.start_consumer_process(&[], Some(offset)).await
    }

    async fn start_consumer_process(&self, env: &[(&str, String)], clock: Option<&str>) -> ConsumerProcess {
        let mut vars = vec![("PRICEFRONT__CONSUMER__METRICS_LISTEN", "127.0.0.1:0".to_owned())];
        vars.extend(env.iter().cloned());
        let (child, log) = self.spawn_binary(env!("CARGO_BIN_EXE_consumer"), &vars, clock);
        // Owned before the wait, so that a failed wait kills it.
        let mut consumer = ConsumerProcess { child, metrics: String::new(), log };
        let [listen] = logged_addresses(&mut consumer.child, &consumer.log, "metrics listening", ["listen"]).await;
        consumer.metrics = format!("http://{listen}/metrics");
        consumer
    }

    /// Starts the real `producer` binary with this test's config on a port of its own, and
    /// waits until it is ready.
    pub async fn spawn_producer_process(&self) -> ProducerProcess {
        self.spawn_producer_process_with(&[]).await
    }

    /// [`Self::spawn_producer_process`] with more environment (which wins over ours). It
    /// binds port 0 for both listeners (unless `env` names them) and says in its log which
    /// ports it got: no port is picked here and freed for it, which another process may take.
    pub async fn spawn_producer_process_with(&self, env: &[(&str, String)]) -> ProducerProcess {
        let mut vars = vec![
            ("PRICEFRONT__PRODUCER__LISTEN", "127.0.0.1:0".to_owned()),
            ("PRICEFRONT__PRODUCER__OPS_LISTEN", "127.0.0.1:0".to_owned()),
        ];
        vars.extend(env.iter().cloned());
        let (child, log) = self.spawn_binary(env!("CARGO_BIN_EXE_producer"), &vars, None);
        let mut producer = ProducerProcess { child, base: String::new(), ops: String::new(), log };
        let [listen, ops] =
            logged_addresses(&mut producer.child, &producer.log, "producer listening", ["listen", "ops"]).await;
        (producer.base, producer.ops) = (format!("http://{listen}"), format!("http://{ops}"));
        let url = format!("{}/readyz", producer.base);
        wait_for("the producer process to be ready", Duration::from_secs(60), || async {
            match self.http.get(&url).send().await {
                Ok(res) if res.status() == 200 => Ok(()),
                Ok(res) => Err(res.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        producer
    }

    /// Runs `binary` like [`Self::spawn_binary`] until it exits by itself (a start-up
    /// failure), within `deadline`; its status and stderr.
    pub async fn run_to_exit(&self, binary: &str, env: &[(&str, String)], deadline: Duration) -> (ExitStatus, String) {
        let mut command = tokio::process::Command::new(binary);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PRICEFRONT")) {
            command.env_remove(key);
        }
        command
            .env("PRICEFRONT_CONFIG", &self.config_path)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let output = tokio::time::timeout(deadline, command.output())
            .await
            .unwrap_or_else(|_| panic!("{binary} still running after {deadline:?}"))
            .unwrap();
        (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
    }

    /// Runs `binary` with this test's config file and only `env` besides (which wins over
    /// ours); its JSON logs go to a file named after the test in the temp directory (printed
    /// if the test fails), whose path is returned with the child.
    fn spawn_binary(&self, binary: &str, env: &[(&str, String)], clock: Option<&str>) -> (Child, PathBuf) {
        let mut command = Command::new(binary);
        if let Some(offset) = clock {
            // libfaketime preloaded into the binary itself (not the `faketime` wrapper, whose
            // child would outlive a kill), shifting the wall clock only: a shifted monotonic
            // clock makes the runtime's timers spin.
            let library = std::env::var("PRICEFRONT_TEST_LIBFAKETIME")
                .expect("PRICEFRONT_TEST_LIBFAKETIME: scripts/test.sh names libfaketime.so.1");
            command.env("LD_PRELOAD", library).env("FAKETIME", offset).env("DONT_FAKE_MONOTONIC", "1");
        }
        // Only this test's config file (and `env`) may configure it.
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PRICEFRONT")) {
            command.env_remove(key);
        }
        let name = std::path::Path::new(binary).file_name().unwrap().to_string_lossy().into_owned();
        let log = std::env::temp_dir().join(format!("{}-{name}-{}.log", self.name, uuid::Uuid::new_v4().simple()));
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .env("PRICEFRONT_CONFIG", &self.config_path)
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(file)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {binary}: {e}"));
        eprintln!("{name} (pid {}) logs to {}", child.id(), log.display());
        (child, log)
    }
}

pub struct ConsumerProcess {
    pub child: Child,
    /// Its `/metrics` URL.
    pub metrics: String,
    /// Its JSON logs.
    pub log: PathBuf,
}

impl ConsumerProcess {
    /// The partitions this process holds now, from its `pricefront_partition_assigned` gauge
    /// (empty while it is not up yet).
    pub async fn assigned(&self, http: &reqwest::Client) -> Vec<i64> {
        let Ok(res) = http.get(&self.metrics).send().await else { return Vec::new() };
        let text = res.text().await.unwrap_or_default();
        text.lines()
            .filter_map(|line| line.strip_prefix("pricefront_partition_assigned{partition=\""))
            .filter_map(|rest| rest.split_once("\"} "))
            .filter(|(_, value)| value.trim() == "1")
            .filter_map(|(partition, _)| partition.parse().ok())
            .collect()
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }
}

impl Drop for ConsumerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `producer` binary, killed on drop.
pub struct ProducerProcess {
    pub child: Child,
    pub base: String,
    /// Its ops routes (`/metrics`, `/readyz` with details).
    pub ops: String,
    /// Its JSON logs.
    pub log: PathBuf,
}

impl Drop for ProducerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The addresses a child process logged it listens on: the `fields` of the first line of its
/// JSON log whose message is `message` (the binaries log what they bound, port 0 included).
/// Fails at once, with the log, if the process exits first (a start-up failure).
pub async fn logged_addresses<const N: usize>(
    child: &mut Child,
    log: &Path,
    message: &str,
    fields: [&str; N],
) -> [String; N] {
    wait_for(&format!("{message:?} in {}", log.display()), Duration::from_secs(60), || {
        // Asked before the log is read: once it has exited, what the log holds is all there is.
        let exited = child.try_wait().unwrap();
        async move {
            let text = std::fs::read_to_string(log).map_err(|e| e.to_string())?;
            let Some(line) = text
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|l| l["message"] == message)
            else {
                if let Some(status) = exited {
                    panic!("{} exited ({status}) before logging {message:?}; its log:\n{text}", log.display());
                }
                return Err(format!("no {message:?} line yet"));
            };
            let field =
                |name: &str| line[name].as_str().map(str::to_owned).ok_or_else(|| format!("no {name} in {line}"));
            let mut out = Vec::with_capacity(N);
            for name in fields {
                out.push(field(name)?);
            }
            Ok(out.try_into().expect("N fields"))
        }
    })
    .await
}

/// Waits until every consumer process holds at least one partition; returns what each holds.
pub async fn wait_all_assigned(http: &reqwest::Client, consumers: &[&ConsumerProcess]) -> Vec<Vec<i64>> {
    wait_for("every consumer to hold partitions", Duration::from_secs(60), || async {
        let held: Vec<Vec<i64>> = join_all(consumers.iter().map(|c| c.assigned(http))).await;
        if held.iter().all(|h| !h.is_empty()) { Ok(held) } else { Err(format!("{held:?}")) }
    })
    .await
}
