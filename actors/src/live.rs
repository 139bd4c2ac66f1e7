//! The live outputs of one recording, a set that can change while it records.
//!
//! ```text
//! live (one-for-one, a child of media started before the encoder)
//! ├── fan-out     the encoder's one MPEG-TS leg -> every relay's port   (fanout.rs)
//! └── relay N     ffmpeg: that stream -> one RTMP server                 (relay.rs)
//! ```
//!
//! Owns: the fan-out's loopback UDP socket (bound once: the encoder's leg points at it for the
//! whole recording), the list of live outputs (the URL and loopback socket of each relay), the
//! sender of the relays' ports the fan-out copies to (each fan-out start reads them through a
//! receiver of its own: a restarted one copies to the ports registered then) and the address of
//! the `live` supervisor running them.
//! Accepts (through [`LiveOutputs`]): [`LiveOutputs::add`] (a new relay is registered with the
//! fan-out and started after the others: the encoder and the file are untouched; one that fails
//! to start is unregistered again) and [`LiveOutputs::remove`] (the relay ends its stream
//! cleanly, `q`, then is unregistered).
//! A relay that gives up beside a file (the server stayed away) is unregistered and forgotten
//! at once: nothing reads its socket any more, and nothing is sent there.
//! A restart of the subtree (media restarted by a dead display) starts the list as it stands;
//! an addition whose supervisor died before starting it is that restart's, and stays listed.
//! Stops: with the media subtree; the encoder stops first, so every relay gets the last packets.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::rc::{Rc, Weak};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{mpsc, watch};

use crate::fanout::FanOutActor;
use crate::relay::{OnGiveUp, RelayActor, RelayInput, RelaySpec};
use crate::secret::StreamUrl;
use crate::supervision::{
    AddChildren, ChildSpec, Failure, Intensity, RemoveChild, Restart, Strategy, Supervisor,
    SupervisorConfig,
};

/// Why a live output could not be added or removed. URLs are shown masked.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("{0} is streamed already")]
    AlreadyStreamed(StreamUrl),
    #[error("{0} is not one of this recording's live outputs")]
    NotStreamed(StreamUrl),
    #[error("{0} is the last output of a recording without a file: stop the recording instead")]
    LastOutput(StreamUrl),
    #[error("live stream to {url}: {failure}")]
    Failed { url: StreamUrl, failure: Failure },
}

struct Entry {
    /// The relay's name in the `live` supervisor (unique in the recording).
    name: String,
    spec: RelaySpec,
}

struct Inner {
    socket: UdpSocket,
    /// The relays' loopback ports the fan-out copies to: a relay's is registered at each of its
    /// starts, unregistered when it is removed or fails to be added.
    targets: watch::Sender<BTreeSet<u16>>,
    relays: RefCell<Vec<Entry>>,
    /// The running `live` supervisor (None while it (re)starts).
    supervisor: RefCell<Option<Addr<Supervisor>>>,
    /// Numbers the relays' names.
    next: Cell<usize>,
    retry_for: Duration,
    has_file: bool,
    lost: mpsc::UnboundedSender<String>,
}

/// A loopback UDP socket (the fan-out's or a relay's) could not be bound.
fn no_port(e: std::io::Error) -> Failure {
    Failure::crashed(format!("no free loopback UDP port: {e}"))
}

/// The live outputs of one recording; cheap to clone.
#[derive(Clone)]
pub struct LiveOutputs(Rc<Inner>);

impl LiveOutputs {
    /// The fan-out's socket and the first live outputs (`streams`). `has_file`: the recording
    /// has a file besides, so a lost stream does not fail it.
    pub fn new(
        streams: &[StreamUrl],
        retry_for: Duration,
        has_file: bool,
        lost: mpsc::UnboundedSender<String>,
    ) -> Result<LiveOutputs, Failure> {
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(no_port)?;
        let live = LiveOutputs(Rc::new(Inner {
            socket,
            targets: watch::channel(BTreeSet::new()).0,
            relays: RefCell::default(),
            supervisor: RefCell::default(),
            next: Cell::new(0),
            retry_for,
            has_file,
            lost,
        }));
        for url in streams {
            let entry = live.entry(url.clone(), false)?;
            live.0.relays.borrow_mut().push(entry);
        }
        Ok(live)
    }

    /// The loopback UDP port the encoder sends its live stream to.
    pub fn port(&self) -> Result<u16, Failure> {
        self.0
            .socket
            .local_addr()
            .map(|a| a.port())
            .map_err(|e| Failure::crashed(format!("live stream fan-out: {e}")))
    }

    /// The masked URLs streamed to now, in order.
    pub fn urls(&self) -> Vec<StreamUrl> {
        self.0
            .relays
            .borrow()
            .iter()
            .map(|e| e.spec.url.clone())
            .collect()
    }

    fn entry(&self, url: StreamUrl, added: bool) -> Result<Entry, Failure> {
        let n = self.0.next.get() + 1;
        self.0.next.set(n);
        Ok(Entry {
            name: format!("relay {n}"),
            spec: RelaySpec {
                url,
                input: RelayInput::bind().map_err(no_port)?,
                retry_for: self.0.retry_for,
                only_output: !self.0.has_file,
                lost: self.0.lost.clone(),
                added,
                on_give_up: None,
            },
        })
    }

    /// The relays' loopback ports the fan-out copies to now.
    pub fn targets(&self) -> BTreeSet<u16> {
        self.0.targets.borrow().clone()
    }

    /// The `live` subtree, as a child of the media supervisor.
    pub fn child(&self, intensity: Intensity) -> ChildSpec {
        let live = self.clone();
        ChildSpec::new(
            "live",
            Restart::Permanent,
            Duration::from_secs(10),
            move |link| {
                let live = live.clone();
                let config = SupervisorConfig {
                    name: "live".into(),
                    strategy: Strategy::OneForOne,
                    intensity,
                };
                let mut children = vec![fanout_child(&live)];
                children.extend(
                    live.0
                        .relays
                        .borrow()
                        .iter()
                        .map(|e| relay_child(&e.name, e.spec.clone(), &live)),
                );
                live.0.supervisor.borrow_mut().take();
                let started = Supervisor::start_linked(config, children, link);
                async move {
                    let addr = started.await?;
                    *live.0.supervisor.borrow_mut() = Some(addr.clone());
                    Ok(addr)
                }
            },
        )
    }

    /// Adds a live output: its relay starts now, streaming from the next keyframe on.
    pub async fn add(&self, url: StreamUrl) -> Result<(), LiveError> {
        if self.0.relays.borrow().iter().any(|e| e.spec.url == url) {
            return Err(LiveError::AlreadyStreamed(url));
        }
        let failed = |failure| LiveError::Failed {
            url: url.clone(),
            failure,
        };
        let entry = self.entry(url.clone(), true).map_err(failed)?;
        let child = relay_child(&entry.name, entry.spec.clone(), self);
        let (name, port) = (entry.name.clone(), entry.spec.input.port());
        self.0.relays.borrow_mut().push(entry);
        let running = self.0.supervisor.borrow().clone();
        // While the subtree restarts, the list is what its next start runs.
        let Some(supervisor) = running else {
            return Ok(());
        };
        let started = supervisor
            .send(AddChildren::new(vec![child]))
            .await
            .unwrap_or_else(|_| Err(Failure::crashed("the live outputs stopped")));
        if let Err(failure) = started {
            if self.restarted_since(&supervisor) {
                // The subtree restarted between the send and the answer, and that start ran the
                // list as it stands, this relay included: the relay is the new subtree's, and
                // stays in the list (so it can be removed).
                return Ok(());
            }
            // Its start may have registered its port: nothing reads there now.
            self.unregister(port);
            self.forget(&name);
            return Err(failed(failure));
        }
        Ok(())
    }

    /// Whether the `live` subtree started again since `asked` ran it: another supervisor holds
    /// the slot, or none while a start is under way (a start empties the slot first, and reads
    /// the list then).
    fn restarted_since(&self, asked: &Addr<Supervisor>) -> bool {
        self.0
            .supervisor
            .borrow()
            .as_ref()
            .is_none_or(|now| now != asked)
    }

    /// Removes a live output (`raw`: its URL as given): its stream ends cleanly.
    pub async fn remove(&self, raw: &str) -> Result<(), LiveError> {
        let url = StreamUrl::new(raw);
        // `input` held until the port is unregistered: the fan-out never sends to it free.
        let (name, input) = {
            let relays = self.0.relays.borrow();
            let Some(entry) = relays.iter().find(|e| e.spec.url.expose() == raw) else {
                return Err(LiveError::NotStreamed(url));
            };
            if relays.len() == 1 && !self.0.has_file {
                return Err(LiveError::LastOutput(url));
            }
            (entry.name.clone(), entry.spec.input.clone())
        };
        self.forget(&name);
        let running = self.0.supervisor.borrow().clone();
        let stopped = match running {
            Some(supervisor) => supervisor
                .send(RemoveChild { name })
                .await
                .unwrap_or(Ok(())),
            None => Ok(()),
        };
        // Unregistered once its ffmpeg has ended the stream with what it had.
        self.unregister(input.port());
        drop(input);
        stopped.map_err(|failure| LiveError::Failed { url, failure })
    }

    fn forget(&self, name: &str) {
        self.0.relays.borrow_mut().retain(|e| e.name != name);
    }

    /// The fan-out copies to `port` from the next datagram on.
    fn register(&self, port: u16) {
        self.0.targets.send_modify(|ports| {
            ports.insert(port);
        });
    }

    fn unregister(&self, port: u16) {
        self.0.targets.send_modify(|ports| {
            ports.remove(&port);
        });
    }
}

fn fanout_child(live: &LiveOutputs) -> ChildSpec {
    let live = live.clone();
    ChildSpec::new(
        "fan-out",
        Restart::Permanent,
        Duration::from_secs(2),
        move |link| {
            std::future::ready(FanOutActor::start(
                &live.0.socket,
                live.0.targets.subscribe(),
                link,
            ))
        },
    )
}

fn relay_child(name: &str, mut relay: RelaySpec, live: &LiveOutputs) -> ChildSpec {
    // Transient: a relay that gave up beside a file stops normally and stays stopped, so its
    // port is unregistered (nothing reads it any more) and it leaves the list. Weak: a
    // relay that outlives the recording's live outputs has nothing left to unregister from.
    let (owner, relay_name, port) = (Rc::downgrade(&live.0), name.to_owned(), relay.input.port());
    relay.on_give_up = Some(OnGiveUp(Rc::new(move || {
        if let Some(inner) = Weak::upgrade(&owner) {
            let live = LiveOutputs(inner);
            live.unregister(port);
            live.forget(&relay_name);
        }
    })));
    let live = live.clone();
    ChildSpec::new(
        name,
        Restart::Transient,
        Duration::from_secs(5),
        move |link| {
            live.register(relay.input.port());
            std::future::ready(RelayActor::start(relay.clone(), link))
        },
    )
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::net::TcpListener;
    use std::pin::pin;
    use std::task::{Context, Waker};

    use super::*;
    use crate::supervision::Kill;

    /// The running `live` supervisor, once its (re)start is done.
    async fn running(live: &LiveOutputs, not: Option<&Addr<Supervisor>>) -> Addr<Supervisor> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = live.0.supervisor.borrow().clone();
            match now {
                Some(addr) if not != Some(&addr) => return addr,
                _ if tokio::time::Instant::now() > deadline => panic!("live did not (re)start"),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// The race of an addition with a restart of the subtree, in the order that lost the relay:
    /// the supervisor asked dies before it starts the relay, the restart runs the list (the
    /// relay in it), and only then does the addition hear that its supervisor is gone.
    #[actix_rt::test]
    async fn a_relay_added_while_the_subtree_restarts_is_the_new_subtree_s_and_can_be_removed() {
        let (lost_tx, _lost) = mpsc::unbounded_channel();
        let live = LiveOutputs::new(&[], Duration::from_secs(30), true, lost_tx).unwrap();
        let (media, _exit) = Supervisor::start(
            SupervisorConfig {
                name: "media".into(),
                strategy: Strategy::OneForOne,
                intensity: Intensity {
                    max_restarts: 3,
                    period: Duration::from_secs(60),
                },
            },
            vec![live.child(Intensity::NEVER)],
        );
        let first = running(&live, None).await;
        // A server that refuses connections: the relay's ffmpeg retries beside the file.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let url = StreamUrl::new(format!("rtmp://127.0.0.1:{port}/live/k3y"));

        // Queued before the addition's request: the supervisor stops without starting it.
        first.do_send(Kill);
        let mut add = pin!(live.add(url.clone()));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(
            add.as_mut().poll(&mut cx).is_pending(),
            "the addition waits for the supervisor"
        );
        let second = running(&live, Some(&first)).await;
        assert!(second != first);
        // The restart started the relay: its port is registered.
        assert_eq!(
            live.targets().len(),
            1,
            "the restarted subtree runs the relay"
        );

        add.await.expect("the relay the new subtree runs was added");
        assert_eq!(live.urls(), vec![url.clone()]);
        live.remove(url.expose()).await.expect("removed");
        assert!(live.urls().is_empty());
        assert!(live.targets().is_empty(), "its port is unregistered");
        media.do_send(crate::supervision::StopTree {
            cause: "test over".into(),
        });
    }
}
