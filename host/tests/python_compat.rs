//! Every command-line form gives the same stdout, stderr and exit status under
//! `pyhost --engine stock` as under the `python3.13` pyhost embeds.

mod common;

use common::*;
use std::path::Path;
use std::process::Output;

/// Runs `args` under both, in `cwd`, with optional stdin, and returns (pyhost, python).
fn both(args: &[&str], cwd: Option<&Path>, stdin: Option<&str>) -> (Output, Output) {
    let mut host = pyhost();
    host.args(["--engine", "stock"]).args(args);
    let mut reference = python();
    reference.args(args);
    let mut outputs = Vec::new();
    for cmd in [&mut host, &mut reference] {
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        outputs.push(match stdin {
            Some(input) => run_with_stdin(cmd, input),
            None => run(cmd),
        });
    }
    let reference = outputs.pop().expect("two outputs");
    (outputs.pop().expect("two outputs"), reference)
}

#[track_caller]
fn assert_same(args: &[&str], cwd: Option<&Path>, stdin: Option<&str>) -> Output {
    let (host, reference) = both(args, cwd, stdin);
    assert_eq!(normalize(&text(&host.stdout)), normalize(&text(&reference.stdout)), "stdout of {args:?}");
    assert_eq!(normalize(&text(&host.stderr)), normalize(&text(&reference.stderr)), "stderr of {args:?}");
    assert_eq!(host.status, reference.status, "exit status of {args:?}");
    host
}

#[test]
fn dash_c_sets_argv_and_path_like_python() {
    let out = assert_same(
        &["-c", "import sys; print(sys.argv, repr(sys.path[0]), __name__)", "a", "-b", "--c"],
        None,
        None,
    );
    assert!(text(&out.stdout).contains("['-c', 'a', '-b', '--c']"));
}

#[test]
fn script_file_sets_argv_path0_and_main_like_python() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.py"),
        "import sys, os\nprint(sys.argv, sys.path[0] == os.path.dirname(os.path.abspath(__file__)), __name__, __file__)\n",
    )
    .unwrap();
    let out = assert_same(&["app.py", "x", "y"], Some(dir.path()), None);
    assert!(text(&out.stdout).contains("['app.py', 'x', 'y'] True __main__ /"));
}

#[test]
fn dash_m_runs_modules_and_packages_like_python() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mymod.py"), "import sys\nprint(__name__, sys.argv[1:], sys.path[0])\n")
        .unwrap();
    std::fs::create_dir(dir.path().join("pkg")).unwrap();
    std::fs::write(dir.path().join("pkg/__init__.py"), "").unwrap();
    std::fs::write(dir.path().join("pkg/__main__.py"), "import sys\nprint('pkg main', sys.argv)\n").unwrap();
    assert_same(&["-m", "mymod", "1", "2"], Some(dir.path()), None);
    assert_same(&["-m", "pkg", "z"], Some(dir.path()), None);
    assert_same(&["-m", "no_such_module_here"], Some(dir.path()), None);
}

#[test]
fn stdin_program_runs_like_python() {
    assert_same(&["-", "arg"], None, Some("import sys\nprint('from stdin', sys.argv)\n"));
    assert_same(&[], None, Some("print('no program: stdin is the script')\n"));
}

#[test]
fn exit_statuses_follow_system_exit_like_python() {
    for code in [
        "raise SystemExit(3)",
        "import sys; sys.exit('bye')",
        "import sys; sys.exit(None)",
        "import sys; sys.exit(0)",
        "import sys; sys.exit(255)",
        "raise SystemExit(1, 2)",
    ] {
        assert_same(&["-c", code], None, None);
    }
}

#[test]
fn uncaught_exception_prints_traceback_and_exits_1() {
    let out = assert_same(&["-c", "def f():\n    1/0\nf()"], None, None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("ZeroDivisionError"));
}

#[test]
fn keyboard_interrupt_ends_the_process_like_python() {
    use std::os::unix::process::ExitStatusExt;
    let out = assert_same(&["-c", "raise KeyboardInterrupt"], None, None);
    // Python re-raises SIGINT on itself, so a shell sees 130.
    assert_eq!(out.status.signal(), Some(2));
}

#[test]
fn python_flags_have_pythons_meaning() {
    let probe =
        "import sys; print(sys.flags, sys.warnoptions, sys._xoptions, sys.dont_write_bytecode, __debug__, \
                 sys.stdout.line_buffering, len(sys.path))";
    assert_same(&["-E", "-s", "-B", "-O", "-X", "dev", "-W", "error", "-u", "-q", "-c", probe], None, None);
    assert_same(&["-I", "-OO", "-S", "-c", probe], None, None);
    assert_same(&["-X", "utf8", "-Wignore::DeprecationWarning", "-bb", "-c", probe], None, None);
}

#[test]
fn version_flags_print_pythons_version() {
    for flag in ["-V", "--version", "-VV"] {
        assert_same(&[flag], None, None);
    }
}

#[test]
fn bad_option_and_missing_file_exit_2_like_python() {
    let out = assert_same(&["-Z"], None, None);
    assert_eq!(out.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let out = assert_same(&["no_such_script.py"], Some(dir.path()), None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("can't open file"));
    assert_same(&["-c"], None, None);
}

#[test]
fn interactive_mode_reads_stdin_after_the_program() {
    assert_same(&["-i", "-c", "x = 41"], None, Some("print(x + 1)\nraise SystemExit(4)\n"));
}

#[test]
fn help_shows_pyhost_options_then_pythons() {
    let (host, reference) = both(&["-h"], None, None);
    assert_eq!(host.status.code(), Some(0));
    let host_out = text(&host.stdout);
    assert!(host_out.starts_with("pyhost: run Python programs"), "{host_out}");
    assert!(host_out.contains("--engine NAME|PATH"));
    assert!(
        normalize(&host_out).ends_with(&normalize(&text(&reference.stdout))),
        "python's help follows pyhost's"
    );
}

#[test]
fn sys_executable_is_pyhost_and_orig_argv_is_the_whole_command_line() {
    let out = run(pyhost().args([
        "--engine",
        "stock",
        "-c",
        "import sys; print(sys.executable); print(sys.orig_argv)",
    ]));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next().unwrap(), pyhost_bin().display().to_string());
    assert!(lines
        .next()
        .unwrap()
        .ends_with("'--engine', 'stock', '-c', 'import sys; print(sys.executable); print(sys.orig_argv)']"));
}

#[test]
fn default_run_prints_nothing_of_pyhosts_own() {
    let out = run(pyhost().args(["-c", "pass"]));
    assert!(out.status.success());
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{}", text(&out.stderr));
}

/// Runs `exe` (plus `args`) in a pseudo-terminal through util-linux `script`, feeding `input`.
fn in_a_terminal(exe: &Path, args: &str, term: &str, input: &str) -> String {
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &format!("{} {args}", exe.display()), "/dev/null"]).env("TERM", term);
    for var in ["PYHOST_ENGINE", "PYHOST_ENGINE_PATH", "PYHOST_LOG", "PYTHONSTARTUP"] {
        cmd.env_remove(var);
    }
    text(&run_with_stdin(&mut cmd, input).stdout)
}

#[test]
fn repl_in_a_terminal_behaves_like_pythons() {
    let input = "1 + 1\nimport sys; sys.flags.interactive\nexit()\n";
    let host = in_a_terminal(&pyhost_bin(), "--engine stock -q", "dumb", input);
    let reference = in_a_terminal(&python_bin(), "-q", "dumb", input);
    assert!(host.contains("2\r\n"), "{host:?}");
    assert_eq!(normalize(&host), normalize(&reference));
    // The colour REPL (3.13's pyrepl) runs too.
    let host = in_a_terminal(&pyhost_bin(), "-q", "xterm-256color", "import pyhost; pyhost.engine\nexit()\n");
    assert!(host.contains("'stock'"), "{host:?}");
}

#[test]
fn fatal_signals_kill_the_process_like_python() {
    use std::os::unix::process::ExitStatusExt;
    for code in [
        "import faulthandler; faulthandler._sigsegv()",
        "import faulthandler; faulthandler.disable(); faulthandler._sigsegv()",
        "import faulthandler; faulthandler._sigabrt()",
        "import os, signal; os.kill(os.getpid(), signal.SIGBUS)",
    ] {
        let (host, reference) = both(&["-X", "faulthandler", "-c", code], None, None);
        assert_eq!(host.status.signal(), reference.status.signal(), "{code}: {}", text(&host.stderr));
        assert!(host.status.signal().is_some(), "{code} must kill the process");
    }
}

#[test]
fn closed_standard_streams_stay_closed_like_python() {
    use std::os::unix::process::CommandExt;
    let probe = "import os, sys\nos._exit(sum(1 << i for i, s in enumerate(('stdin', 'stdout', 'stderr')) if getattr(sys, s) is None))";
    for fd in 0..3 {
        let mut statuses = Vec::new();
        for mut cmd in [pyhost(), python()] {
            cmd.args(["-c", probe]);
            // SAFETY: close() is async-signal-safe; it runs in the child between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    libc_close(fd);
                    Ok(())
                });
            }
            statuses.push(run(&mut cmd).status.code());
        }
        assert_eq!(statuses[0], statuses[1], "fd {fd} closed");
        assert_eq!(statuses[0], Some(1 << fd), "fd {fd} closed: sys stream must be None");
    }
}

extern "C" {
    #[link_name = "close"]
    fn libc_close(fd: i32) -> i32;
}
