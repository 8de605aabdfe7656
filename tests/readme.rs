//! The README's shell sessions, run as written: "A 60-second tour" and "The REST API in one
//! minute" are extracted from README.md and typed into one bash, in a temporary copy of the
//! repository's `config/` directory (so the database they create is thrown away), against the
//! real binary on 127.0.0.1:8080, the address the README uses.
//!
//! What the test changes in the text, and nothing else:
//! - `./target/release/ringwatch` and `cargo run --release --` become the path of the binary
//!   cargo built for this test (`CARGO_BIN_EXE_ringwatch`, a debug build of the same code);
//! - `cargo build --release` is skipped: cargo has already built that binary.
//!
//! What the harness adds around the commands:
//! - every command reads stdin from /dev/null (the commands come in on bash's stdin);
//! - around a command that ends in `&`, it waits until the port is free (the previous server
//!   may still be draining), then until it accepts connections, as a person typing the next
//!   line would (at most `START` each);
//! - the REST API minute needs a running server, which the README leaves to the reader: the
//!   harness starts it with the tour's own `run` line and stops it with `kill -TERM %1`;
//! - every step is bounded (`STEP`); on a timeout bash and everything it started are killed.
//!
//! Checks: every command exits 0; an expected output printed in the README matches when its
//! pieces (split at line ends and at `…`) appear in the output in order; the tour shows no
//! output, so its steps are checked against what their comments promise (`TOUR_OUTPUTS`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The address every README command talks to.
const PORT: u16 = 8080;
/// Longest any one command may take (the slowest is a stop, bounded by `shutdown_grace` 5s).
const STEP: Duration = Duration::from_secs(30);
/// Longest a server started with `&` may take to accept connections.
const START: Duration = Duration::from_secs(20);
/// Printed after each command with its exit code, on a line of its own.
const DONE: &str = "__README_STEP_DONE__";

/// Tour commands (by prefix, after substitution) and what their output must contain.
const TOUR_OUTPUTS: [(&str, &[&str]); 3] = [
    ("{bin} check", &["config/ringwatch.yaml: ok (3 services, "]),
    (
        "curl -s localhost:8080/metrics",
        &[
            "ringwatch_probes_total{outcome=\"ok\"}",
            "ringwatch_services{status=\"unknown\"}",
        ],
    ),
    ("curl -s localhost:8080/readyz", &["ready"]),
];

/// One command of a session and the output the README shows for it (may be empty).
#[derive(Debug)]
struct Step {
    command: String,
    expected: String,
}

/// The first ```sh block after the heading `title`.
fn sh_block<'a>(readme: &'a str, title: &str) -> &'a str {
    let at = readme
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("README has no section {title:?}"));
    let rest = &readme[at..];
    let start = rest.find("```sh\n").expect("a ```sh block") + "```sh\n".len();
    let len = rest[start..].find("```").expect("the block's end");
    &rest[start..start + len]
}

/// Joins lines ending in `\` with the next one, as the shell does.
fn logical_lines(block: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut continued = false;
    for line in block.lines() {
        match out.last_mut() {
            Some(last) if continued => {
                last.push('\n');
                last.push_str(line);
            }
            _ => out.push(line.to_string()),
        }
        continued = line.ends_with('\\');
    }
    out
}

/// A block of plain commands, one per (logical) line.
fn commands(block: &str) -> Vec<Step> {
    logical_lines(block)
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .map(|command| Step {
            command,
            expected: String::new(),
        })
        .collect()
}

/// A transcript: `$ command` lines, each followed by the output it prints.
fn transcript(block: &str) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    for line in logical_lines(block) {
        match line.strip_prefix("$ ") {
            Some(command) => out.push(Step {
                command: command.to_string(),
                expected: String::new(),
            }),
            None => {
                let step = out.last_mut().expect("output before any command");
                step.expected.push_str(&line);
                step.expected.push('\n');
            }
        }
    }
    out
}

/// The README's text with the binary's path substituted; `None` for a step that is skipped.
fn substitute(command: &str, bin: &str) -> Option<String> {
    if command.trim_start().starts_with("cargo build --release") {
        return None;
    }
    Some(
        command
            .replace("./target/release/ringwatch", bin)
            .replace("cargo run --release --", bin),
    )
}

/// Whether `output` shows `expected`: its pieces, split at line ends and `…`, in order.
fn shows(output: &str, expected: &str) -> bool {
    let mut rest = output;
    for piece in expected
        .lines()
        .flat_map(|l| l.split('…'))
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match rest.find(piece) {
            Some(i) => rest = &rest[i + piece.len()..],
            None => return false,
        }
    }
    true
}

/// Fails the test unless nothing listens on the README's port: the tour must not talk to
/// another server, and must not hang waiting for one.
fn require_free_port() {
    if let Err(e) = TcpListener::bind(("127.0.0.1", PORT)) {
        panic!(
            "127.0.0.1:{PORT} is busy ({e}); the README tour listens there. Stop whatever \
             holds the port and run this test again."
        );
    }
    // curl tries `localhost` as ::1 first: a server there would answer instead of ours.
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, PORT));
    if TcpStream::connect_timeout(&v6, Duration::from_secs(1)).is_ok() {
        panic!("something listens on [::1]:{PORT}; curl localhost:{PORT} would reach it");
    }
}

/// One bash, fed a command at a time; everything it starts shares its process group.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr: PathBuf,
}

impl Shell {
    fn start(dir: &Path) -> Shell {
        let stderr = dir.join("shell-stderr.log");
        let mut child = Command::new("bash")
            .args(["--noprofile", "--norc"])
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .process_group(0)
            .spawn()
            .expect("bash (the README's shell)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Shell {
            child,
            stdin,
            lines,
            stderr,
        }
    }

    /// Runs one command; returns its exit code and output. Panics after `STEP`.
    fn run(&mut self, command: &str) -> (i32, String) {
        let script = format!("{{ {command}\n}} </dev/null\nprintf '\\n{DONE}%d\\n' $?\n");
        self.stdin
            .write_all(script.as_bytes())
            .and_then(|()| self.stdin.flush())
            .unwrap_or_else(|e| panic!("bash is gone ({e}) before {command:?}"));
        let deadline = Instant::now() + STEP;
        let mut output = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => match line.strip_prefix(DONE) {
                    Some(code) => {
                        let code = code.parse().unwrap_or(-1);
                        return (code, output.join("\n").trim_end().to_string());
                    }
                    None => output.push(line),
                },
                Err(RecvTimeoutError::Timeout) => self.fail(&format!(
                    "{command:?} did not finish within {STEP:?}; output so far:\n{}",
                    output.join("\n")
                )),
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("bash exited during {command:?}"))
                }
            }
        }
    }

    /// Waits until nothing listens on the README's port (a server stopped before may still
    /// be draining), so that the next server is the one that answers.
    fn wait_for_free_port(&mut self, command: &str) {
        let deadline = Instant::now() + START;
        while TcpListener::bind(("127.0.0.1", PORT)).is_err() {
            if Instant::now() > deadline {
                self.fail(&format!(
                    "127.0.0.1:{PORT} still busy after {START:?}, before {command:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the README's port accepts connections (a server was started with `&`).
    fn wait_for_port(&mut self, command: &str) {
        let addr = SocketAddr::from(([127, 0, 0, 1], PORT));
        let deadline = Instant::now() + START;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                self.fail(&format!(
                    "{command:?} was not listening on {addr} after {START:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Panics with the shell's stderr (where the server logs) after killing everything.
    fn fail(&mut self, why: &str) -> ! {
        self.kill();
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        panic!("{why}\n--- shell stderr ---\n{stderr}");
    }

    fn kill(&mut self) {
        // SAFETY: kill(2) on the process group this test created (bash's pid is its id).
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // Also on a failed assertion: never leave a server holding the port.
        self.kill();
    }
}

/// Runs `steps` in `shell`, checking exit codes, the README's outputs and `promised`.
fn run_steps(shell: &mut Shell, steps: &[Step], bin: &str, promised: &[(&str, &[&str])]) {
    for step in steps {
        let Some(command) = substitute(&step.command, bin) else {
            continue;
        };
        if command.trim_end().ends_with('&') {
            shell.wait_for_free_port(&command);
        }
        let (code, output) = shell.run(&command);
        if code != 0 {
            shell.fail(&format!("{command:?} exited {code}; output:\n{output}"));
        }
        if !shows(&output, &step.expected) {
            shell.fail(&format!(
                "{command:?} printed\n{output}\nbut the README shows\n{}",
                step.expected
            ));
        }
        for (prefix, needles) in promised {
            let prefix = prefix.replace("{bin}", bin);
            if let Some(missing) = needles
                .iter()
                .find(|n| command.starts_with(&prefix) && !output.contains(*n))
            {
                shell.fail(&format!(
                    "{command:?} printed\n{output}\nwithout {missing:?}"
                ));
            }
        }
        if command.trim_end().ends_with('&') {
            shell.wait_for_port(&command);
        }
    }
}

/// Copies the files of `from` into `to` (the example configs: no subdirectories).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read config dir") {
        let path = entry.expect("entry").path();
        if path.is_file() && path.extension().is_some_and(|e| e == "yaml") {
            let name = path.file_name().expect("file name");
            std::fs::copy(&path, to.join(name)).expect("copy");
        }
    }
}

#[test]
fn readme_sessions_run_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let tour = commands(sh_block(&readme, "A 60-second tour"));
    let api = transcript(sh_block(&readme, "The REST API in one minute"));
    let run = tour
        .iter()
        .find(|s| s.command.contains(" run --config ") && s.command.trim_end().ends_with('&'))
        .expect("the tour starts the server in the background");
    assert!(
        api.iter().any(|s| !s.expected.is_empty()),
        "the API minute shows outputs"
    );
    require_free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&root.join("config"), &dir.path().join("config"));
    let bin = common::bin();
    let mut shell = Shell::start(dir.path());
    run_steps(&mut shell, &tour, bin, &TOUR_OUTPUTS);
    // The API minute talks to a running server: start it as the tour does, stop it after.
    let around = |command: &str| Step {
        command: command.to_string(),
        expected: String::new(),
    };
    run_steps(&mut shell, &[around(&run.command)], bin, &[]);
    run_steps(&mut shell, &api, bin, &[]);
    run_steps(&mut shell, &[around("kill -TERM %1; wait %1")], bin, &[]);
}

#[test]
fn the_transcript_parser_reads_the_readme_form() {
    let steps = transcript(
        "$ curl -s -X POST x \\\n    -d '{}'\n{\"a\":1,\n \"b\":2,…}\n$ true\n$ echo hi\nhi\n",
    );
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0].command, "curl -s -X POST x \\\n    -d '{}'");
    assert!(shows("{\"a\":1,\"b\":2,\"c\":3}", &steps[0].expected));
    assert!(
        !shows("{\"b\":2,\"a\":1}", &steps[0].expected),
        "order matters"
    );
    assert_eq!(steps[1].expected, "");
    assert_eq!(steps[2].expected, "hi\n");
    assert_eq!(substitute("cargo build --release", "/b"), None);
    assert_eq!(
        substitute("./target/release/ringwatch check", "/b").as_deref(),
        Some("/b check")
    );
}

#[test]
fn links_in_readme_and_docs_point_into_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let canonical_root = root.canonicalize().expect("repository root");
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut bad = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(target) = rest.split(')').next() else {
                continue;
            };
            let path = target.split('#').next().unwrap_or("");
            if path.is_empty() || path.contains("://") || path.starts_with("mailto:") {
                continue;
            }
            let resolved = file.parent().expect("dir").join(path);
            let inside = resolved
                .canonicalize()
                .is_ok_and(|p| p.starts_with(&canonical_root));
            if !inside {
                bad.push(format!("{}: {target}", file.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "links to nothing in the repository:\n{}",
        bad.join("\n")
    );
}
