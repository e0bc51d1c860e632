//! The web UI end to end, in Debian's Chromium driven by Playwright
//! (`tests/browser/ui_test.mjs`), against a real cluster built here: etcd,
//! two groups of a master and a replica each (added through the API), two
//! proxies, a dashboard with an admin token, and a load through both proxies
//! while the browser looks. The overview must show both proxies and both
//! groups with a non-zero rate, the slot map 1024 cells, refused changes the
//! API's own error text; when the dashboard has the migration API, a
//! migration started from the UI must show progress and finish.
//!
//! Screenshots go to `target/ui-screenshots/` (printed, and listed by
//! `tests/run.sh`). Needs node, `npm ci --prefix tests/browser` and
//! `/usr/bin/chromium` (`CHROMIUM` overrides): `.ci/run` installs them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::control_common::setup;
use shardis_tests::RespConn;

const TOKEN: &str = "ui-test-token-0123456789abcdef";
/// The load stops by itself after this long, whatever happens.
const LOAD_LIMIT: Duration = Duration::from_secs(240);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// Where the screenshots go: `<target>/ui-screenshots`, emptied first.
fn screenshots_dir() -> PathBuf {
    let dir = std::env::var_os("SHARDIS_UI_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("test executable");
            // target/<profile>/deps/<test> -> target
            exe.ancestors()
                .nth(3)
                .map(|t| t.join("ui-screenshots"))
                .unwrap_or_else(|| workspace().join("target/ui-screenshots"))
        });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the screenshots folder");
    dir
}

/// SET and GET through one proxy until `stop` (or [`LOAD_LIMIT`]).
fn load(addr: String, stop: Arc<AtomicBool>, seed: usize) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut conn = RespConn::connect(&addr);
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) && started.elapsed() < LOAD_LIMIT {
            let key = format!("ui:{}", (n as usize * 7 + seed) % 3000);
            let set = conn.cmd_text(&["SET", &key, "value"]);
            // A request may be refused for a moment while its slot moves.
            assert!(
                set == "+OK\r\n" || set.starts_with("-TRYAGAIN"),
                "SET {key}: {set}"
            );
            let _ = conn.cmd(&["GET", &key]);
            n += 2;
            if n.is_multiple_of(64) {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        n
    })
}

#[test]
fn the_web_ui_works_in_chromium() {
    let browser_dir = workspace().join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: `apt-get install chromium` (or `sudo bash .ci/run`)"
    );
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: `npm ci --prefix tests/browser` (or `sudo bash .ci/run`)"
    );

    let s = setup(&[2, 2], 2, |d| d.admin_token(TOKEN));
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = s
        .proxies
        .iter()
        .enumerate()
        .map(|(i, p)| load(p.addr(), stop.clone(), i))
        .collect();

    let shots = screenshots_dir();
    let ids: Vec<&str> = s.proxies.iter().map(|p| p.id()).collect();
    println!("UI screenshots: {}", shots.display());
    let out = Command::new("node")
        .arg(browser_dir.join("ui_test.mjs"))
        .current_dir(&browser_dir)
        .env("DASHBOARD_URL", s.dash.url())
        .env("ADMIN_TOKEN", TOKEN)
        .env("PROXY_IDS", ids.join(","))
        .env("GROUPS", "2")
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs (install Node.js 20+)");
    stop.store(true, Ordering::Relaxed);
    let requests: u64 = loads
        .into_iter()
        .map(|h| h.join().expect("load thread"))
        .sum();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    eprintln!("UI screenshots: {}", shots.display());
    assert!(
        out.status.success(),
        "the browser test failed ({}); screenshots so far in {}\n{stdout}\n{stderr}\n\
         dashboard log:\n{}",
        out.status,
        shots.display(),
        s.dash.stderr_tail(40)
    );
    assert!(requests > 0);
    assert!(shots.join("01-overview.png").exists());
}
