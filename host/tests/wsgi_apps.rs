//! Real third-party WSGI applications, unchanged, served by `pyhost --engine parallel -m
//! parallel.serve` from a venv made by pyhost (`pyhost -m venv`, packages from PyPI): a Flask
//! app, a Bottle app and a Django app (which needs zoneinfo in the workers), each route
//! checked over loopback.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const FLASK_APP: &str = r#"
from flask import Flask, jsonify, render_template_string, request
import parallel

app = Flask(__name__)
WORDS = parallel.share({"hello": "bonjour"})


@app.route("/")
def index():
    return render_template_string("<p>{{ greeting }} from Flask</p>", greeting=WORDS["hello"])


@app.route("/json")
def json_route():
    return jsonify(word=WORDS.get(request.args.get("w", ""), "?"))


@app.route("/echo", methods=["POST"])
def echo():
    return request.get_data()
"#;

const BOTTLE_APP: &str = r#"
import bottle

app = bottle.Bottle()


@app.route("/")
def index():
    return "bottle index"


@app.route("/hello/<name>")
def hello(name):
    return {"hello": name}
"#;

const DJANGO_APP: &str = r#"
import django
from django.conf import settings

settings.configure(DEBUG=False, ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], SECRET_KEY="not secret",
                   USE_TZ=True, TIME_ZONE="Europe/Paris", MIDDLEWARE=[], INSTALLED_APPS=[])
django.setup()

from django.http import HttpResponse, JsonResponse
from django.urls import path
from django.utils import timezone


def index(request):
    return HttpResponse("django index")


def info(request):
    now = timezone.localtime(timezone.now())
    return JsonResponse({"q": request.GET.get("q"), "tz": str(now.tzinfo)})


urlpatterns = [path("", index), path("info", info)]

from django.core.wsgi import get_wsgi_application

app = get_wsgi_application()
"#;

/// Starts `python --engine parallel -m parallel.serve MODULE:app` in `folder`; returns the
/// server and its port once it listens.
fn serve(python: &std::path::Path, folder: &std::path::Path, module: &str) -> (Child, u16) {
    let mut child = std::process::Command::new(python)
        .args(["--engine", "parallel", "-m", "parallel.serve", &format!("{module}:app"), "--port", "0"])
        .args(["--workers", "2"])
        .current_dir(folder)
        .env_remove("PYHOST_ENGINE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let stderr = child.stderr.take().expect("piped");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    loop {
        match received.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                if let Some(port) = line.split("http://127.0.0.1:").nth(1) {
                    let port = port.split_whitespace().next().and_then(|p| p.parse().ok()).expect("a port");
                    return (child, port);
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{module}: the server did not start:\n{seen}");
            }
        }
    }
}

/// One HTTP/1.0 request; the response's status line and body.
fn request(port: u16, method: &str, path: &str, body: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

fn stop(mut child: Child) {
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server did not exit within 30 s of SIGTERM");
}

/// (method, path, request body, expected response body)
type Route = (&'static str, &'static str, &'static str, &'static str);

#[test]
fn flask_bottle_and_django_apps_are_served_unchanged() {
    let python = wsgi_apps_venv();
    let folder = tempfile::tempdir().expect("temp dir");
    for (module, source) in [("flask_app", FLASK_APP), ("bottle_app", BOTTLE_APP), ("django_app", DJANGO_APP)]
    {
        std::fs::write(folder.path().join(format!("{module}.py")), source).expect("write the app");
    }
    let routes: [(&str, &[Route]); 3] = [
        (
            "flask_app",
            &[
                ("GET", "/", "", "<p>bonjour from Flask</p>"),
                ("GET", "/json?w=hello", "", r#"{"word":"bonjour"}"#),
                ("POST", "/echo", "posted body", "posted body"),
            ],
        ),
        ("bottle_app", &[("GET", "/", "", "bottle index"), ("GET", "/hello/bob", "", r#"{"hello": "bob"}"#)]),
        (
            "django_app",
            &[
                ("GET", "/", "", "django index"),
                ("GET", "/info?q=1", "", r#"{"q": "1", "tz": "Europe/Paris"}"#),
            ],
        ),
    ];
    for (module, checks) in routes {
        let (server, port) = serve(&python, folder.path(), module);
        let mut failures = Vec::new();
        for &(method, path, body, expected) in checks {
            let (status, answer) = request(port, method, path, body);
            if !status.contains(" 200 ") || answer.trim() != expected {
                failures
                    .push(format!("{module} {method} {path}: {status} {answer:?} (expected {expected:?})"));
            }
        }
        stop(server);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
