//! The command line: `pyhost [pyhost options] [python options] (-c CMD | -m MOD | FILE | -) [ARGS…]`
//! or `pyhost [pyhost options] COMMAND …`.
//!
//! pyhost's own options are long options that come first (`--engine NAME`, `--verbose`); the
//! first argument that is not one of them starts python's command line, which CPython itself
//! parses (so every python flag keeps python's meaning, including python's `-v`). A management
//! command is recognized only as that first argument and only by its exact name; a script whose
//! name is a command word runs as `pyhost ./engines` (or any path with a `/`).

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// pyhost's own options, shared by every action.
#[derive(Debug, Default, Clone)]
pub struct HostOptions {
    /// `--engine NAME|PATH`; `None` means `PYHOST_ENGINE` or the default.
    pub engine: Option<String>,
    /// `--verbose` given this many times.
    pub verbose: u8,
}

/// What the user asked for.
#[derive(Debug)]
pub enum Action {
    Command(Command),
    RunPython(PythonCommandLine),
}

/// The python part of the command line, handed to CPython unchanged.
#[derive(Debug, Clone)]
pub struct PythonCommandLine {
    /// `argv[0]` as the user invoked pyhost.
    pub argv0: OsString,
    /// Everything after pyhost's own options.
    pub args: Vec<OsString>,
    /// The full original command line, for `sys.orig_argv`.
    pub orig_argv: Vec<OsString>,
}

#[derive(Debug)]
pub struct Invocation {
    pub options: HostOptions,
    pub action: Action,
}

/// The management commands (see `pyhost -h`).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the engines pyhost finds, with their version, CPython tag and path.
    Engines {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the host version, CPython version, ABI version and engine search path.
    Info {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A/B-benchmark engines on the same program (see `pyhost bench --help`).
    Bench(Box<crate::bench::BenchArgs>),
    /// Create a new engine crate that builds and loads as it is (like `cargo new`).
    NewEngine(NewEngineArgs),
}

impl Command {
    const NAMES: [&'static str; 4] = ["engines", "info", "bench", "new-engine"];
}

/// `pyhost new-engine NAME [DIR]`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Then build and load it:
  cargo build --manifest-path NAME/Cargo.toml
  pyhost --engine NAME/target/debug/libpyhost_engine_NAME.so -c \"import pyhost; print(pyhost.engine)\"")]
pub struct NewEngineArgs {
    /// The engine's name: lowercase letters, digits and `_`, starting with a letter. The library
    /// is `libpyhost_engine_NAME.so`, and `pyhost --engine NAME` finds it once installed.
    pub name: String,
    /// The folder to create (default: ./NAME); it must not exist or be empty.
    pub dir: Option<PathBuf>,
    /// The pyhost-abi crate the engine builds against (default: the abi/ folder of the source
    /// tree this pyhost was built from).
    #[arg(long, value_name = "PATH")]
    pub abi_path: Option<PathBuf>,
    /// Which CPython the engine targets.
    #[arg(long, value_enum, default_value_t = crate::scaffold::PythonChoice::Abi3)]
    pub python: crate::scaffold::PythonChoice,
}

#[derive(Debug, Parser)]
#[command(name = "pyhost", disable_version_flag = true)]
struct CommandParser {
    #[command(subcommand)]
    command: Command,
    /// Show pyhost's own diagnostics (discovery, loading, timings) on stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

pub const ENGINE_ENV: &str = "PYHOST_ENGINE";

impl Invocation {
    /// Parses `argv` (including `argv[0]`).
    pub fn parse(argv: Vec<OsString>) -> Result<Invocation, String> {
        let mut options = HostOptions::default();
        let mut index = 1;
        while let Some(arg) = argv.get(index).and_then(|a| a.to_str()) {
            if arg == "--engine" {
                let value = argv
                    .get(index + 1)
                    .and_then(|v| v.to_str())
                    .ok_or("--engine needs an engine name or a path to an engine library")?;
                options.engine = Some(value.to_string());
                index += 2;
            } else if let Some(value) = arg.strip_prefix("--engine=") {
                options.engine = Some(value.to_string());
                index += 1;
            } else if arg == "--verbose" {
                options.verbose = options.verbose.saturating_add(1);
                index += 1;
            } else {
                break;
            }
        }
        if let Some(engine) = &options.engine {
            if engine.is_empty() {
                return Err("--engine needs an engine name or a path to an engine library".into());
            }
        }
        let rest = &argv[index.min(argv.len())..];
        if let Some(first) = rest.first().and_then(|a| a.to_str()) {
            if Command::NAMES.contains(&first) {
                let mut clap_args: Vec<OsString> = vec!["pyhost".into()];
                clap_args.extend(rest.iter().cloned());
                let parsed = CommandParser::try_parse_from(clap_args).unwrap_or_else(|err| err.exit());
                if std::path::Path::new(first).is_file() {
                    eprintln!(
                        "pyhost: note: running the `{first}` command; to run the file ./{first}, use `pyhost ./{first}`"
                    );
                }
                options.verbose = options.verbose.saturating_add(parsed.verbose);
                return Ok(Invocation { options, action: Action::Command(parsed.command) });
            }
        }
        let argv0 = argv.first().cloned().unwrap_or_else(|| "pyhost".into());
        Ok(Invocation {
            options,
            action: Action::RunPython(PythonCommandLine { argv0, args: rest.to_vec(), orig_argv: argv }),
        })
    }
}

/// pyhost's part of `pyhost -h`; CPython prints python's options right after it.
pub const HELP_PREAMBLE: &str = "\
pyhost: run Python programs with an evaluation engine chosen at run time.

usage: pyhost [--engine NAME|PATH] [--verbose] [python option] ... [-c cmd | -m mod | file | -] [arg] ...
       pyhost [--verbose] engines [--json]    list the engines found
       pyhost [--verbose] info [--json]       host, CPython and ABI versions, engine search path
       pyhost bench -e A -e B [options] (FILE | -c CMD | -m MOD) [ARGS]   A/B benchmark (bench --help)
       pyhost new-engine NAME [DIR] [--python abi3|cp313] [--abi-path PATH]   create an engine crate

pyhost options (they come before any python option):
--engine NAME|PATH : the engine to run with (default: $PYHOST_ENGINE, else `stock`); a PATH
         (containing `/`) loads that library; a NAME is searched in $PYHOST_ENGINE_PATH, then
         next to the pyhost binary. Child processes started through sys.executable keep it.
--verbose : pyhost's own diagnostics on stderr (same as PYHOST_LOG=debug).
A script named like a command runs as `pyhost ./engines`.

Python's options, as python3 reads them:
";

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Invocation {
        Invocation::parse(args.iter().map(OsString::from).collect()).unwrap()
    }

    #[test]
    fn engine_options_come_off_the_front_and_python_gets_the_rest() {
        let inv = parse(&["pyhost", "--engine", "stock", "-X", "dev", "app.py", "--engine", "x"]);
        assert_eq!(inv.options.engine.as_deref(), Some("stock"));
        let Action::RunPython(program) = inv.action else { panic!("expected python") };
        assert_eq!(program.args, ["-X", "dev", "app.py", "--engine", "x"]);
        assert_eq!(program.orig_argv.len(), 8);
    }

    #[test]
    fn engine_equals_form_is_accepted() {
        let inv = parse(&["pyhost", "--engine=parallel", "-c", "pass"]);
        assert_eq!(inv.options.engine.as_deref(), Some("parallel"));
    }

    #[test]
    fn command_words_are_commands_only_in_first_position() {
        assert!(matches!(
            parse(&["pyhost", "engines"]).action,
            Action::Command(Command::Engines { json: false })
        ));
        assert!(matches!(
            parse(&["pyhost", "--verbose", "info", "--json"]).action,
            Action::Command(Command::Info { json: true })
        ));
        assert!(matches!(parse(&["pyhost", "./engines"]).action, Action::RunPython(_)));
        assert!(matches!(parse(&["pyhost", "-c", "pass", "engines"]).action, Action::RunPython(_)));
    }

    #[test]
    fn new_engine_takes_a_name_an_optional_folder_and_options() {
        let Action::Command(Command::NewEngine(args)) = parse(&["pyhost", "new-engine", "demo"]).action
        else {
            panic!("expected new-engine")
        };
        assert_eq!(args.name, "demo");
        assert_eq!(args.dir, None);
        assert_eq!(args.abi_path, None);
        assert_eq!(args.python, crate::scaffold::PythonChoice::Abi3);
        let inv = parse(&["pyhost", "new-engine", "demo", "x/y", "--python", "cp313", "--abi-path", "/a"]);
        let Action::Command(Command::NewEngine(args)) = inv.action else { panic!("expected new-engine") };
        assert_eq!(args.dir.as_deref(), Some(std::path::Path::new("x/y")));
        assert_eq!(args.abi_path.as_deref(), Some(std::path::Path::new("/a")));
        assert_eq!(args.python, crate::scaffold::PythonChoice::Cp313);
        assert!(matches!(parse(&["pyhost", "./new-engine"]).action, Action::RunPython(_)));
    }

    #[test]
    fn python_short_v_stays_pythons() {
        let inv = parse(&["pyhost", "-v", "-c", "pass"]);
        assert_eq!(inv.options.verbose, 0);
        assert!(matches!(inv.action, Action::RunPython(_)));
    }

    #[test]
    fn missing_engine_value_is_an_error() {
        assert!(Invocation::parse(vec!["pyhost".into(), "--engine".into()]).is_err());
        assert!(Invocation::parse(vec!["pyhost".into(), "--engine=".into()]).is_err());
    }
}
