//! The milter client against real milters started by the test (loopback only). A peer that is
//! not installed skips its test with a printed reason; CI installs them (.ci/run).

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulwark::config::{load_str, MilterConfig};
use bulwark::filters::milter::protocol::ConnectFamily;
use bulwark::filters::milter::{BodySource, MessageFacts, Milter, MilterVerdict};

const EICAR: &str = concat!(
    "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR",
    "-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
);

/// A daemon killed when the test ends.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn installed(binary: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(binary))
        .find(|path| path.exists())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn spawn(program: &Path, args: &[&str], log: &Path) -> Peer {
    let out = std::fs::File::create(log).expect("log file");
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .spawn()
        .expect("spawn peer");
    Peer(child)
}

fn wait_for(what: &str, timeout: Duration, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn milter_config(address: &str) -> MilterConfig {
    let text = format!(
        "[server]\nhostname = \"mx.test\"\nspool_dir = \"/tmp/s\"\ncontrol_socket = \"/tmp/c\"\n\
         [[listener]]\naddress = \"127.0.0.1:25\"\nrole = \"mx\"\n\
         [[milter]]\nname = \"peer\"\naddress = \"{address}\"\ncommand_timeout = \"20s\"\n"
    );
    let config = load_str(&text, "test", Path::new("/")).expect("config");
    config.milters[0].clone()
}

struct Body(Option<Vec<u8>>);

#[async_trait::async_trait]
impl BodySource for Body {
    async fn next_chunk(
        &mut self,
        _max: usize,
    ) -> Result<Option<Vec<u8>>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.0.take())
    }
}

fn facts<'a>(lists: &'a [Vec<String>; 7], queue_id: &str) -> MessageFacts<'a> {
    MessageFacts {
        client_name: "client.example",
        client: ConnectFamily::Inet("127.0.0.1:40000".parse().expect("address")),
        helo: "client.example",
        sender: "sender@example.org",
        sender_args: Vec::new(),
        recipients: vec!["rcpt@example.com".into()],
        headers: vec![
            ("From".into(), "<sender@example.org>".into()),
            ("To".into(), "<rcpt@example.com>".into()),
            ("Subject".into(), "test".into()),
        ],
        macros: HashMap::from([
            ("i".to_string(), queue_id.to_string()),
            ("j".to_string(), "mx.test".to_string()),
        ]),
        macro_lists: lists,
        reply_budget: 1 << 20,
    }
}

/// clamd with one custom signature, and clamav-milter in front of it.
fn start_clamav(dir: &Path) -> Option<(Vec<Peer>, u16)> {
    let (Some(clamd), Some(milter)) = (installed("clamd"), installed("clamav-milter")) else {
        println!("skipped: clamd or clamav-milter not installed (apt clamav-daemon clamav-milter)");
        return None;
    };
    let hex: String = EICAR.bytes().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(dir.join("db")).expect("db dir");
    std::fs::write(
        dir.join("db/eicar.ndb"),
        format!("Eicar-Test-Signature:0:*:{hex}\n"),
    )
    .expect("signature");
    let socket = dir.join("clamd.sock");
    let d = dir.display();
    std::fs::write(
        dir.join("clamd.conf"),
        format!(
            "DatabaseDirectory {d}/db\nLocalSocket {}\nUser root\nForeground yes\nSelfCheck 0\n\
             TemporaryDirectory {d}\n",
            socket.display()
        ),
    )
    .expect("clamd.conf");
    let port = free_port();
    std::fs::write(
        dir.join("milter.conf"),
        format!(
            "MilterSocket inet:{port}@127.0.0.1\nUser root\nForeground yes\n\
             ClamdSocket unix:{}\nOnClean Accept\nOnInfected Reject\nOnFail Defer\n\
             AddHeader Replace\nTemporaryDirectory {d}\n",
            socket.display()
        ),
    )
    .expect("milter.conf");
    let clamd_conf = dir.join("clamd.conf");
    let clamd = spawn(
        &clamd,
        &["-c", clamd_conf.to_str()?],
        &dir.join("clamd.log"),
    );
    wait_for("clamd", Duration::from_secs(60), || socket.exists());
    let milter_conf = dir.join("milter.conf");
    let milter = spawn(
        &milter,
        &["-c", milter_conf.to_str()?],
        &dir.join("milter.log"),
    );
    wait_for("clamav-milter", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Some((vec![milter, clamd], port))
}

#[tokio::test]
async fn clamav_milter_rejects_eicar_and_passes_clean_mail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((_peers, port)) = start_clamav(dir.path()) else {
        return;
    };
    let milter = Milter::new(milter_config(&format!("inet:{port}@127.0.0.1")));
    let lists = milter.macro_lists().clone();
    let clean = milter
        .check(
            &facts(&lists, "CLEAN1"),
            &mut Body(Some(b"hello\r\n".to_vec())),
        )
        .await
        .expect("clean verdict");
    assert!(
        matches!(
            clean.verdict,
            MilterVerdict::Accept | MilterVerdict::Continue
        ),
        "{clean:?}"
    );
    assert_eq!(
        milter.idle_connections(),
        usize::from(clean.reusable),
        "pooled only after continue (clamav-milter's OnClean Accept ends with accept)"
    );
    let infected = format!("see attachment\r\n{EICAR}\r\n");
    let virus = milter
        .check(
            &facts(&lists, "VIRUS1"),
            &mut Body(Some(infected.into_bytes())),
        )
        .await
        .expect("virus verdict");
    let MilterVerdict::Reject(reply) = &virus.verdict else {
        panic!("EICAR not rejected: {virus:?}");
    };
    assert_eq!(reply.code / 100, 5, "{reply:?}");
    assert!(
        reply.text.contains("Eicar") || reply.text.starts_with("5."),
        "{reply:?}"
    );
}
