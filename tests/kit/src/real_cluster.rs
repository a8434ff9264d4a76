//! A real 3-node KalamDB Raft cluster on this machine (the server of
//! `../shared/kalamdb-server`), for ignored integration tests: elections,
//! crashes, restarts and forwarding between nodes (PROTOCOL §10.1).
//!
//! ```no_run
//! use std::time::Duration;
//! use kalam_testkit::RealCluster;
//!
//! let cluster = RealCluster::start(3);
//! let leader = cluster.leader().expect("a leader");
//! cluster.kill(leader); // SIGKILL: a crash
//! let (new_leader, took) = cluster.wait_for_leader(Duration::from_secs(30)).expect("a new leader");
//! cluster.restart(leader); // same ports, data and configuration: it rejoins
//! # let _ = (new_leader, took);
//! ```
//!
//! Like [`RealServer`](crate::RealServer), nothing of it outlives the test
//! process: `Drop` stops every node and deletes its data directory, and a
//! watchdog (a small shell loop) does the same if the process dies without
//! unwinding.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::real::{REAL_JWT_SECRET, REAL_ROOT_PASSWORD, health, real_server_dir};

/// A throwaway real KalamDB cluster of `n` nodes on 127.0.0.1, each started
/// by `start.sh` with a `[cluster]` section (cluster id `c1`, node ids
/// `1..=n`, `user_shards = 2`), root password
/// [`REAL_ROOT_PASSWORD`] and JWT secret
/// [`REAL_JWT_SECRET`] on every node.
///
/// Nodes are addressed by index `0..n` (node id `index + 1`).
#[derive(Debug)]
pub struct RealCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
    healthy_after: Duration,
    leader_after: Duration,
    ready_after: Duration,
}

#[derive(Debug)]
struct Node {
    http_port: u16,
    rpc_port: u16,
    data_dir: String,
    /// The server binary and its environment, kept to start it again after
    /// a crash (when `/proc/<pid>` is gone).
    exe: PathBuf,
    env: Vec<(String, String)>,
    process: Mutex<Process>,
}

#[derive(Debug)]
struct Process {
    pid: String,
    /// Set once this process started the node itself (a restart), to reap it.
    child: Option<Child>,
}

/// What one `start.sh` left behind.
struct Started {
    pid: String,
    data_dir: String,
}

/// Ports handed out by this process and not to be picked again (another
/// cluster of the same test binary may not have bound them yet).
static TAKEN_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

impl RealCluster {
    /// Starts an `n`-node cluster: all nodes at once (each `start.sh` waits
    /// for its `/health`, and the nodes wait for their peers), then waits
    /// until every node reports the same leader and lists every node as an
    /// active voter. Panics with a plain message
    /// (after stopping whatever started) if the server is not there or the
    /// cluster does not come up; a port taken meanwhile by someone else is
    /// retried with new ports.
    pub fn start(n: usize) -> RealCluster {
        assert!(n >= 1, "a cluster needs at least one node");
        let dir = real_server_dir();
        assert!(
            dir.join("start.sh").exists(),
            "the real KalamDB server is not at {} (set KALAMDB_SERVER_DIR)",
            dir.display()
        );
        let t0 = Instant::now();
        let mut attempt = 0;
        let (ports, started) = loop {
            attempt += 1;
            let ports = free_ports(2 * n);
            let (http, rpc) = ports.split_at(n);
            let results = start_nodes(&dir, http, rpc);
            if results.iter().all(Result::is_ok) {
                break (ports, results.into_iter().filter_map(Result::ok).collect::<Vec<_>>());
            }
            // Stop the nodes that did start, delete their data.
            let mut errors = Vec::new();
            let mut lost_port = false;
            let stops: Vec<_> = results
                .into_iter()
                .enumerate()
                .filter_map(|(i, r)| match r {
                    Ok(s) => Some((s.pid, s.data_dir)),
                    Err(e) => {
                        lost_port |= e.contains("already in use") || e.contains("os error 98");
                        errors.push(format!("node {i} (port {}): {e}", http[i]));
                        None
                    }
                })
                .collect();
            stop_all(&dir, stops);
            release_ports(&ports);
            if !(lost_port && attempt < 3) {
                panic!("the KalamDB cluster did not start:\n{}", errors.join("\n"));
            }
        };
        let healthy_after = t0.elapsed();
        let nodes: Vec<Node> = started
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                // Its binary and environment now, while /proc still has them.
                let exe = std::fs::read_link(format!("/proc/{}/exe", s.pid)).unwrap_or_default();
                let env = std::fs::read(format!("/proc/{}/environ", s.pid))
                    .map(|e| parse_environ(&e))
                    .unwrap_or_default();
                Node {
                    http_port: ports[i],
                    rpc_port: ports[n + i],
                    data_dir: s.data_dir,
                    exe,
                    env,
                    process: Mutex::new(Process {
                        pid: s.pid,
                        child: None,
                    }),
                }
            })
            .collect();
        let mut cluster = RealCluster {
            nodes,
            dir,
            healthy_after,
            leader_after: Duration::ZERO,
            ready_after: Duration::ZERO,
        };
        cluster.watchdog();
        // `cluster` stops every node on drop if the wait below panics.
        let missing = cluster
            .nodes
            .iter()
            .any(|n| n.exe.as_os_str().is_empty() || n.env.is_empty());
        assert!(!missing, "could not read a node's binary or environment from /proc");
        // Ready: every node names the same leader and lists all `n` nodes as
        // active voters (right after start a node can still be a `learner`,
        // and a crash then would leave no quorum).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let views: Vec<Option<serde_json::Value>> = (0..n).map(|i| cluster.cluster_health(i)).collect();
            let leaders: Vec<Option<usize>> = views
                .iter()
                .map(|v| v.as_ref().and_then(|v| cluster.leader_in(v)))
                .collect();
            let agreed = leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0]);
            if agreed && cluster.leader_after.is_zero() {
                cluster.leader_after = t0.elapsed();
            }
            let voters = views.iter().all(|v| {
                v.as_ref().and_then(|v| v["nodes"].as_array()).is_some_and(|nodes| {
                    nodes.len() == n
                        && nodes.iter().all(|node| {
                            matches!(node["role"].as_str(), Some("leader" | "follower"))
                                && node["status"].as_str() == Some("active")
                        })
                })
            });
            if agreed && voters {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the KalamDB cluster is not ready after 60 s (leader as each node sees it: {leaders:?}; \
                 cluster health: {views:?}; logs in {})",
                cluster.data_dirs().join(", ")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster.ready_after = t0.elapsed();
        cluster
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes (never: [`start`](Self::start) needs one).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `http://127.0.0.1:PORT` of every node, by index.
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.url(i)).collect()
    }

    /// `http://127.0.0.1:PORT` of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].http_port)
    }

    /// `127.0.0.1:PORT` of node `i` (for a raw TCP connection).
    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].http_port)
    }

    /// The data directories (config `server.toml`, log `server.out`).
    pub fn data_dirs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.data_dir.clone()).collect()
    }

    /// How long [`start`](Self::start) took until every node answered
    /// `/health`.
    pub fn time_to_healthy(&self) -> Duration {
        self.healthy_after
    }

    /// How long [`start`](Self::start) took until every node reported the
    /// same leader.
    pub fn time_to_leader(&self) -> Duration {
        self.leader_after
    }

    /// How long [`start`](Self::start) took in all: until every node also
    /// listed every node as an active voter (`leader` or `follower`, not
    /// `learner`).
    pub fn time_to_ready(&self) -> Duration {
        self.ready_after
    }

    /// `GET /v1/api/cluster/health` of node `i` (localhost-only endpoint):
    /// `None` if it does not answer 200 with JSON within 2 s.
    pub fn cluster_health(&self, i: usize) -> Option<serde_json::Value> {
        let (status, body) = http(
            &self.addr(i),
            "GET",
            "/v1/api/cluster/health",
            None,
            None,
            Duration::from_secs(2),
        )
        .ok()?;
        if status != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// The leader as node `i` sees it (index), if `i` answers and knows one.
    pub fn leader_seen_by(&self, i: usize) -> Option<usize> {
        self.leader_in(&self.cluster_health(i)?)
    }

    /// The leader (index) a cluster health answer names.
    fn leader_in(&self, health: &serde_json::Value) -> Option<usize> {
        health["nodes"]
            .as_array()?
            .iter()
            .find(|node| node["is_leader"].as_bool() == Some(true))
            .and_then(|node| self.index_of(node))
    }

    /// The index of a `nodes[]` entry of the cluster health, by `api_addr`,
    /// else by `node_id`.
    fn index_of(&self, node: &serde_json::Value) -> Option<usize> {
        if let Some(addr) = node["api_addr"].as_str()
            && let Some(i) = (0..self.nodes.len()).find(|&i| self.url(i) == addr.trim_end_matches('/'))
        {
            return Some(i);
        }
        let id = node["node_id"].as_u64()? as usize;
        (1..=self.nodes.len()).contains(&id).then(|| id - 1)
    }

    /// The current leader (index), as the first live node that answers
    /// reports it; `None` if no live node answers or none knows a leader.
    pub fn leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.is_alive(i))
            .find_map(|i| self.cluster_health(i))
            .and_then(|health| self.leader_in(&health))
    }

    /// Polls (every 50 ms) until a live node reports a leader that is itself
    /// alive; returns it and how long that took, or `None` after `timeout`.
    pub fn wait_for_leader(&self, timeout: Duration) -> Option<(usize, Duration)> {
        let t0 = Instant::now();
        loop {
            for i in (0..self.nodes.len()).filter(|&i| self.is_alive(i)) {
                if let Some(l) = self.leader_seen_by(i)
                    && self.is_alive(l)
                {
                    return Some((l, t0.elapsed()));
                }
            }
            if t0.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether node `i`'s process is running (not dead, not a zombie).
    pub fn is_alive(&self, i: usize) -> bool {
        let mut process = self.lock(i);
        if let Some(child) = process.child.as_mut() {
            return matches!(child.try_wait(), Ok(None));
        }
        alive(&process.pid)
    }

    /// Crashes node `i`: SIGKILL, no graceful shutdown. Returns once the
    /// process is gone (reaped if this process started it; otherwise gone or
    /// a zombie of init). Its data directory stays for
    /// [`restart`](Self::restart). Nothing if it is not running.
    pub fn kill(&self, i: usize) {
        let mut process = self.lock(i);
        if let Some(mut child) = process.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        if !alive(&process.pid) {
            return;
        }
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", process.pid)).unwrap_or_default();
        assert!(
            comm.trim().starts_with("kalamdb-server"),
            "PID {} is '{}', not kalamdb-server; not killing it",
            process.pid,
            comm.trim()
        );
        let _ = Command::new("kill").arg("-KILL").arg(&process.pid).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(&process.pid) {
            assert!(
                Instant::now() < deadline,
                "node {i} (PID {}) survived SIGKILL",
                process.pid
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts node `i` again with the same ports, data directory and
    /// configuration (stopping it first, gracefully, if it runs); returns
    /// once it answers `/health`. It rejoins the cluster as a follower.
    pub fn restart(&self, i: usize) {
        let node = &self.nodes[i];
        if self.is_alive(i) {
            let pid = self.lock(i).pid.clone();
            let stopped = Command::new("bash")
                .arg(self.dir.join("stop.sh"))
                .arg(&pid)
                .env("KALAMDB_KEEP_DATA", "1")
                .output()
                .expect("run stop.sh");
            assert!(
                stopped.status.success(),
                "stop.sh: {}",
                String::from_utf8_lossy(&stopped.stderr)
            );
        }
        let mut process = self.lock(i);
        if let Some(mut child) = process.child.take() {
            let _ = child.wait();
        }
        let data_dir = PathBuf::from(&node.data_dir);
        let addr = self.addr(i);
        let deadline = Instant::now() + Duration::from_secs(60);
        let child = loop {
            let log = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(data_dir.join("server.out"))
                .expect("server.out");
            let mut child = Command::new(&node.exe)
                .arg(data_dir.join("server.toml"))
                .current_dir(&data_dir)
                .env_clear()
                .envs(node.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("server.out"))
                .stderr(log)
                .spawn()
                .expect("start the node again");
            let pid = child.id().to_string();
            // stop.sh (Drop, the watchdog) stops whatever server.pid names.
            std::fs::write(data_dir.join("server.pid"), &pid).expect("server.pid");
            process.pid = pid;
            let up = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break false; // died (a port not free yet?): try again
                }
                if health(&addr) {
                    break true;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "restarted node {i} did not answer /health in 60 s (see {}/server.out)",
                        node.data_dir
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            if up {
                break child;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} did not start again (see {}/server.out)",
                node.data_dir
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        process.child = Some(child);
    }

    fn lock(&self, i: usize) -> std::sync::MutexGuard<'_, Process> {
        self.nodes[i].process.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops every node if this process dies without dropping the cluster:
    /// a shell loop that waits for this process to end, then stops whatever
    /// each `server.pid` names (nothing once `Drop` deleted the directories).
    fn watchdog(&self) {
        let dirs: Vec<String> = self.nodes.iter().map(|n| format!("'{}'", n.data_dir)).collect();
        let any_dir: Vec<String> = dirs.iter().map(|d| format!("[ -d {d} ]")).collect();
        let script = format!(
            "while kill -0 {me} 2>/dev/null && {{ {any}; }}; do sleep 1; done; \
             for d in {dirs}; do [ -f \"$d/server.pid\" ] && bash '{stop}' \"$(cat \"$d/server.pid\")\" \"$d\" & done; wait",
            me = std::process::id(),
            any = any_dir.join(" || "),
            dirs = dirs.join(" "),
            stop = self.dir.join("stop.sh").display(),
        );
        let _ = Command::new("setsid")
            .arg("bash")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(|mut child| {
                // `setsid` forks only when it must; reap it from a thread.
                std::thread::spawn(move || child.wait());
            });
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        let stops = self
            .nodes
            .iter_mut()
            .map(|node| {
                let process = node.process.get_mut().unwrap_or_else(|p| p.into_inner());
                (process.pid.clone(), node.data_dir.clone())
            })
            .collect();
        stop_all(&self.dir, stops);
        for node in &mut self.nodes {
            let process = node.process.get_mut().unwrap_or_else(|p| p.into_inner());
            if let Some(mut child) = process.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let ports: Vec<u16> = self.nodes.iter().flat_map(|n| [n.http_port, n.rpc_port]).collect();
        release_ports(&ports);
    }
}

/// The `[cluster]` section of node `i` (node id `i + 1`).
fn cluster_toml(i: usize, http: &[u16], rpc: &[u16]) -> String {
    let mut toml = format!(
        "[cluster]\ncluster_id = \"c1\"\nnode_id = {}\nrpc_addr = \"127.0.0.1:{}\"\n\
         api_addr = \"http://127.0.0.1:{}\"\nuser_shards = 2\n",
        i + 1,
        rpc[i],
        http[i]
    );
    for j in (0..http.len()).filter(|&j| j != i) {
        toml += &format!(
            "\n[[cluster.peers]]\nnode_id = {}\nrpc_addr = \"127.0.0.1:{}\"\napi_addr = \"http://127.0.0.1:{}\"\n",
            j + 1,
            rpc[j],
            http[j]
        );
    }
    toml
}

/// Runs every node's `start.sh` at once (they wait for each other).
fn start_nodes(dir: &Path, http: &[u16], rpc: &[u16]) -> Vec<Result<Started, String>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..http.len())
            .map(|i| {
                let toml = cluster_toml(i, http, rpc);
                let port = http[i].to_string();
                scope.spawn(move || start_node(dir, &port, &toml))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("start thread panicked".into())))
            .collect()
    })
}

fn start_node(dir: &Path, port: &str, toml: &str) -> Result<Started, String> {
    let out = Command::new("bash")
        .arg(dir.join("start.sh"))
        .env("KALAMDB_ROOT_PASSWORD", REAL_ROOT_PASSWORD)
        .env("KALAMDB_JWT_SECRET", REAL_JWT_SECRET)
        .env("KALAMDB_PORT", port)
        .env("KALAMDB_EXTRA_TOML", toml)
        .env("KALAMDB_WAIT_SECS", "120")
        .output()
        .map_err(|e| format!("run start.sh: {e}"))?;
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k))
            .map(str::to_owned)
    };
    if let (Some(pid), Some(data_dir), true) = (field("PID="), field("DATA_DIR="), out.status.success()) {
        return Ok(Started { pid, data_dir });
    }
    // A server that did not answer in time is still running ("PID n still
    // running; see DIR/server.out"); one that died left its directory.
    let pid = stderr
        .split("(PID ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .map(str::to_owned);
    let data_dir = stderr
        .split_whitespace()
        .find_map(|w| {
            let w = w.trim_start_matches('(').trim_end_matches([')', ':', ';']);
            w.strip_suffix("/server.out").map(str::to_owned)
        })
        .filter(|d| d.contains("kalamdb-run."));
    match (pid, &data_dir) {
        (Some(pid), Some(d)) => stop_all(dir, vec![(pid, d.clone())]),
        (None, Some(d)) => {
            let _ = std::fs::remove_dir_all(d);
        }
        _ => {}
    }
    Err(format!("start.sh failed: {line} {stderr}"))
}

/// `stop.sh pid data_dir` for each, at once.
fn stop_all(dir: &Path, nodes: Vec<(String, String)>) {
    let stop = dir.join("stop.sh");
    std::thread::scope(|scope| {
        for (pid, data_dir) in nodes {
            let stop = &stop;
            scope.spawn(move || {
                let _ = Command::new("bash").arg(stop).arg(&pid).arg(&data_dir).output();
            });
        }
    });
}

/// Does process `pid` exist (and is it not a zombie)? As `stop.sh` checks.
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn parse_environ(bytes: &[u8]) -> Vec<(String, String)> {
    bytes
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// `count` distinct free ports in 20000–32767, as `start.sh` picks them
/// (below the kernel's ephemeral range, so outgoing connections do not take
/// them meanwhile), not handed out before by this process.
fn free_ports(count: usize) -> Vec<u16> {
    let mut taken = TAKEN_PORTS.lock().unwrap_or_else(|p| p.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    let seed = RandomState::new();
    let mut ports = Vec::with_capacity(count);
    let mut k = 0u64;
    while ports.len() < count {
        k += 1;
        assert!(k < 100_000, "no free ports in 20000-32767");
        let port = 20000 + (seed.hash_one((std::process::id(), k)) % 12768) as u16;
        if taken.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        taken.insert(port);
        ports.push(port);
    }
    ports
}

fn release_ports(ports: &[u16]) {
    let mut taken = TAKEN_PORTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(taken) = taken.as_mut() {
        for p in ports {
            taken.remove(p);
        }
    }
}

/// A small blocking HTTP/1.1 client for tests against real nodes: sends
/// `method path` to `addr` (`127.0.0.1:PORT` or `http://127.0.0.1:PORT`)
/// with `Connection: close`, a bearer token and a JSON body if given, and
/// returns the status and the whole body (chunked bodies decoded).
/// `timeout` bounds the connect and each read and write; errors are the
/// socket's (`ConnectionRefused`, `WouldBlock`/`TimedOut` on a timeout, …).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    json_body: Option<&str>,
    timeout: Duration,
) -> io::Result<(u16, String)> {
    let addr = addr.trim_start_matches("http://").trim_end_matches('/');
    let sock: SocketAddr = addr
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = bearer {
        req += &format!("Authorization: Bearer {token}\r\n");
    }
    let body = json_body.unwrap_or("");
    if json_body.is_some() {
        req += &format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    }
    req += "\r\n";
    req += body;
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let mut body = raw[split + 4..].to_vec();
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_line = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
