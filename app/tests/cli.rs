//! `lethe` with arguments is the CLI (no window is opened).

use std::process::Command;

#[test]
fn lethe_help_lists_the_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .arg("--help")
        .output()
        .expect("run lethe --help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("doctor"), "{text}");
}

#[test]
fn unknown_command_fails_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_lethe"))
        .arg("no-such-command")
        .output()
        .expect("run lethe");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-command"));
}
