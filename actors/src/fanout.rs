//! FanOutActor: the encoder's one live stream, copied to every relay.
//!
//! The encoder's ffmpeg sends a single MPEG-TS leg (codec headers at every keyframe) to a loopback
//! UDP port; this actor forwards each datagram, as it is, to the port of every relay that is
//! registered at that moment. So a live output can be added or removed while the recording runs
//! (`live.rs`) without restarting the encoder or touching the file: a relay added mid-stream
//! starts at the next keyframe, a removed one simply gets nothing more.
//! Owns: a clone of the fan-out's socket (bound once per recording by `live.rs`, so the port the
//! encoder sends to never changes across restarts), the forwarding task, and a reader of the
//! relays' ports (a watch receiver: `live.rs` owns the sender and registers and unregisters
//! them; a restarted fan-out reads the set as it stands then).
//! Accepts: [`Shutdown`], [`Kill`] (both stop at once: there is nothing to finish).
//! Sends: nothing; forwarding is best effort (a full or missing relay drops the datagram, as the
//! encoder's `onfail=ignore` leg would have).
//! Stops: on `Shutdown`/`Kill`; a socket error is a crash (restarted by the live supervisor).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

use actix::prelude::*;
use tokio::sync::watch;

use crate::supervision::{ChildLink, ExitReason, Failure, Kill, Shutdown};

pub struct FanOutActor {
    link: ChildLink,
}

impl Actor for FanOutActor {
    type Context = Context<Self>;
}

/// Message (from the forwarding task): the socket failed.
#[derive(Message)]
#[rtype(result = "()")]
struct Broken(String);

impl FanOutActor {
    /// Starts forwarding what arrives on `socket` (a loopback UDP socket) to the relays' loopback
    /// ports in `targets`, as they are at each datagram.
    pub fn start(
        socket: &UdpSocket,
        targets: watch::Receiver<BTreeSet<u16>>,
        link: ChildLink,
    ) -> Result<Addr<FanOutActor>, Failure> {
        let socket = socket
            .try_clone()
            .and_then(|s| {
                s.set_nonblocking(true)?;
                tokio::net::UdpSocket::from_std(s)
            })
            .map_err(|e| Failure::crashed(format!("live stream fan-out: {e}")))?;
        Ok(FanOutActor::create(|ctx| {
            let me = ctx.address();
            ctx.spawn(actix::fut::wrap_future(async move {
                // A datagram is at most what the encoder's leg sends (pkt_size=1316); 64 KiB
                // takes any.
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = match socket.recv(&mut buf).await {
                        Ok(n) => n,
                        Err(e) => {
                            me.do_send(Broken(e.to_string()));
                            return;
                        }
                    };
                    // The ports registered now; the set's read lock is held only for these
                    // sends, none of which waits.
                    for &port in targets.borrow().iter() {
                        // Not awaited: a relay that cannot take it now loses this datagram only.
                        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                        let _ = socket.try_send_to(&buf[..n], to);
                    }
                }
            }));
            FanOutActor { link }
        }))
    }
}

impl Handler<Broken> for FanOutActor {
    type Result = ();
    fn handle(&mut self, msg: Broken, ctx: &mut Context<Self>) {
        self.link
            .set_exit(ExitReason::Failed(Failure::crashed(format!(
                "live stream fan-out lost its socket: {}",
                msg.0
            ))));
        ctx.stop();
    }
}

impl Handler<Shutdown> for FanOutActor {
    type Result = Result<(), Failure>;
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        self.link.set_exit(ExitReason::Shutdown);
        ctx.stop();
        Ok(())
    }
}

impl Handler<Kill> for FanOutActor {
    type Result = ();
    fn handle(&mut self, _: Kill, ctx: &mut Context<Self>) {
        self.link.set_exit(ExitReason::Shutdown);
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervision::{
        ChildSpec, Intensity, Restart, StopTree, Strategy, Supervisor, SupervisorConfig, TreeExit,
    };
    use std::rc::Rc;
    use std::time::Duration;
    use tokio::sync::{mpsc, oneshot};

    async fn receive(s: &tokio::net::UdpSocket, buf: &mut [u8]) -> usize {
        tokio::time::timeout(Duration::from_secs(5), s.recv(buf))
            .await
            .expect("a datagram within 5 s")
            .unwrap()
    }

    /// A fan-out under a one-for-one supervisor, as `live.rs` runs it: the socket bound once,
    /// the ports' sender kept here, each (re)start reading the ports through a new receiver.
    /// Each start's address comes out of `started`.
    struct Rig {
        port: u16,
        targets: watch::Sender<BTreeSet<u16>>,
        started: mpsc::UnboundedReceiver<Addr<FanOutActor>>,
        sup: Addr<Supervisor>,
        exit: oneshot::Receiver<TreeExit>,
    }

    fn rig() -> Rig {
        let socket = Rc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let port = socket.local_addr().unwrap().port();
        let (targets, _) = watch::channel(BTreeSet::new());
        let (started_tx, started) = mpsc::unbounded_channel();
        let spec = {
            let targets = targets.clone();
            ChildSpec::new(
                "fan-out",
                Restart::Permanent,
                Duration::from_secs(1),
                move |link| {
                    let started = FanOutActor::start(&socket, targets.subscribe(), link);
                    if let Ok(addr) = &started {
                        let _ = started_tx.send(addr.clone());
                    }
                    std::future::ready(started)
                },
            )
        };
        let config = SupervisorConfig {
            name: "test".into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity {
                max_restarts: 1,
                period: Duration::from_secs(60),
            },
        };
        let (sup, exit) = Supervisor::start(config, vec![spec]);
        Rig {
            port,
            targets,
            started,
            sup,
            exit,
        }
    }

    impl Rig {
        /// The address of the fan-out's next start.
        async fn next_start(&mut self) -> Addr<FanOutActor> {
            tokio::time::timeout(Duration::from_secs(5), self.started.recv())
                .await
                .expect("the fan-out (re)started within 5 s")
                .expect("the supervisor is running")
        }

        fn register(&self, relay: &tokio::net::UdpSocket) {
            let port = relay.local_addr().unwrap().port();
            self.targets.send_modify(|ports| {
                ports.insert(port);
            });
        }

        fn unregister(&self, relay: &tokio::net::UdpSocket) {
            let port = relay.local_addr().unwrap().port();
            self.targets.send_modify(|ports| {
                ports.remove(&port);
            });
        }

        async fn stop(self) {
            self.sup.do_send(StopTree {
                cause: "test".into(),
            });
            let exit = tokio::time::timeout(Duration::from_secs(5), self.exit)
                .await
                .expect("the tree stopped within 5 s")
                .unwrap();
            assert!(matches!(exit, TreeExit::Stopped { .. }), "{exit:?}");
        }
    }

    async fn relay() -> tokio::net::UdpSocket {
        tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap()
    }

    /// Each datagram reaches every registered port, as it was sent; an unregistered port gets
    /// nothing more.
    #[actix_rt::test]
    async fn every_datagram_reaches_every_registered_relay() {
        let mut rig = rig();
        rig.next_start().await;
        let (a, b) = (relay().await, relay().await);
        rig.register(&a);
        rig.register(&b);
        let encoder = relay().await;
        let mut buf = [0u8; 2048];
        encoder
            .send_to(&[7u8; 1316], ("127.0.0.1", rig.port))
            .await
            .unwrap();
        for relay in [&a, &b] {
            let n = receive(relay, &mut buf).await;
            assert_eq!(&buf[..n], &[7u8; 1316][..]);
        }
        rig.unregister(&a);
        encoder
            .send_to(b"second", ("127.0.0.1", rig.port))
            .await
            .unwrap();
        let n = receive(&b, &mut buf).await;
        assert_eq!(&buf[..n], b"second");
        assert!(
            a.try_recv(&mut buf).is_err(),
            "a removed relay got a datagram"
        );
        rig.stop().await;
    }

    /// A fan-out restarted after its socket failed copies to the relays registered when it
    /// restarts: one registered after the first start gets the stream, one unregistered since
    /// gets nothing.
    #[actix_rt::test]
    async fn a_restarted_fan_out_copies_to_the_relays_registered_now() {
        let mut rig = rig();
        let (kept, removed, added) = (relay().await, relay().await, relay().await);
        rig.register(&kept);
        rig.register(&removed);
        let first = rig.next_start().await;
        rig.register(&added);
        rig.unregister(&removed);
        first.do_send(Broken("test: socket lost".into()));
        rig.next_start().await;
        let encoder = relay().await;
        encoder
            .send_to(b"after the restart", ("127.0.0.1", rig.port))
            .await
            .unwrap();
        let mut buf = [0u8; 2048];
        for relay in [&kept, &added] {
            let n = receive(relay, &mut buf).await;
            assert_eq!(&buf[..n], b"after the restart");
        }
        assert!(
            removed.try_recv(&mut buf).is_err(),
            "a relay unregistered before the restart got a datagram"
        );
        rig.stop().await;
    }
}
