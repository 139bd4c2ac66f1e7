//! FanOutActor: the encoder's one live stream, copied to every relay.
//!
//! The encoder's ffmpeg sends a single MPEG-TS leg (codec headers at every keyframe) to a loopback
//! UDP port; this actor forwards each datagram, as it is, to the port of every relay that is
//! registered in [`Targets`] at that moment. So a live output can be added or removed while the
//! recording runs (`live.rs`) without restarting the encoder or touching the file: a relay added
//! mid-stream starts at the next keyframe, a removed one simply gets nothing more.
//! Owns: a clone of the fan-out's socket (bound once per recording by `live.rs`, so the port the
//! encoder sends to never changes across restarts) and the forwarding task.
//! Accepts: [`Shutdown`], [`Kill`] (both stop at once: there is nothing to finish).
//! Sends: nothing; forwarding is best effort (a full or missing relay drops the datagram, as the
//! encoder's `onfail=ignore` leg would have).
//! Stops: on `Shutdown`/`Kill`; a socket error is a crash (restarted by the live supervisor).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::rc::Rc;

use actix::prelude::*;

use crate::supervision::{ChildLink, ExitReason, Failure, Kill, Shutdown};

/// The relays' loopback ports the stream is copied to, shared with `live.rs`.
#[derive(Debug, Clone, Default)]
pub struct Targets(Rc<RefCell<BTreeSet<u16>>>);

impl Targets {
    pub fn add(&self, port: u16) {
        self.0.borrow_mut().insert(port);
    }

    pub fn remove(&self, port: u16) {
        self.0.borrow_mut().remove(&port);
    }

    pub fn ports(&self) -> Vec<u16> {
        self.0.borrow().iter().copied().collect()
    }
}

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
    /// Starts forwarding what arrives on `socket` (a loopback UDP socket) to `targets`.
    pub fn start(
        socket: &UdpSocket,
        targets: Targets,
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
                    for port in targets.ports() {
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
        ChildSpec, Intensity, Restart, StopTree, Strategy, Supervisor, SupervisorConfig,
    };
    use std::time::Duration;

    async fn receive(s: &tokio::net::UdpSocket, buf: &mut [u8]) -> usize {
        tokio::time::timeout(Duration::from_secs(5), s.recv(buf))
            .await
            .expect("a datagram within 5 s")
            .unwrap()
    }

    /// Each datagram reaches every registered port, as it was sent; an unregistered port gets
    /// nothing more.
    #[actix_rt::test]
    async fn every_datagram_reaches_every_registered_relay() {
        let socket = Rc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let port = socket.local_addr().unwrap().port();
        let targets = Targets::default();
        let spec = {
            let (socket, targets) = (socket.clone(), targets.clone());
            ChildSpec::new(
                "fan-out",
                Restart::Permanent,
                Duration::from_secs(1),
                move |link| std::future::ready(FanOutActor::start(&socket, targets.clone(), link)),
            )
        };
        let config = SupervisorConfig {
            name: "test".into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity {
                max_restarts: 1,
                period: Duration::from_secs(1),
            },
        };
        let (sup, exit) = Supervisor::start(config, vec![spec]);
        let relay = || tokio::net::UdpSocket::bind("127.0.0.1:0");
        let (a, b) = (relay().await.unwrap(), relay().await.unwrap());
        targets.add(a.local_addr().unwrap().port());
        targets.add(b.local_addr().unwrap().port());
        let encoder = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; 2048];
        encoder
            .send_to(&[7u8; 1316], ("127.0.0.1", port))
            .await
            .unwrap();
        for relay in [&a, &b] {
            let n = receive(relay, &mut buf).await;
            assert_eq!(&buf[..n], &[7u8; 1316][..]);
        }
        targets.remove(a.local_addr().unwrap().port());
        encoder
            .send_to(b"second", ("127.0.0.1", port))
            .await
            .unwrap();
        let n = receive(&b, &mut buf).await;
        assert_eq!(&buf[..n], b"second");
        assert!(
            a.try_recv(&mut buf).is_err(),
            "a removed relay got a datagram"
        );
        sup.do_send(StopTree {
            cause: "test".into(),
        });
        exit.await.unwrap();
    }
}
