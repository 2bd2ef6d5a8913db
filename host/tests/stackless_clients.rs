//! Third-party blocking clients, unchanged, made concurrent by `stackless.patch_all()` under
//! `--engine stackless`: requests (urllib3) from 1,000 tasklets against a local http.server
//! with a tasklet per connection, and redis-py against a real redis-server (Debian's
//! package, started here) with 1,000 tasklets blocked in BLPOP at once. The packages come from
//! PyPI into a venv made by pyhost (`pyhost -m venv`).

mod common;
use common::*;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server on a free loopback port, without persistence; stopped on drop.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("addr")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--maxclients", "4000"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {port} within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisServer { child, port, _dir: dir }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn requests_and_redis_run_concurrently_in_tasklets_under_patch_all() {
    if !tool_available("redis-server") {
        return;
    }
    let python = stackless_clients_venv();
    let redis = RedisServer::start();
    let script = workspace_root().join("tests/python/stackless_clients/real_clients.py");
    let out = run(Command::new(&python)
        .args(["--engine", "stackless"])
        .arg(&script)
        .arg(redis.port.to_string())
        .env_remove("PYHOST_ENGINE"));
    let stdout = text(&out.stdout);
    assert!(out.status.success() && stdout.ends_with("OK\n"), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("requests: 1000 GETs") && stdout.contains("redis: 1000 BLPOPs"), "{stdout}");
}
