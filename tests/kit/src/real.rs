//! The real KalamDB server of `../shared/kalamdb-server`, for tests that
//! run the same exchanges against it and against the kit.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Root password the real server is started with.
pub const REAL_ROOT_PASSWORD: &str = "kalamdb123";
/// JWT secret the real server is started with (also the kit's default).
pub const REAL_JWT_SECRET: &str = crate::DEFAULT_JWT_SECRET;

/// Where the real server's scripts are: `KALAMDB_SERVER_DIR`, else
/// `../shared/kalamdb-server` beside the workspace.
pub fn real_server_dir() -> PathBuf {
    std::env::var_os("KALAMDB_SERVER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/kalamdb-server")))
}

/// Whether the real server's start script is there.
pub fn real_server_present() -> bool {
    real_server_dir().join("start.sh").exists()
}

/// A throwaway real KalamDB server, stopped (and its data deleted) on drop.
///
/// It never outlives the test process: `Drop` stops it, including while a
/// failing test unwinds; a failed start stops whatever it left running; and
/// a watchdog (a small shell loop beside the server) stops it if the test
/// process dies without unwinding (aborted or killed).
#[derive(Debug)]
pub struct RealServer {
    url: String,
    data_dir: String,
    dir: PathBuf,
    /// The running server: its PID, and its `Child` once
    /// [`restart`](Self::restart) started it (to reap it when it stops).
    process: Mutex<(String, Option<Child>)>,
}

impl RealServer {
    /// Starts one with `extra_env` added (e.g. `KALAMDB_JWT_EXPIRY_HOURS`).
    /// Panics with a plain message if the server is not there: call it only
    /// from tests that were asked to run against it.
    pub fn start_with(extra_env: &[(&str, &str)]) -> RealServer {
        let dir = real_server_dir();
        let script = dir.join("start.sh");
        assert!(
            script.exists(),
            "the real KalamDB server is not at {} (set KALAMDB_SERVER_DIR)",
            dir.display()
        );
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .env("KALAMDB_ROOT_PASSWORD", REAL_ROOT_PASSWORD)
            .env("KALAMDB_JWT_SECRET", REAL_JWT_SECRET);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run start.sh");
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k))
                .map(str::to_owned)
        };
        let (Some(pid), Some(data_dir), Some(url), true) =
            (field("PID="), field("DATA_DIR="), field("URL="), out.status.success())
        else {
            // start.sh gave up; a server that did not answer in time is
            // still running ("PID n still running"): stop it.
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            if let Some(pid) = stderr
                .split("(PID ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .or(field("PID=").as_deref())
            {
                let _ = Command::new("bash").arg(dir.join("stop.sh")).arg(pid).output();
            }
            panic!("start.sh failed: {line} {stderr}");
        };
        let server = RealServer {
            url,
            data_dir,
            dir,
            process: Mutex::new((pid, None)),
        };
        server.watchdog();
        server
    }

    /// Starts one with the defaults.
    pub fn start() -> RealServer {
        RealServer::start_with(&[])
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Stops the server (SIGTERM, as an operator would) and starts it again
    /// on the same port with the same data directory and configuration:
    /// tables, rows and users survive, connections and subscriptions do not.
    /// Returns once it answers `/health` again. Blocks the calling thread
    /// for about a second.
    pub fn restart(&self) {
        self.restart_with(None);
    }

    /// Like [`restart`](Self::restart), with a new JWT secret (a redeploy
    /// that rotates it): every token issued before is refused with
    /// `INVALID_CREDENTIALS`; users and passwords are unchanged.
    pub fn restart_with_jwt_secret(&self, secret: &str) {
        self.restart_with(Some(secret));
    }

    fn restart_with(&self, jwt_secret: Option<&str>) {
        let mut process = self.process.lock().unwrap_or_else(|p| p.into_inner());
        let pid = process.0.clone();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("the server's binary");
        // The server's own environment (start.sh's KALAMDB_* settings).
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the server's environment");
        let mut env: Vec<(String, String)> = environ
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();
        if let Some(secret) = jwt_secret {
            // The server reads it from its config file and its environment.
            env.retain(|(k, _)| k != "KALAMDB_JWT_SECRET");
            env.push(("KALAMDB_JWT_SECRET".into(), secret.into()));
            let toml = PathBuf::from(&self.data_dir).join("server.toml");
            let text = std::fs::read_to_string(&toml).expect("server.toml");
            let text: Vec<String> = text
                .lines()
                .map(|l| {
                    if l.trim_start().starts_with("jwt_secret") {
                        format!("jwt_secret = \"{secret}\"")
                    } else {
                        l.to_owned()
                    }
                })
                .collect();
            std::fs::write(&toml, text.join("\n") + "\n").expect("server.toml");
        }
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
        if let Some(mut child) = process.1.take() {
            let _ = child.wait();
        }
        let data_dir = PathBuf::from(&self.data_dir);
        let addr = self.url.trim_start_matches("http://").to_owned();
        let deadline = Instant::now() + Duration::from_secs(60);
        let child = loop {
            let log = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(data_dir.join("server.out"))
                .expect("server.out");
            let mut child = Command::new(&exe)
                .arg(data_dir.join("server.toml"))
                .current_dir(&data_dir)
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("server.out"))
                .stderr(log)
                .spawn()
                .expect("start the server again");
            let new_pid = child.id().to_string();
            // stop.sh deletes the data dir only if server.pid names the server.
            std::fs::write(data_dir.join("server.pid"), &new_pid).expect("server.pid");
            *process = (new_pid, None);
            let up = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break false; // died (the port not free yet?): try again
                }
                if health(&addr) {
                    break true;
                }
                assert!(
                    Instant::now() < deadline,
                    "the restarted server did not answer /health (see {}/server.out)",
                    self.data_dir
                );
                std::thread::sleep(Duration::from_millis(50));
            };
            if up {
                break child;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not start again (see {}/server.out)",
                self.data_dir
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        process.1 = Some(child);
    }

    /// Stops the server if this process dies without dropping it: a shell
    /// loop that waits for this process to end, then stops whatever
    /// `server.pid` names (nothing once `Drop` deleted the data directory).
    fn watchdog(&self) {
        let script = format!(
            "while kill -0 {me} 2>/dev/null && [ -d '{dir}' ]; do sleep 1; done; \
             [ -f '{dir}/server.pid' ] && exec bash '{stop}' \"$(cat '{dir}/server.pid')\" '{dir}'",
            me = std::process::id(),
            dir = self.data_dir,
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

/// Whether `GET /health` at `addr` answers 200.
pub(crate) fn health(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

impl Drop for RealServer {
    fn drop(&mut self) {
        let process = self.process.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = Command::new("bash")
            .arg(self.dir.join("stop.sh"))
            .arg(&process.0)
            .arg(&self.data_dir)
            .output();
        if let Some(mut child) = process.1.take() {
            let _ = child.wait();
        }
    }
}
