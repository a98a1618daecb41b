//! `granite demo` as a new user runs it: quiet, with where to sign in on the screen, realistic
//! machines, a clean Ctrl-C, and nothing left behind.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::driver::{free_port, granite};
use crate::helpers::Client;
use crate::process::WorkDir;

#[test]
fn the_demo_is_quiet_lifelike_and_leaves_nothing_behind() {
    let work = WorkDir::new();
    let port = free_port();
    let mut child = granite()
        .args(["demo", "--bind", &format!("127.0.0.1:{port}")])
        // Its temporary data lands in this test's folder; its log level is its own default.
        .env("TMPDIR", &work.0)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line.clone());
            all.push(line);
        }
        all
    });
    let sign_in = loop {
        let line = seen
            .recv_timeout(Duration::from_secs(30))
            .expect("the demo says where to sign in");
        if line.contains("sign in as") {
            break line;
        }
    };
    let password = sign_in.rsplit(' ').next().unwrap().to_owned();
    let email = sign_in
        .split("sign in as ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();

    let mut admin = Client::new(SocketAddr::from(([127, 0, 0, 1], port)));
    assert_eq!(admin.sign_in(&email, &password).status, 303);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = admin.get("/api-management");
        let lifelike = [
            "Windows 11 Pro 23H2",
            "Ubuntu 24.04.1 LTS",
            "macOS 14.6 Sonoma",
        ]
        .iter()
        .all(|os| page.body.contains(os));
        if lifelike && page.body.contains("data-metric=\"jobs-queued\"") {
            assert!(!page.body.contains(">simulated<"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo's machines did not appear: {}",
            page.body
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let demo_data = || {
        std::fs::read_dir(&work.0)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("granite-demo-"))
            .count()
    };
    assert_eq!(
        demo_data(),
        1,
        "the demo keeps its data in a temporary folder"
    );

    // Ctrl-C.
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(45);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let stdout = reader.join().unwrap().join("\n");
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        !stderr.contains("WARN") && !stderr.contains("ERROR"),
        "a clean stop: {stderr}"
    );
    assert!(
        !stderr.contains("GRANITE_ADMIN_EMAIL") && !stdout.contains("GRANITE_ADMIN_EMAIL"),
        "nothing about settings the user never made"
    );
    assert!(stdout.contains("its data was deleted"), "{stdout}");
    assert_eq!(demo_data(), 0, "nothing left behind");
}
