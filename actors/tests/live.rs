//! The live outputs against real ffmpeg relays: a relay that gives up beside a file.

use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pagecast_actors::live::LiveOutputs;
use pagecast_actors::secret::StreamUrl;
use pagecast_actors::supervision::{Intensity, StopTree, Strategy, Supervisor, SupervisorConfig};
use tokio::sync::mpsc;

/// A small MPEG-TS stream sent to the fan-out's port, as the encoder's live leg would.
struct Encoder(Child);

impl Encoder {
    fn start(port: u16) -> Encoder {
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=160x90:rate=15"])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "15"])
            .args([
                "-f",
                "mpegts",
                &format!("udp://127.0.0.1:{port}?pkt_size=1316"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start ffmpeg");
        Encoder(child)
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on (connections to it are refused).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[actix_rt::test]
async fn a_relay_that_gives_up_beside_a_file_stops_being_sent_the_stream_and_its_port_is_never_free(
) {
    let (lost_tx, mut lost) = mpsc::unbounded_channel();
    // A recording with a file besides: a lost stream does not fail it. 1 s: the server gone for
    // longer than that is given up.
    let live = LiveOutputs::new(&[], Duration::from_secs(1), true, lost_tx).unwrap();
    let (supervisor, _exit) = Supervisor::start(
        SupervisorConfig {
            name: "media".into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity::NEVER,
        },
        vec![live.child(Intensity::NEVER)],
    );
    let _encoder = Encoder::start(live.port().unwrap());
    // The added relay's server refuses every connection (it stays away).
    let url = StreamUrl::new(format!("rtmp://127.0.0.1:{}/live/k3y", closed_port()));
    let mut added = live.add(url.clone()).await;
    // The subtree may still be starting: the relay is then in the list its start runs.
    for _ in 0..50 {
        if added.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        added = live.add(url.clone()).await;
    }
    added.expect("the relay is added");
    assert_eq!(live.urls(), vec![url.clone()]);
    let registered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let targets = live.targets();
            if !targets.is_empty() {
                return targets;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the relay's port registered with the fan-out within 10 s");
    assert_eq!(registered.len(), 1, "{registered:?}");

    // While the relay retries (its ffmpegs come and go), its port is never free: no other
    // process could bind it and receive the stream.
    let watch_port = async {
        loop {
            for port in live.targets() {
                if let Ok(thief) = UdpSocket::bind(("127.0.0.1", port)) {
                    panic!("port {port} was free while registered: {thief:?}");
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let message = tokio::select! {
        lost = tokio::time::timeout(Duration::from_secs(30), lost.recv()) => {
            lost.expect("the relay gave up within 30 s").expect("a lost stream reported")
        }
        () = watch_port => unreachable!(),
    };
    assert!(message.contains("did not come back"), "{message}");
    assert!(!message.contains("k3y"), "the key in {message}");
    // Given up for good: nothing is sent to its port any more, and it is no output of the
    // recording's now.
    assert!(live.targets().is_empty(), "{:?}", live.targets());
    assert!(live.urls().is_empty(), "{:?}", live.urls());
    supervisor.do_send(StopTree {
        cause: "test".into(),
    });
}
