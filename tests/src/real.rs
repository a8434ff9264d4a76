//! The real KalamDB server of `../shared/kalamdb-server`, for tests that
//! run the same exchanges against it and against the kit.

use std::path::PathBuf;
use std::process::Command;

/// Root password the real server is started with.
pub const REAL_ROOT_PASSWORD: &str = "kalamdb123";
/// JWT secret the real server is started with (also the kit's default).
pub const REAL_JWT_SECRET: &str = crate::DEFAULT_JWT_SECRET;

/// Where the real server's scripts are: `KALAMDB_SERVER_DIR`, else
/// `../shared/kalamdb-server` beside the workspace.
pub fn real_server_dir() -> PathBuf {
    std::env::var_os("KALAMDB_SERVER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/kalamdb-server")))
}

/// Whether the real server's start script is there.
pub fn real_server_present() -> bool {
    real_server_dir().join("start.sh").exists()
}

/// A throwaway real KalamDB server, stopped (and its data deleted) on drop.
#[derive(Debug)]
pub struct RealServer {
    url: String,
    pid: String,
    data_dir: String,
    dir: PathBuf,
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
        assert!(
            out.status.success(),
            "start.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} in start.sh output {line:?}"))
                .to_owned()
        };
        RealServer {
            url: field("URL="),
            pid: field("PID="),
            data_dir: field("DATA_DIR="),
            dir,
        }
    }

    /// Starts one with the defaults.
    pub fn start() -> RealServer {
        RealServer::start_with(&[])
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.url.clone()
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(self.dir.join("stop.sh"))
            .arg(&self.pid)
            .arg(&self.data_dir)
            .output();
    }
}
