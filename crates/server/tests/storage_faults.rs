//! Storage faults as a clean state, never a crash or a silent loss (issue 13, findings 6 and 7):
//! files that stop being writable under load, a damaged write-ahead log at start-up, a damaged
//! history database, and `coapgate check`. All about SQLite's files, so skipped when the suite
//! runs on PostgreSQL (`common::sqlite_only`).
//!
//! Tests run as root, which ignores file modes, so "read-only" is made with the immutable
//! attribute (`chattr +i`): no write reaches the file through any descriptor, open or new, and
//! a page of a shared mapping cannot be dirtied (ext4 answers with SIGBUS) — the state that
//! crashed the server. Without `chattr` or on a file system without it, that test says so and
//! passes without checking (see `immutable`).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coapgate_coap::message::{Code, Message, MessageType, Token, option};
use coapgate_storage::{SqliteStore, Store};
use common::*;

/// Sets or clears the immutable attribute of every file in `dir`; false when chattr cannot.
fn immutable(dir: &Path, on: bool) -> bool {
    let files: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    let status = Command::new("chattr").arg(if on { "+i" } else { "-i" }).args(&files).status();
    matches!(status, Ok(s) if s.success())
}

/// Clears the attribute even when the test fails, so the directory can be removed.
struct Restore(PathBuf);
impl Drop for Restore {
    fn drop(&mut self) {
        immutable(&self.0, false);
    }
}

/// Whether the process is still running (a dead child stays a zombie until the harness reaps it).
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or("").split_whitespace().next().unwrap_or("Z");
    state != "Z" && state != "X"
}

/// When a request was sent, when its answer came, and the answer's code.
type Answers = Arc<Mutex<Vec<(Instant, Instant, Code)>>>;

/// One device posting CONs back to back, logging every answer.
fn device(server: SocketAddr, path: Vec<String>, n: usize, stop: Arc<AtomicBool>, log: Answers) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 1500];
    for seq in 0u32.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut m = Message::new(MessageType::Confirmable, Code::POST, (seq as u16).wrapping_add(n as u16 * 7919));
        m.token = Token::from_slice(&seq.to_be_bytes()).unwrap();
        for s in &path {
            m.add_option(option::URI_PATH, s.as_bytes().to_vec());
        }
        m.payload = format!("RO-{n},default,temperature,{seq},humidity,1").into_bytes();
        let sent = Instant::now();
        socket.send_to(&m.encode(), server).unwrap();
        let deadline = sent + Duration::from_secs(3);
        while Instant::now() < deadline {
            match socket.recv_from(&mut buf) {
                Ok((len, _)) => match Message::parse(&buf[..len]) {
                    Ok(r) if r.token == m.token && !r.code.is_empty() => {
                        log.lock().unwrap().push((sent, Instant::now(), r.code));
                        break;
                    }
                    _ => continue,
                },
                Err(_) => {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
            }
        }
    }
}

/// Finding 6: the WAL index was the `-shm` file mapped into memory; once it could not be
/// written the server died of SIGBUS. Now every commit fails cleanly (5.00, never 2.01) while
/// the files are immutable, the process stays up, and uplinks are stored again once they are
/// writable, without a restart.
#[test]
fn read_only_files_under_load_answer_5xx_and_recover() {
    if sqlite_only("read-only SQLite data files; PostgreSQL's outage is postgres_backend.rs's") {
        return;
    }
    let server = Server::start();
    let integration = server.seed_integration();
    let path = endpoint_path(&integration);
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let devices: Vec<_> = (0..4)
        .map(|n| {
            let (path, stop, log, coap) = (path.clone(), stop.clone(), log.clone(), server.coap);
            std::thread::spawn(move || device(coap, path, n, stop, log))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let _restore = Restore(server.data_dir.clone());
    if !immutable(&server.data_dir, true) {
        eprintln!("chattr +i is not available here: this test cannot make files read-only for root; skipped");
        stop.store(true, Ordering::Relaxed);
        return;
    }
    let read_only_from = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let read_only_until = Instant::now();
    assert!(alive(server.pid()), "the server died while its files were read-only");
    immutable(&server.data_dir, false);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    devices.into_iter().for_each(|d| d.join().unwrap());
    assert!(alive(server.pid()), "the server died after its files became writable again");

    let log = log.lock().unwrap();
    let before = log.iter().filter(|(sent, _, _)| *sent < read_only_from).count();
    // Requests sent and answered inside the read-only window (a commit that started just
    // before it may still succeed, one that ends after it may too).
    let during: Vec<Code> = log
        .iter()
        .filter(|(sent, answered, _)| *sent > read_only_from + Duration::from_millis(200) && *answered < read_only_until)
        .map(|(_, _, c)| *c)
        .collect();
    let after: Vec<Code> = log
        .iter()
        .filter(|(sent, _, _)| *sent > read_only_until + Duration::from_millis(700))
        .map(|(_, _, c)| *c)
        .collect();
    assert!(before > 0, "no uplink was answered before the files became read-only");
    assert!(!during.is_empty(), "no answers while the files were read-only");
    assert!(
        during.iter().all(|c| *c == Code::INTERNAL_SERVER_ERROR || *c == Code::SERVICE_UNAVAILABLE),
        "while read-only every answer must be 5.00 or 5.03: {during:?}"
    );
    assert!(!after.is_empty() && after.iter().all(|c| *c == Code::CREATED), "writable again: 2.01 without a restart: {after:?}");
    // What was answered 2.01 is readable.
    assert!(server.device("RO-0").is_some());
}

/// A data directory as a server leaves it after SIGKILL, with `commits` transactions still
/// only in the main database's write-ahead log (no checkpoint ran). The store is open while the
/// files are copied, so the log is not checkpointed away on close.
fn directory_with_wal(commits: usize) -> PathBuf {
    let source = temp_dir("wal-source");
    let copy = temp_dir("wal-copy");
    let store = SqliteStore::open(&source.join("coapgate.db")).unwrap();
    for i in 0..commits {
        store.put_setting(&format!("probe-{i}"), &"x".repeat(900)).unwrap();
    }
    for entry in std::fs::read_dir(&source).unwrap() {
        let file = entry.unwrap().path();
        std::fs::copy(&file, copy.join(file.file_name().unwrap())).unwrap();
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&source);
    copy
}

fn coapgate(args: &[&str], data_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coapgate"))
        .args(args)
        .env("COAPGATE_DATA_DIR", data_dir)
        .env_remove("DATABASE_URL")
        .env_remove("COAPGATE_SALVAGE")
        .env("HTTP_BIND_ADDRESS", "127.0.0.1")
        .env("HTTP_BIND_PORT", "0")
        .env("COAP_BIND_ADDRESS", "127.0.0.1")
        .env("COAP_BIND_PORT", "0")
        .env("COAPGATE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Cuts the main WAL inside a frame half way through the log.
fn truncate_wal(dir: &Path) {
    let wal = dir.join("coapgate.db-wal");
    let len = std::fs::metadata(&wal).unwrap().len();
    assert!(len > 100_000, "the log holds the commits: {len} bytes");
    std::fs::OpenOptions::new().write(true).open(&wal).unwrap().set_len(len / 2 + 1000).unwrap();
}

/// Overwrites 4 KiB in the middle of the main WAL, leaving its length as it was.
fn overwrite_wal(dir: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let wal = dir.join("coapgate.db-wal");
    let len = std::fs::metadata(&wal).unwrap().len();
    let mut file = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    file.seek(SeekFrom::Start(len / 3)).unwrap();
    file.write_all(&[0x5a; 4096]).unwrap();
}

/// Finding 7: SQLite drops a WAL's tail after damage without a word; start-up now refuses,
/// naming the file and what would be lost, and `--salvage` starts and reports the loss.
#[test]
fn damaged_wal_stops_startup_unless_salvaged() {
    if sqlite_only("a damaged SQLite write-ahead log, --salvage and coapgate check") {
        return;
    }
    for (how, damage) in [("truncated", truncate_wal as fn(&Path)), ("overwritten", overwrite_wal)] {
        let dir = directory_with_wal(200);
        damage(&dir);
        let out = coapgate(&["serve"], &dir);
        let said = text(&out);
        assert!(!out.status.success(), "{how} WAL: the server must refuse to start:\n{said}");
        let error = said.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("{how}: no error line:\n{said}"));
        assert!(error.contains("coapgate.db-wal") && error.contains("--salvage"), "{how}: {error}");
        assert!(error.contains("committed transaction"), "{how}: says what would be lost: {error}");
        println!("{how}: {error}");

        let check = coapgate(&["check"], &dir);
        assert!(!check.status.success(), "{how}: check must fail:\n{}", text(&check));
        assert!(text(&check).contains("coapgate.db-wal"), "{how}: {}", text(&check));

        let server = Server::start_in(dir.clone(), &[], &["--salvage"]);
        assert!(server.stdout_text().contains("salvaged  ") && server.stdout_text().contains("coapgate.db-wal"), "{}", server.stdout_text());
        let dir = server.kill();
        // Salvaging discarded the damaged tail for good: the next start needs no flag.
        let server = Server::start_in(dir, &[], &[]);
        let dir = server.kill();
        let check = coapgate(&["check"], &dir);
        assert!(check.status.success(), "{how}: after salvage the directory checks clean:\n{}", text(&check));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A log SQLite can replay completely (as a SIGKILL leaves it) is not damage.
#[test]
fn an_intact_wal_starts_without_a_word() {
    if sqlite_only("an intact SQLite write-ahead log and coapgate check") {
        return;
    }
    let dir = directory_with_wal(50);
    let check = coapgate(&["check"], &dir);
    assert!(check.status.success(), "{}", text(&check));
    assert_eq!(text(&check).lines().filter(|l| l.starts_with("ok ")).count(), 3, "{}", text(&check));
    let server = Server::start_in(dir, &[], &[]);
    assert!(!server.stdout_text().contains("salvaged"));
}

/// Finding 7: a damaged history database was reported under the main database's name.
#[test]
fn a_damaged_history_database_is_named() {
    if sqlite_only("a damaged SQLite history file and coapgate check") {
        return;
    }
    let dir = directory_with_wal(1);
    let history = dir.join("coapgate-history.db");
    std::fs::write(&history, "not a database ".repeat(300)).unwrap();
    let out = coapgate(&["serve"], &dir);
    assert!(!out.status.success());
    let said = text(&out);
    let error = said.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("no error line:\n{said}"));
    assert!(error.contains("coapgate-history.db:"), "the history file is named: {error}");
    let check = coapgate(&["check"], &dir);
    assert!(!check.status.success());
    let damaged: Vec<String> = text(&check).lines().filter(|l| l.starts_with("DAMAGED")).map(String::from).collect();
    assert!(!damaged.is_empty() && damaged.iter().all(|l| l.contains("coapgate-history.db")), "{damaged:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `coapgate check` does not read files a running server holds: it says so and fails.
#[test]
fn check_refuses_a_directory_in_use() {
    if sqlite_only("coapgate check reads SQLite files only") {
        return;
    }
    let server = Server::start();
    let check = coapgate(&["check"], &server.data_dir);
    assert!(!check.status.success());
    assert!(text(&check).contains("in use by a running server"), "{}", text(&check));
}
