//! Supervision, written once for every tree in pagecast.
//!
//! actix's own `Supervisor` only restarts one actor in place. This module is a supervision tree in
//! the Erlang/OTP sense, as data:
//!
//! - a [`ChildSpec`] says how to start a child (a future that resolves once the child is *ready*),
//!   its [`Restart`] policy and its shutdown timeout;
//! - a [`Strategy`] says what else restarts with a dead child (`RestForOne`: every child started
//!   after it, so a dead display takes the browser and encoder with it);
//! - an [`Intensity`] bounds restarts (at most N in a window T); past it the supervisor gives up
//!   and stops the whole tree cleanly, reporting why.
//!
//! Owns: its children, through the handles their start futures return.
//! Accepts: [`ChildExited`] (a child died or stopped), `Follow` (a child follows a sibling:
//! [`ChildLink::follow`]), [`StopTree`] (stop everything, in order), [`AddChildren`] (start the
//! children it carries, after the others: a recording's live outputs added while it records),
//! [`RemoveChild`] (stop one child for good), [`Published`] (what a running child published,
//! asked by the supervisor's owner).
//! Sends: [`Shutdown`] to children, in reverse start order, each bounded by its timeout, then
//! [`Kill`] to a child that did not stop in time; [`SiblingUp`] to a child that follows a sibling;
//! a [`TreeExit`] to whoever started the tree.
//! Stops: after every child has stopped, by request or by giving up.
//!
//! Children report their own death with a [`ChildLink`]. A child actor that panics never reports;
//! its link notices on drop and reports the panic, so a panic is a crash, never a silent stop.
//!
//! Wiring: a child started with [`ChildSpec::publishing`] publishes a value once it is ready (its
//! address, the display it serves); the supervisor keeps it while that child runs and hands every
//! later child, at its start, what its running earlier siblings published ([`ChildLink::wired`]).
//! A subtree's children also see what their parent's earlier siblings published. Siblings so
//! never share a cell: a child restarted after a sibling gets that sibling's new value, and with
//! `RestForOne` a child whose dependency restarts restarts with it. Siblings that need each other,
//! or that restart on their own, follow each other instead ([`ChildLink::follow`]): the supervisor
//! sends the follower a [`SiblingUp`] with the sibling's value now and at each of its restarts.
//! The supervisor's owner, which is no sibling, asks for a running child's value when it needs it
//! ([`Published`]): the answer is the current incarnation's, never one kept from an earlier start.
//!
//! A supervisor can itself be a child ([`Supervisor::start_linked`]): it answers [`Shutdown`] and
//! [`Kill`] like any child, reports giving up to its parent as a failure (which the parent's own
//! policy and intensity then handle), and forwards [`StopTree`] to the root, so a stop request from
//! deep in the tree stops the whole tree in order.

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;

use actix::dev::ToEnvelope;
use actix::fut::{self, ActorFutureExt, LocalBoxActorFuture, WrapFuture};
use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use send_wrapper::SendWrapper;
use tokio::sync::oneshot;

/// When a child that stopped is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always, whatever the reason it stopped.
    Permanent,
    /// Only after an abnormal exit (a crash or a failure, not a normal stop).
    Transient,
    /// Never.
    Temporary,
}

/// What restarts together with a dead child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Only the child itself.
    OneForOne,
    /// The child and every child started after it (they depend on it), in start order.
    RestForOne,
}

/// At most `max_restarts` restarts within `period`; one more and the supervisor gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    pub max_restarts: u32,
    pub period: Duration,
}

impl Intensity {
    /// No restart at all: the first failure stops the tree.
    pub const NEVER: Intensity = Intensity {
        max_restarts: 0,
        period: Duration::from_secs(1),
    };
}

/// Why a child failed, in categories its supervisor's owner can act on (e.g. exit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The process or actor died or misbehaved.
    Crashed,
    /// A program the child needs is not installed.
    MissingProgram,
    /// The thing to record is unusable (e.g. the page could not be loaded).
    Input,
    /// Where the result goes is unusable (e.g. the file can't be written).
    Output,
    /// The child did not become ready in time.
    Timeout,
}

/// A failure: what kind and one line saying what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    /// The child deep in a subtree where the failure began, when it came up through one: the
    /// user is told "browser failed", not the name of the subtree that gave up.
    pub origin: Option<String>,
}

impl FailureKind {
    /// Whether starting the child again can help. A page that can't be loaded, an output that
    /// can't be written or a missing program fail the same way every time: restarting only delays
    /// the error, so the supervisor gives up at once.
    pub fn restart_can_help(self) -> bool {
        matches!(self, FailureKind::Crashed | FailureKind::Timeout)
    }
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            origin: None,
        }
    }

    pub fn crashed(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Crashed, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Why a child stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// It finished its work on its own.
    Normal,
    /// Its supervisor asked it to stop.
    Shutdown,
    /// It failed.
    Failed(Failure),
    /// Its actor panicked (the panic message).
    Panicked(String),
}

impl ExitReason {
    pub fn is_abnormal(&self) -> bool {
        matches!(self, ExitReason::Failed(_) | ExitReason::Panicked(_))
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("stopped normally"),
            ExitReason::Shutdown => f.write_str("was shut down"),
            ExitReason::Failed(failure) => f.write_str(&failure.message),
            ExitReason::Panicked(msg) => write!(f, "panicked: {msg}"),
        }
    }
}

/// Message to a child: stop gracefully. The reply comes once it has finished stopping, and says
/// whether it stopped cleanly (e.g. the encoder finalized its file).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Failure>")]
pub struct Shutdown;

/// Message to a child that did not stop within its timeout: stop now, losing what must be lost.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Kill;

/// Message to a supervisor: a child has stopped. Sent by the child's [`ChildLink`].
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ChildExited {
    pub index: usize,
    pub generation: u64,
    pub reason: ExitReason,
}

/// Message to a child that follows a sibling ([`ChildLink::follow`]): what that sibling
/// published, when the follower asked if the sibling was running then, and at each of its
/// (re)starts after.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SiblingUp<T: Send + 'static>(pub T);

/// Message to a supervisor: the child at `index` (this generation of it) follows the sibling
/// `name`. Sent by [`ChildLink::follow`].
#[derive(Message)]
#[rtype(result = "()")]
struct Follow {
    index: usize,
    generation: u64,
    name: String,
    deliver: Deliver,
}

/// Hands a follower what the sibling published (if it is the type the follower asked for).
type Deliver = Box<dyn Fn(&dyn Any) + Send>;

/// Message to a supervisor: stop the whole tree in order (a signal, the page's END_RECORDING, a
/// time limit). `cause` says why, for the log and the [`TreeExit`].
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct StopTree {
    pub cause: String,
}

/// Message to a supervisor: start these children, in order, after the others (so they stop
/// first). The reply says whether they all started; one that fails to start is dropped, the tree
/// goes on.
///
/// A `ChildSpec` holds closures bound to the actors' thread, and actix messages must be `Send`:
/// the children travel in a [`SendWrapper`], which panics if they are touched or dropped on
/// another thread. A recording's actors share one thread, so they never are.
#[derive(Message)]
#[rtype(result = "Result<(), Failure>")]
pub struct AddChildren(SendWrapper<Vec<ChildSpec>>);

impl AddChildren {
    pub fn new(children: Vec<ChildSpec>) -> Self {
        Self(SendWrapper::new(children))
    }
}

/// Message to a supervisor: stop the child named `name` gracefully (within its shutdown timeout)
/// and never restart it. The reply says whether it stopped cleanly; no such child is an error.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Failure>")]
pub struct RemoveChild {
    pub name: String,
}

/// Message to a supervisor, from its owner: what its child `name` published (a `T`, see
/// [`ChildSpec::publishing`]) if that child is running now. None while it is not (stopped,
/// removed, or not yet restarted: the question waits for a restart under way) or when it
/// published nothing of that type. Only this supervisor's own children are looked at.
#[derive(Message)]
#[rtype(result = "Option<T>")]
pub struct Published<T: Clone + Send + 'static> {
    pub name: String,
    // `fn() -> T`: the message is Send whatever `T` is, and owns no `T`.
    of: PhantomData<fn() -> T>,
}

impl<T: Clone + Send + 'static> Published<T> {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            of: PhantomData,
        }
    }
}

impl<T: Clone + Send + 'static> fmt::Debug for Published<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Published")
            .field("name", &self.name)
            .field("of", &std::any::type_name::<T>())
            .finish()
    }
}

/// How a tree ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeExit {
    /// Stopped on request; every child stopped in order. `failures` lists the children that
    /// did not stop cleanly (by name), in stop order.
    Stopped {
        cause: String,
        failures: Vec<(String, Failure)>,
    },
    /// A child failed more often than the restart intensity allows (or could not be restarted).
    GaveUp { child: String, reason: ExitReason },
    /// A child could not be started.
    StartFailed { child: String, failure: Failure },
}

/// A running child as its supervisor sees it.
pub trait ChildHandle {
    /// Asks the child to stop; resolves when it has, saying whether it stopped cleanly.
    fn shutdown(&self) -> LocalBoxFuture<'static, Result<(), Failure>>;
    /// Tells the child to stop at once.
    fn kill(&self);
}

impl<A> ChildHandle for Addr<A>
where
    A: Actor + Handler<Shutdown> + Handler<Kill>,
    A::Context: ToEnvelope<A, Shutdown> + ToEnvelope<A, Kill>,
{
    fn shutdown(&self) -> LocalBoxFuture<'static, Result<(), Failure>> {
        let sent = self.send(Shutdown);
        // A closed mailbox means the actor is already gone: that is stopped too.
        Box::pin(async move { sent.await.unwrap_or(Ok(())) })
    }

    fn kill(&self) {
        self.do_send(Kill);
    }
}

/// A child that became ready: its handle and what it published (see [`ChildSpec::publishing`]).
struct Started {
    handle: Box<dyn ChildHandle>,
    published: Option<Rc<dyn Any>>,
}

type StartFn = Box<dyn FnMut(ChildLink) -> LocalBoxFuture<'static, Result<Started, Failure>>>;

/// What the running earlier siblings of a child (and, in a subtree, its parent's earlier
/// siblings) published, by child name; handed to the child at its start in its [`ChildLink`].
#[derive(Clone, Default)]
pub struct Wired(Vec<(String, Rc<dyn Any>)>);

impl Wired {
    /// The value `name` published, if it is running and published a `T`. A nearer child (a
    /// sibling) hides a farther one of the same name (the parent's sibling).
    pub fn get<T: Clone + 'static>(&self, name: &str) -> Option<T> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, value)| value.downcast_ref::<T>())
            .cloned()
    }
}

impl fmt::Debug for Wired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| n))
            .finish()
    }
}

/// How to start and stop one child.
pub struct ChildSpec {
    pub name: String,
    pub restart: Restart,
    pub shutdown_timeout: Duration,
    start: StartFn,
}

impl ChildSpec {
    /// `start` gets the child's link and resolves once the child is ready (or failed to start).
    pub fn new<F, Fut, H>(
        name: impl Into<String>,
        restart: Restart,
        shutdown_timeout: Duration,
        mut start: F,
    ) -> Self
    where
        F: FnMut(ChildLink) -> Fut + 'static,
        Fut: Future<Output = Result<H, Failure>> + 'static,
        H: ChildHandle + 'static,
    {
        Self {
            name: name.into(),
            restart,
            shutdown_timeout,
            start: Box::new(move |link| {
                let started = start(link);
                Box::pin(async move {
                    started.await.map(|h| Started {
                        handle: Box::new(h),
                        published: None,
                    })
                })
            }),
        }
    }

    /// As [`ChildSpec::new`], for a child that publishes a value once ready (its address, what
    /// it serves): the children started after it get it through [`ChildLink::wired`].
    pub fn publishing<F, Fut, H, P>(
        name: impl Into<String>,
        restart: Restart,
        shutdown_timeout: Duration,
        mut start: F,
    ) -> Self
    where
        F: FnMut(ChildLink) -> Fut + 'static,
        Fut: Future<Output = Result<(H, P), Failure>> + 'static,
        H: ChildHandle + 'static,
        P: 'static,
    {
        Self {
            name: name.into(),
            restart,
            shutdown_timeout,
            start: Box::new(move |link| {
                let started = start(link);
                Box::pin(async move {
                    started.await.map(|(h, published)| Started {
                        handle: Box::new(h),
                        published: Some(Rc::new(published) as Rc<dyn Any>),
                    })
                })
            }),
        }
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish()
    }
}

/// A child's connection to its supervisor, owned by the child actor.
///
/// The child says why it is about to stop with [`ChildLink::set_exit`] before it stops; the link
/// sends [`ChildExited`] when it is dropped with the actor. A link dropped with no reason set means
/// the actor stopped without deciding to, i.e. it panicked: that is reported as a crash.
pub struct ChildLink {
    name: String,
    index: usize,
    generation: u64,
    supervisor: Addr<Supervisor>,
    exit: Option<ExitReason>,
    wired: Wired,
}

impl ChildLink {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the running child `name` published, when it is an earlier sibling of this one (or of
    /// a subtree this one is in) and published a `T`.
    pub fn wired<T: Clone + 'static>(&self, name: &str) -> Option<T> {
        self.wired.get(name)
    }

    /// Has `to` told what the sibling `name` publishes (a `T`): now, if it is running, and at
    /// each of its (re)starts while this child runs. For siblings that need each other, or that
    /// restart on their own (with `OneForOne`): [`ChildLink::wired`] only sees earlier siblings,
    /// as they were when this child started.
    pub fn follow<T: Clone + Send + 'static>(&self, name: &str, to: Recipient<SiblingUp<T>>) {
        self.supervisor.do_send(Follow {
            index: self.index,
            generation: self.generation,
            name: name.to_owned(),
            deliver: Box::new(move |published: &dyn Any| {
                if let Some(value) = published.downcast_ref::<T>() {
                    to.do_send(SiblingUp(value.clone()));
                }
            }),
        });
    }

    /// [`ChildLink::wired`], or the failure of a child started before what it needs was up.
    pub fn needs<T: Clone + 'static>(&self, name: &str) -> Result<T, Failure> {
        self.wired(name)
            .ok_or_else(|| Failure::crashed(format!("started before the {name} was up")))
    }

    /// Whether this start is a restart of the child.
    pub fn is_restart(&self) -> bool {
        self.generation > 0
    }

    /// Records why the child is stopping. The first reason wins: a crash seen while shutting down
    /// stays a crash.
    pub fn set_exit(&mut self, reason: ExitReason) {
        if self.exit.is_none() {
            self.exit = Some(reason);
        }
    }

    /// Asks the whole tree to stop in order (e.g. the page logged END_RECORDING).
    pub fn stop_tree(&self, cause: impl Into<String>) {
        self.supervisor.do_send(StopTree {
            cause: cause.into(),
        });
    }
}

impl Drop for ChildLink {
    fn drop(&mut self) {
        let reason = self.exit.take().unwrap_or_else(|| {
            ExitReason::Panicked(
                take_panic_message()
                    .unwrap_or_else(|| "actor stopped without saying why".to_owned()),
            )
        });
        self.supervisor.do_send(ChildExited {
            index: self.index,
            generation: self.generation,
            reason,
        });
    }
}

impl fmt::Debug for ChildLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildLink")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .finish()
    }
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records each panic's message for the thread it happened on, so a [`ChildLink`] dropped after
/// its actor panicked can say why. Chains to the previous hook.
fn install_panic_recorder() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                (*s).to_owned()
            } else if let Some(s) = info.payload().downcast_ref::<String>() {
                s.clone()
            } else {
                "unknown panic".to_owned()
            };
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{at}")));
            previous(info);
        }));
    });
}

fn take_panic_message() -> Option<String> {
    LAST_PANIC.with(|p| p.borrow_mut().take())
}

/// Settings of one supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub name: String,
    pub strategy: Strategy,
    pub intensity: Intensity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Running,
    Stopping,
}

struct Slot {
    spec: ChildSpec,
    generation: u64,
    running: Option<Box<dyn ChildHandle>>,
    /// What the running child published (see [`ChildSpec::publishing`]); None while it is not
    /// running.
    published: Option<Rc<dyn Any>>,
    /// Stopped for good by [`RemoveChild`]: never started again.
    removed: bool,
}

/// The supervisor actor. See the module docs.
pub struct Supervisor {
    config: SupervisorConfig,
    children: Vec<Slot>,
    restarts: VecDeque<Instant>,
    state: State,
    done: Option<oneshot::Sender<TreeExit>>,
    /// Children that failed to stop cleanly during the final stop.
    shutdown_failures: Vec<(String, Failure)>,
    /// The link to the parent supervisor, when this one is a child.
    link: Option<ChildLink>,
    /// Tells the parent's start function that every child is ready (or why not).
    ready: Option<oneshot::Sender<Result<(), Failure>>>,
    /// Who follows which sibling ([`ChildLink::follow`]); a follower's entries lapse when it
    /// stops (its generation moves on).
    follows: Vec<Follow>,
}

impl Supervisor {
    /// Starts the supervisor and, in order, its children. The receiver resolves with how the tree
    /// ended, after every child has stopped.
    pub fn start(
        config: SupervisorConfig,
        specs: Vec<ChildSpec>,
    ) -> (Addr<Supervisor>, oneshot::Receiver<TreeExit>) {
        Self::start_with(config, specs, None, None)
    }

    /// Starts a supervisor as the child of another; resolves once all its children are ready.
    pub fn start_linked(
        config: SupervisorConfig,
        specs: Vec<ChildSpec>,
        link: ChildLink,
    ) -> impl Future<Output = Result<Addr<Supervisor>, Failure>> + 'static {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (addr, _) = Self::start_with(config, specs, Some(link), Some(ready_tx));
        async move {
            match ready_rx.await {
                Ok(Ok(())) => Ok(addr),
                Ok(Err(failure)) => Err(failure),
                Err(_) => Err(Failure::crashed("supervisor stopped while starting")),
            }
        }
    }

    fn start_with(
        config: SupervisorConfig,
        specs: Vec<ChildSpec>,
        link: Option<ChildLink>,
        ready: Option<oneshot::Sender<Result<(), Failure>>>,
    ) -> (Addr<Supervisor>, oneshot::Receiver<TreeExit>) {
        install_panic_recorder();
        let (tx, rx) = oneshot::channel();
        let children = specs
            .into_iter()
            .map(|spec| Slot {
                spec,
                generation: 0,
                running: None,
                published: None,
                removed: false,
            })
            .collect();
        let addr = Supervisor {
            config,
            children,
            restarts: VecDeque::new(),
            state: State::Starting,
            done: Some(tx),
            shutdown_failures: Vec::new(),
            link,
            ready,
            follows: Vec::new(),
        }
        .start();
        (addr, rx)
    }

    /// Starts, in order, the children in `from..to` that are not running, stopping at the first
    /// that fails.
    fn start_range(
        &mut self,
        from: usize,
        to: usize,
        ctx: &mut Context<Self>,
    ) -> LocalBoxActorFuture<Self, Result<(), (usize, Failure)>> {
        let Some(index) =
            (from..to).find(|&i| self.children[i].running.is_none() && !self.children[i].removed)
        else {
            return fut::ready(Ok(())).boxed_local();
        };
        let wired = self.wired_before(index);
        let slot = &mut self.children[index];
        let link = ChildLink {
            name: slot.spec.name.clone(),
            index,
            generation: slot.generation,
            supervisor: ctx.address(),
            exit: None,
            wired,
        };
        tracing::debug!(supervisor = %self.config.name, child = %slot.spec.name, generation = slot.generation, "starting child");
        (slot.spec.start)(link)
            .into_actor(self)
            .then(move |result, act, ctx| match result {
                Ok(started) => {
                    act.children[index].running = Some(started.handle);
                    act.children[index].published = started.published;
                    act.tell_followers(index);
                    tracing::debug!(supervisor = %act.config.name, child = %act.children[index].spec.name, "child ready");
                    act.start_range(index + 1, to, ctx)
                }
                Err(failure) => fut::ready(Err((index, failure))).boxed_local(),
            })
            .boxed_local()
    }

    /// Stops the running children with index >= `from`, last started first, each within its
    /// shutdown timeout (then killed).
    fn stop_from(&mut self, from: usize) -> LocalBoxActorFuture<Self, ()> {
        let Some(index) = (from..self.children.len())
            .rev()
            .find(|&i| self.children[i].running.is_some())
        else {
            return fut::ready(()).boxed_local();
        };
        let slot = &mut self.children[index];
        let handle = slot.running.take().expect("found running above");
        slot.published = None;
        // A later exit report of this generation is stale.
        slot.generation += 1;
        let name = slot.spec.name.clone();
        let timeout = slot.spec.shutdown_timeout;
        tracing::debug!(supervisor = %self.config.name, child = %name, "stopping child");
        async move {
            match tokio::time::timeout(timeout, handle.shutdown()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(failure)) => Err((name, failure)),
                Err(_) => {
                    tracing::warn!(child = %name, timeout = ?timeout, "child did not stop in time, killing it");
                    handle.kill();
                    let failure = Failure::new(
                        FailureKind::Timeout,
                        format!("{name} did not stop within {timeout:?} and was killed"),
                    );
                    Err((name, failure))
                }
            }
        }
        .into_actor(self)
        .then(move |result, act, _| {
            if let Err((name, failure)) = result {
                tracing::error!(child = %name, error = %failure, "child did not stop cleanly");
                act.shutdown_failures.push((name, failure));
            }
            act.stop_from(from)
        })
        .boxed_local()
    }

    /// Tells the children that follow the child at `index` what it published, if it did.
    fn tell_followers(&mut self, index: usize) {
        let children = &self.children;
        self.follows
            .retain(|f| children.get(f.index).map(|c| c.generation) == Some(f.generation));
        let Some(published) = self.children[index].published.clone() else {
            return;
        };
        let name = &self.children[index].spec.name;
        for follow in self.follows.iter().filter(|f| &f.name == name) {
            (follow.deliver)(&*published);
        }
    }

    /// What the child at `index` is handed at its start: what this supervisor's parent handed it,
    /// then what its running earlier siblings published.
    fn wired_before(&self, index: usize) -> Wired {
        let mut wired = self
            .link
            .as_ref()
            .map(|link| link.wired.clone())
            .unwrap_or_default();
        wired
            .0
            .extend(self.children[..index].iter().filter_map(|slot| {
                let published = slot.published.as_ref().filter(|_| slot.running.is_some())?;
                Some((slot.spec.name.clone(), published.clone()))
            }));
        wired
    }

    /// Records a restart; false when it would exceed the intensity.
    fn allow_restart(&mut self) -> bool {
        let now = Instant::now();
        let period = self.config.intensity.period;
        while self
            .restarts
            .front()
            .is_some_and(|&t| now.duration_since(t) > period)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() as u32 >= self.config.intensity.max_restarts {
            return false;
        }
        self.restarts.push_back(now);
        true
    }

    /// Stops every child, then ends with `exit` (see [`Supervisor::finish`]).
    fn stop_all(&mut self, mut exit: TreeExit) -> LocalBoxActorFuture<Self, ()> {
        self.state = State::Stopping;
        self.shutdown_failures.clear();
        self.stop_from(0)
            .map(move |(), act, ctx| {
                if let TreeExit::Stopped { failures, .. } = &mut exit {
                    failures.clone_from(&act.shutdown_failures);
                }
                act.finish(exit, ctx);
            })
            .boxed_local()
    }

    /// Reports how the tree ended (to the owner, and to the parent through the link) and stops.
    fn finish(&mut self, exit: TreeExit, ctx: &mut Context<Self>) {
        tracing::info!(supervisor = %self.config.name, outcome = ?exit, "tree stopped");
        let failure = match &exit {
            TreeExit::Stopped { .. } => None,
            TreeExit::GaveUp { child, reason } => Some(match reason {
                ExitReason::Failed(f) => Failure {
                    origin: Some(f.origin.clone().unwrap_or_else(|| child.clone())),
                    ..f.clone()
                },
                other => Failure {
                    origin: Some(child.clone()),
                    ..Failure::crashed(other.to_string())
                },
            }),
            TreeExit::StartFailed { child, failure } => Some(Failure {
                origin: Some(failure.origin.clone().unwrap_or_else(|| child.clone())),
                ..failure.clone()
            }),
        };
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(match &failure {
                Some(f) => Err(f.clone()),
                None => Err(Failure::crashed("stopped while starting")),
            });
        }
        if let Some(link) = &mut self.link {
            link.set_exit(match failure {
                Some(f) => ExitReason::Failed(f),
                None => ExitReason::Shutdown,
            });
        }
        if let Some(done) = self.done.take() {
            let _ = done.send(exit);
        }
        ctx.stop();
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // `wait` holds back every message (exits, stop requests) until all children are ready.
        let all = self.children.len();
        let fut = self.start_range(0, all, ctx).map(|result, act, ctx| match result {
            Ok(()) => {
                act.state = State::Running;
                tracing::debug!(supervisor = %act.config.name, "all children ready");
                if let Some(ready) = act.ready.take() {
                    let _ = ready.send(Ok(()));
                }
            }
            Err((index, failure)) => {
                let child = act.children[index].spec.name.clone();
                tracing::error!(supervisor = %act.config.name, child = %child, error = %failure, "child failed to start");
                let stop = act.stop_all(TreeExit::StartFailed { child, failure });
                ctx.wait(stop);
            }
        });
        ctx.wait(fut);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Stopped without finishing (the system went down): say so rather than hang the owner.
        if let Some(done) = self.done.take() {
            let _ = done.send(TreeExit::Stopped {
                cause: "supervisor stopped".to_owned(),
                failures: Vec::new(),
            });
        }
    }
}

impl Handler<Follow> for Supervisor {
    type Result = ();

    fn handle(&mut self, follow: Follow, _: &mut Context<Self>) {
        if self.children.get(follow.index).map(|c| c.generation) != Some(follow.generation) {
            return; // the follower has stopped since it asked
        }
        let now = self.children.iter().find(|c| c.spec.name == follow.name);
        if let Some(published) = now
            .filter(|c| c.running.is_some())
            .and_then(|c| c.published.as_ref())
        {
            (follow.deliver)(&**published);
        }
        self.follows.push(follow);
    }
}

impl Handler<ChildExited> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ChildExited, ctx: &mut Context<Self>) {
        let Some(slot) = self.children.get_mut(msg.index) else {
            return;
        };
        if slot.generation != msg.generation || slot.running.is_none() {
            return; // a child we already stopped or replaced
        }
        slot.running = None;
        slot.published = None;
        slot.generation += 1;
        let name = slot.spec.name.clone();
        let restart = match slot.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => msg.reason.is_abnormal(),
            Restart::Temporary => false,
        };
        if self.state == State::Stopping {
            return;
        }
        if msg.reason.is_abnormal() {
            tracing::warn!(supervisor = %self.config.name, child = %name, reason = %msg.reason, "child crashed");
        } else {
            tracing::info!(supervisor = %self.config.name, child = %name, reason = %msg.reason, "child stopped");
        }
        if !restart {
            return;
        }
        let hopeless = matches!(&msg.reason, ExitReason::Failed(f) if !f.kind.restart_can_help());
        if hopeless {
            tracing::error!(supervisor = %self.config.name, child = %name, reason = %msg.reason, "a restart cannot fix this, giving up");
            let stop = self.stop_all(TreeExit::GaveUp {
                child: name,
                reason: msg.reason,
            });
            ctx.wait(stop);
            return;
        }
        if !self.allow_restart() {
            tracing::error!(
                supervisor = %self.config.name, child = %name, reason = %msg.reason,
                max_restarts = self.config.intensity.max_restarts,
                period = ?self.config.intensity.period,
                "restart intensity exceeded, giving up"
            );
            let stop = self.stop_all(TreeExit::GaveUp {
                child: name,
                reason: msg.reason,
            });
            ctx.wait(stop);
            return;
        }
        tracing::warn!(supervisor = %self.config.name, child = %name, cause = %msg.reason, strategy = ?self.config.strategy, message = crate::events::RESTARTING);
        let index = msg.index;
        let stop_dependents = match self.config.strategy {
            Strategy::OneForOne => fut::ready(()).boxed_local(),
            Strategy::RestForOne => self.stop_from(index + 1),
        };
        let last = match self.config.strategy {
            Strategy::OneForOne => index + 1,
            Strategy::RestForOne => self.children.len(),
        };
        let fut = stop_dependents
            .then(move |(), act, ctx| act.start_range(index, last, ctx))
            .map(move |result, act, ctx| {
                if let Err((i, failure)) = result {
                    let child = act.children[i].spec.name.clone();
                    tracing::error!(child = %child, error = %failure, "restart failed, giving up");
                    let stop = act.stop_all(TreeExit::GaveUp {
                        child,
                        reason: ExitReason::Failed(failure),
                    });
                    ctx.wait(stop);
                }
            });
        ctx.wait(fut);
    }
}

impl Handler<StopTree> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: StopTree, ctx: &mut Context<Self>) {
        if let Some(link) = &self.link {
            // Only the root decides: it stops everything, this subtree included, in order.
            link.stop_tree(msg.cause);
            return;
        }
        if self.state == State::Stopping {
            tracing::debug!(cause = %msg.cause, "already stopping");
            return;
        }
        tracing::info!(supervisor = %self.config.name, cause = %msg.cause, "stopping");
        let stop = self.stop_all(TreeExit::Stopped {
            cause: msg.cause,
            failures: Vec::new(),
        });
        ctx.wait(stop);
    }
}

impl Handler<AddChildren> for Supervisor {
    type Result = ResponseActFuture<Self, Result<(), Failure>>;

    fn handle(&mut self, added: AddChildren, ctx: &mut Context<Self>) -> Self::Result {
        if self.state == State::Stopping {
            return Box::pin(fut::ready(Err(Failure::crashed(format!(
                "{} is stopping",
                self.config.name
            )))));
        }
        let from = self.children.len();
        self.children
            .extend(added.0.take().into_iter().map(|spec| Slot {
                spec,
                generation: 0,
                running: None,
                published: None,
                removed: false,
            }));
        let to = self.children.len();
        Box::pin(self.start_range(from, to, ctx).map(move |result, act, _| {
            let Err((index, failure)) = result else {
                return Ok(());
            };
            // The tree goes on without the ones that did not start (this one and those after it).
            for slot in &mut act.children[index..to] {
                if slot.running.is_none() {
                    slot.removed = true;
                }
            }
            tracing::warn!(supervisor = %act.config.name, child = %act.children[index].spec.name, error = %failure, "added child failed to start");
            Err(failure)
        }))
    }
}

impl Handler<RemoveChild> for Supervisor {
    type Result = ResponseActFuture<Self, Result<(), Failure>>;

    fn handle(&mut self, msg: RemoveChild, _: &mut Context<Self>) -> Self::Result {
        let Some(slot) = self
            .children
            .iter_mut()
            .find(|s| s.spec.name == msg.name && !s.removed)
        else {
            return Box::pin(fut::ready(Err(Failure::crashed(format!(
                "{} has no child {}",
                self.config.name, msg.name
            )))));
        };
        slot.removed = true;
        slot.published = None;
        // A later exit report of this generation is stale.
        slot.generation += 1;
        let Some(handle) = slot.running.take() else {
            return Box::pin(fut::ready(Ok(())));
        };
        let timeout = slot.spec.shutdown_timeout;
        let name = msg.name;
        tracing::debug!(supervisor = %self.config.name, child = %name, "removing child");
        Box::pin(fut::wrap_future(async move {
            match tokio::time::timeout(timeout, handle.shutdown()).await {
                Ok(result) => result,
                Err(_) => {
                    handle.kill();
                    Err(Failure::new(
                        FailureKind::Timeout,
                        format!("{name} did not stop within {timeout:?} and was killed"),
                    ))
                }
            }
        }))
    }
}

impl<T: Clone + Send + 'static> Handler<Published<T>> for Supervisor {
    type Result = Option<T>;

    fn handle(&mut self, msg: Published<T>, _: &mut Context<Self>) -> Option<T> {
        // A removed child's slot keeps its name: only a running one answers.
        self.children
            .iter()
            .filter(|slot| slot.spec.name == msg.name && slot.running.is_some())
            .find_map(|slot| slot.published.as_ref()?.downcast_ref::<T>().cloned())
    }
}

/// A supervisor as a child: stops its children in order, then itself.
impl Handler<Shutdown> for Supervisor {
    type Result = ResponseActFuture<Self, Result<(), Failure>>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        if self.state == State::Stopping {
            return Box::pin(fut::ready(Ok(())));
        }
        let stop = self.stop_all(TreeExit::Stopped {
            cause: "shut down by its parent".into(),
            failures: Vec::new(),
        });
        // The parent wants the first child that did not stop cleanly, if any.
        Box::pin(stop.map(
            |(), act: &mut Self, _| match act.shutdown_failures.first() {
                Some((child, failure)) => Err(Failure::new(
                    failure.kind,
                    format!("{child}: {}", failure.message),
                )),
                None => Ok(()),
            },
        ))
    }
}

/// A supervisor as a child that did not stop in time: kill every child, then stop.
impl Handler<Kill> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: Kill, ctx: &mut Context<Self>) {
        self.state = State::Stopping;
        for slot in &mut self.children {
            slot.published = None;
            if let Some(handle) = slot.running.take() {
                handle.kill();
            }
        }
        if let Some(link) = &mut self.link {
            link.set_exit(ExitReason::Shutdown);
        }
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    //! The supervision semantics against fake children (actors without processes).
    use super::*;
    use std::collections::HashMap;
    use std::rc::Rc;

    type Log = Rc<RefCell<Vec<String>>>;
    type Addrs = Rc<RefCell<HashMap<String, Addr<Fake>>>>;

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum OnStop {
        Comply,
        Refuse,
    }

    struct Fake {
        name: String,
        link: ChildLink,
        log: Log,
        on_stop: OnStop,
    }

    impl Actor for Fake {
        type Context = Context<Self>;
    }

    impl Handler<Shutdown> for Fake {
        type Result = ResponseActFuture<Self, Result<(), Failure>>;
        fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
            self.log.borrow_mut().push(format!("stop {}", self.name));
            self.link.set_exit(ExitReason::Shutdown);
            if self.on_stop == OnStop::Refuse {
                return Box::pin(fut::wrap_future(std::future::pending()));
            }
            ctx.stop();
            Box::pin(fut::ready(Ok(())))
        }
    }

    impl Handler<Kill> for Fake {
        type Result = ();
        fn handle(&mut self, _: Kill, ctx: &mut Context<Self>) {
            self.log.borrow_mut().push(format!("kill {}", self.name));
            self.link.set_exit(ExitReason::Shutdown);
            ctx.stop();
        }
    }

    /// Makes the fake stop with `0` as its reason, as a crash or a normal finish would.
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Exit(ExitReason);

    impl Handler<Exit> for Fake {
        type Result = ();
        fn handle(&mut self, msg: Exit, ctx: &mut Context<Self>) {
            self.link.set_exit(msg.0);
            ctx.stop();
        }
    }

    /// Makes the fake ask for the whole tree to stop, as the browser does on END_RECORDING.
    #[derive(Message)]
    #[rtype(result = "()")]
    struct AskStop;

    impl Handler<AskStop> for Fake {
        type Result = ();
        fn handle(&mut self, _: AskStop, _: &mut Context<Self>) {
            self.link.stop_tree(format!("{} asked", self.name));
        }
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Panic;

    impl Handler<Panic> for Fake {
        type Result = ();
        fn handle(&mut self, _: Panic, _: &mut Context<Self>) {
            panic!("fake child {} panicked on purpose", self.name);
        }
    }

    struct Tree {
        log: Log,
        addrs: Addrs,
        sup: Addr<Supervisor>,
        exit: oneshot::Receiver<TreeExit>,
    }

    #[derive(Clone, Copy)]
    struct Child {
        name: &'static str,
        restart: Restart,
        on_stop: OnStop,
        fail_start: bool,
    }

    fn child(name: &'static str, restart: Restart) -> Child {
        Child {
            name,
            restart,
            on_stop: OnStop::Comply,
            fail_start: false,
        }
    }

    fn fake_specs(children: &[Child], log: &Log, addrs: &Addrs) -> Vec<ChildSpec> {
        children
            .iter()
            .map(|&c| {
                let (log, addrs) = (log.clone(), addrs.clone());
                ChildSpec::new(c.name, c.restart, Duration::from_millis(200), move |link| {
                    log.borrow_mut().push(format!("start {}", c.name));
                    let result = if c.fail_start {
                        Err(Failure::crashed(format!("{} cannot start", c.name)))
                    } else {
                        let addr = Fake {
                            name: c.name.to_owned(),
                            link,
                            log: log.clone(),
                            on_stop: c.on_stop,
                        }
                        .start();
                        addrs.borrow_mut().insert(c.name.to_owned(), addr.clone());
                        Ok(addr)
                    };
                    std::future::ready(result)
                })
            })
            .collect()
    }

    /// Fake children that publish their name and start count ("browser2"), and log what their
    /// earlier siblings (and their parent's) published when they start.
    fn publishing_specs(names: &[&'static str], log: &Log, addrs: &Addrs) -> Vec<ChildSpec> {
        const ALL: [&str; 3] = ["display", "browser", "encoder"];
        let children = names.iter().map(|&name| (name, None)).collect();
        counted_specs(children, log, addrs, |me, link| {
            let seen: Vec<String> = ALL.iter().filter_map(|n| link.wired::<String>(n)).collect();
            format!("start {me} sees [{}]", seen.join(" "))
        })
    }

    /// Fake children (each named, and the sibling it follows, if any) that publish their name
    /// and start count ("browser2"); at each start, what `line` makes of that and the link is
    /// logged.
    fn counted_specs(
        children: Vec<(&'static str, Option<&'static str>)>,
        log: &Log,
        addrs: &Addrs,
        line: fn(&str, &ChildLink) -> String,
    ) -> Vec<ChildSpec> {
        children
            .into_iter()
            .map(|(name, follows)| {
                let (log, addrs) = (log.clone(), addrs.clone());
                let starts = std::cell::Cell::new(0);
                ChildSpec::publishing(
                    name,
                    Restart::Permanent,
                    Duration::from_millis(200),
                    move |link| {
                        starts.set(starts.get() + 1);
                        let me = format!("{name}{}", starts.get());
                        log.borrow_mut().push(line(&me, &link));
                        let log = log.clone();
                        let addr = Fake::create(move |ctx| {
                            if let Some(other) = follows {
                                link.follow::<String>(other, ctx.address().recipient());
                            }
                            Fake {
                                name: name.to_owned(),
                                link,
                                log,
                                on_stop: OnStop::Comply,
                            }
                        });
                        addrs.borrow_mut().insert(name.to_owned(), addr.clone());
                        std::future::ready(Ok((addr, me)))
                    },
                )
            })
            .collect()
    }

    fn tree(strategy: Strategy, intensity: Intensity, children: Vec<Child>) -> Tree {
        let log: Log = Rc::default();
        let addrs: Addrs = Rc::default();
        let specs = fake_specs(&children, &log, &addrs);
        tree_of(strategy, intensity, specs, log, addrs)
    }

    fn tree_of(
        strategy: Strategy,
        intensity: Intensity,
        specs: Vec<ChildSpec>,
        log: Log,
        addrs: Addrs,
    ) -> Tree {
        let config = SupervisorConfig {
            name: "test".into(),
            strategy,
            intensity,
        };
        let (sup, exit) = Supervisor::start(config, specs);
        Tree {
            log,
            addrs,
            sup,
            exit,
        }
    }

    /// A one-for-one subtree named "sub" of fake children, with its own intensity.
    fn subtree(children: Vec<Child>, intensity: Intensity, log: &Log, addrs: &Addrs) -> ChildSpec {
        let (log, addrs) = (log.clone(), addrs.clone());
        ChildSpec::new(
            "sub",
            Restart::Permanent,
            Duration::from_secs(2),
            move |link| {
                log.borrow_mut().push("start sub".into());
                let config = SupervisorConfig {
                    name: "sub".into(),
                    strategy: Strategy::OneForOne,
                    intensity,
                };
                Supervisor::start_linked(config, fake_specs(&children, &log, &addrs), link)
            },
        )
    }

    const MANY: Intensity = Intensity {
        max_restarts: 100,
        period: Duration::from_secs(60),
    };

    impl Tree {
        fn addr(&self, name: &str) -> Addr<Fake> {
            self.addrs.borrow()[name].clone()
        }

        fn log(&self) -> Vec<String> {
            self.log.borrow().clone()
        }

        /// Waits until the log has `n` entries (or fails after a deadline).
        async fn wait_log_len(&self, n: usize) -> Vec<String> {
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.log.borrow().len() < n {
                assert!(
                    Instant::now() < deadline,
                    "log stuck at {:?}, expected {n} entries",
                    self.log()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            self.log()
        }

        async fn stop(self) -> (Vec<String>, TreeExit) {
            self.sup.do_send(StopTree {
                cause: "test".into(),
            });
            let exit = tokio::time::timeout(Duration::from_secs(5), self.exit)
                .await
                .expect("tree did not stop")
                .expect("supervisor dropped its result");
            (self.log.borrow().clone(), exit)
        }
    }

    /// How the tree ended, failing the test if it has not ended within 5 s.
    async fn exit_within(exit: oneshot::Receiver<TreeExit>) -> TreeExit {
        tokio::time::timeout(Duration::from_secs(5), exit)
            .await
            .expect("the tree did not end in time")
            .expect("the supervisor dropped its result")
    }

    fn crash() -> ExitReason {
        ExitReason::Failed(Failure::crashed("boom"))
    }

    #[actix_rt::test]
    async fn starts_in_order_and_stops_in_reverse() {
        let t = tree(
            Strategy::RestForOne,
            MANY,
            vec![
                child("a", Restart::Permanent),
                child("b", Restart::Permanent),
                child("c", Restart::Permanent),
            ],
        );
        t.wait_log_len(3).await;
        let (log, exit) = t.stop().await;
        assert_eq!(
            log,
            ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
        );
        assert_eq!(
            exit,
            TreeExit::Stopped {
                cause: "test".into(),
                failures: vec![]
            }
        );
    }

    /// The supervisor wires siblings: each child gets, at its start, what its running earlier
    /// siblings published, a subtree's children what their parent's did, and a restarted
    /// child's new value reaches only what starts after it.
    #[actix_rt::test]
    async fn children_get_what_their_running_earlier_siblings_published() {
        let log: Log = Rc::default();
        let addrs: Addrs = Rc::default();
        let mut specs = publishing_specs(&["display"], &log, &addrs);
        let (sub_log, sub_addrs) = (log.clone(), addrs.clone());
        specs.push(ChildSpec::new(
            "sub",
            Restart::Permanent,
            Duration::from_secs(2),
            move |link| {
                let config = SupervisorConfig {
                    name: "sub".into(),
                    strategy: Strategy::OneForOne,
                    intensity: MANY,
                };
                let children = publishing_specs(&["browser", "encoder"], &sub_log, &sub_addrs);
                Supervisor::start_linked(config, children, link)
            },
        ));
        let t = tree_of(Strategy::RestForOne, MANY, specs, log, addrs);
        assert_eq!(
            t.wait_log_len(3).await,
            [
                "start display1 sees []",
                "start browser1 sees [display1]",
                "start encoder1 sees [display1 browser1]",
            ]
        );
        // One-for-one in the subtree: the browser restarts alone; the encoder started after it
        // gets the new browser.
        t.addr("browser").do_send(Exit(crash()));
        assert_eq!(t.wait_log_len(4).await[3], "start browser2 sees [display1]");
        t.addr("encoder").do_send(Exit(crash()));
        assert_eq!(
            t.wait_log_len(5).await[4],
            "start encoder2 sees [display1 browser2]"
        );
        // Rest-for-one at the root: a new display reaches the whole subtree.
        t.addr("display").do_send(Exit(crash()));
        assert_eq!(
            t.wait_log_len(10).await[5..],
            [
                "stop encoder",
                "stop browser",
                "start display2 sees []",
                // The subtree starts anew, with new children (counted from 1 again).
                "start browser1 sees [display2]",
                "start encoder1 sees [display2 browser1]",
            ]
        );
        t.stop().await;
    }

    /// The owner asks the supervisor what a running child published: the current incarnation's
    /// value (a restarted child's new one), and nothing for a child that is not running (removed,
    /// or stopped for good), for a name it does not have, or for a type the child did not publish.
    #[actix_rt::test]
    async fn the_owner_gets_what_a_running_child_published_now() {
        let log: Log = Rc::default();
        let addrs: Addrs = Rc::default();
        let children = vec![("a", None), ("b", None)];
        let mut specs = counted_specs(children, &log, &addrs, |me, _| format!("start {me}"));
        let temp_addrs = addrs.clone();
        specs.push(ChildSpec::publishing(
            "temp",
            Restart::Temporary,
            Duration::from_millis(200),
            move |link| {
                let addr = Fake {
                    name: "temp".into(),
                    link,
                    log: Rc::default(),
                    on_stop: OnStop::Comply,
                }
                .start();
                temp_addrs.borrow_mut().insert("temp".into(), addr.clone());
                std::future::ready(Ok((addr, "temp1".to_owned())))
            },
        ));
        let t = tree_of(Strategy::OneForOne, MANY, specs, log, addrs);
        let published = |name: &str| t.sup.send(Published::<String>::new(name));
        assert_eq!(published("a").await.unwrap().as_deref(), Some("a1"));
        assert_eq!(published("b").await.unwrap().as_deref(), Some("b1"));
        assert_eq!(published("temp").await.unwrap().as_deref(), Some("temp1"));
        assert_eq!(published("nobody").await.unwrap(), None);
        let as_number = t.sup.send(Published::<u32>::new("a")).await.unwrap();
        assert_eq!(as_number, None, "a published a String, not a u32");
        // After a restart, the new incarnation's value.
        t.addr("a").do_send(Exit(crash()));
        assert_eq!(t.wait_log_len(3).await[2], "start a2");
        assert_eq!(published("a").await.unwrap().as_deref(), Some("a2"));
        // A removed child answers nothing, at once.
        let removed = t.sup.send(RemoveChild { name: "b".into() }).await;
        assert_eq!(removed.unwrap(), Ok(()));
        assert_eq!(published("b").await.unwrap(), None);
        // A child that stopped and is not restarted (temporary) answers nothing once its
        // supervisor has seen it stop.
        t.addr("temp").do_send(Exit(crash()));
        let deadline = Instant::now() + Duration::from_secs(5);
        while published("temp").await.unwrap().is_some() {
            assert!(
                Instant::now() < deadline,
                "temp still answers after its exit"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(published("a").await.unwrap().as_deref(), Some("a2"));
        let (log, exit) = t.stop().await;
        assert!(matches!(exit, TreeExit::Stopped { ref failures, .. } if failures.is_empty()));
        assert_eq!(log[3..], ["stop b", "stop a"]);
    }

    impl Handler<SiblingUp<String>> for Fake {
        type Result = ();
        fn handle(&mut self, SiblingUp(value): SiblingUp<String>, _: &mut Context<Self>) {
            self.log
                .borrow_mut()
                .push(format!("{} hears {value}", self.name));
        }
    }

    /// Two siblings that need each other (`follow`), restarting on their own (one-for-one): each
    /// hears what the other published when it starts, whichever started first, and again at each
    /// of the other's restarts.
    #[actix_rt::test]
    async fn followers_hear_each_start_of_the_sibling_they_follow() {
        let log: Log = Rc::default();
        let addrs: Addrs = Rc::default();
        let children = vec![("a", Some("b")), ("b", Some("a"))];
        let specs = counted_specs(children, &log, &addrs, |me, _| format!("start {me}"));
        let t = tree_of(Strategy::OneForOne, MANY, specs, log, addrs);
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        // `a` started before `b` was up: it hears of `b` when `b` starts.
        assert_eq!(
            sorted(t.wait_log_len(4).await),
            ["a hears b1", "b hears a1", "start a1", "start b1"]
        );
        t.addr("a").do_send(Exit(crash()));
        assert_eq!(
            sorted(t.wait_log_len(7).await[4..].to_vec()),
            ["a hears b1", "b hears a2", "start a2"]
        );
        t.addr("b").do_send(Exit(crash()));
        assert_eq!(
            sorted(t.wait_log_len(10).await[7..].to_vec()),
            ["a hears b2", "b hears a2", "start b2"]
        );
        t.stop().await;
    }

    #[actix_rt::test]
    async fn one_for_one_restarts_only_the_dead_child() {
        let t = tree(
            Strategy::OneForOne,
            MANY,
            vec![
                child("a", Restart::Permanent),
                child("b", Restart::Permanent),
                child("c", Restart::Permanent),
            ],
        );
        t.wait_log_len(3).await;
        t.addr("b").do_send(Exit(crash()));
        assert_eq!(t.wait_log_len(4).await[3], "start b");
        let (log, _) = t.stop().await;
        assert_eq!(log[4..], ["stop c", "stop b", "stop a"]);
    }

    #[actix_rt::test]
    async fn rest_for_one_restarts_the_dead_child_and_everything_after_it() {
        let t = tree(
            Strategy::RestForOne,
            MANY,
            vec![
                child("display", Restart::Permanent),
                child("browser", Restart::Permanent),
                child("encoder", Restart::Permanent),
            ],
        );
        t.wait_log_len(3).await;
        t.addr("display").do_send(Exit(crash()));
        let log = t.wait_log_len(8).await;
        assert_eq!(
            log[3..],
            [
                "stop encoder",
                "stop browser",
                "start display",
                "start browser",
                "start encoder"
            ]
        );
        // A dead last child takes nothing with it.
        t.addr("encoder").do_send(Exit(crash()));
        assert_eq!(t.wait_log_len(9).await[8], "start encoder");
        t.stop().await;
    }

    #[actix_rt::test]
    async fn restart_policies() {
        let t = tree(
            Strategy::OneForOne,
            MANY,
            vec![
                child("perm", Restart::Permanent),
                child("trans-ok", Restart::Transient),
                child("trans-crash", Restart::Transient),
                child("temp", Restart::Temporary),
            ],
        );
        t.wait_log_len(4).await;
        // Transient: a normal exit is final.
        t.addr("trans-ok").do_send(Exit(ExitReason::Normal));
        // Temporary: even a crash is final.
        t.addr("temp").do_send(Exit(crash()));
        // Permanent: even a normal exit restarts.
        t.addr("perm").do_send(Exit(ExitReason::Normal));
        assert_eq!(t.wait_log_len(5).await[4], "start perm");
        // Transient: a crash restarts.
        t.addr("trans-crash").do_send(Exit(crash()));
        assert_eq!(t.wait_log_len(6).await[5], "start trans-crash");
        let (log, _) = t.stop().await;
        // The children that were not restarted are not running, so they are not stopped.
        assert_eq!(log[6..], ["stop trans-crash", "stop perm"]);
    }

    #[actix_rt::test]
    async fn gives_up_past_the_restart_intensity_and_stops_everything() {
        let t = tree(
            Strategy::OneForOne,
            Intensity {
                max_restarts: 2,
                period: Duration::from_secs(60),
            },
            vec![
                child("a", Restart::Permanent),
                child("b", Restart::Permanent),
            ],
        );
        t.wait_log_len(2).await;
        for n in 0..2 {
            t.addr("b").do_send(Exit(crash()));
            t.wait_log_len(3 + n).await;
        }
        t.addr("b").do_send(Exit(crash()));
        let exit = exit_within(t.exit).await;
        assert_eq!(
            exit,
            TreeExit::GaveUp {
                child: "b".into(),
                reason: crash()
            }
        );
        assert_eq!(
            t.log.borrow()[..],
            ["start a", "start b", "start b", "start b", "stop a"]
        );
    }

    #[actix_rt::test]
    async fn restarts_outside_the_window_do_not_count() {
        tokio::time::pause();
        let t = tree(
            Strategy::OneForOne,
            Intensity {
                max_restarts: 1,
                period: Duration::from_secs(10),
            },
            vec![child("a", Restart::Permanent)],
        );
        t.wait_log_len(1).await;
        t.addr("a").do_send(Exit(crash()));
        t.wait_log_len(2).await;
        tokio::time::advance(Duration::from_secs(11)).await;
        t.addr("a").do_send(Exit(crash()));
        assert_eq!(t.wait_log_len(3).await[2], "start a");
        t.stop().await;
    }

    #[actix_rt::test]
    async fn intensity_zero_gives_up_at_the_first_failure() {
        let t = tree(
            Strategy::RestForOne,
            Intensity::NEVER,
            vec![
                child("a", Restart::Permanent),
                child("b", Restart::Permanent),
            ],
        );
        t.wait_log_len(2).await;
        t.addr("a").do_send(Exit(crash()));
        let exit = t.exit.await.unwrap();
        assert!(matches!(exit, TreeExit::GaveUp { ref child, .. } if child == "a"));
        assert_eq!(t.log.borrow()[2..], ["stop b"]);
    }

    #[actix_rt::test]
    async fn a_child_that_refuses_to_stop_is_killed_after_its_timeout() {
        let mut stubborn = child("stubborn", Restart::Permanent);
        stubborn.on_stop = OnStop::Refuse;
        let t = tree(
            Strategy::OneForOne,
            MANY,
            vec![child("a", Restart::Permanent), stubborn],
        );
        t.wait_log_len(2).await;
        let started = Instant::now();
        let (log, exit) = t.stop().await;
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(log[2..], ["stop stubborn", "kill stubborn", "stop a"]);
        match exit {
            TreeExit::Stopped { failures, .. } => {
                assert_eq!(failures.len(), 1);
                assert_eq!(failures[0].0, "stubborn");
                assert_eq!(failures[0].1.kind, FailureKind::Timeout);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[actix_rt::test]
    async fn a_panicking_child_counts_as_crashed() {
        let t = tree(
            Strategy::OneForOne,
            Intensity::NEVER,
            vec![child("a", Restart::Permanent)],
        );
        t.wait_log_len(1).await;
        t.addr("a").do_send(Panic);
        let exit = exit_within(t.exit).await;
        match exit {
            TreeExit::GaveUp {
                child,
                reason: ExitReason::Panicked(msg),
            } => {
                assert_eq!(child, "a");
                assert!(msg.contains("fake child a panicked on purpose"), "{msg}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[actix_rt::test]
    async fn a_failed_start_stops_what_was_started() {
        let mut broken = child("b", Restart::Permanent);
        broken.fail_start = true;
        let t = tree(
            Strategy::RestForOne,
            MANY,
            vec![
                child("a", Restart::Permanent),
                broken,
                child("c", Restart::Permanent),
            ],
        );
        let exit = exit_within(t.exit).await;
        assert_eq!(
            exit,
            TreeExit::StartFailed {
                child: "b".into(),
                failure: Failure::crashed("b cannot start")
            }
        );
        assert_eq!(t.log.borrow()[..], ["start a", "start b", "stop a"]);
    }

    /// Children added to a running subtree start after the others and stop before them; a
    /// removed one is stopped at once and never started again, by a restart or otherwise.
    #[actix_rt::test]
    async fn children_are_added_to_and_removed_from_a_running_subtree() {
        let log: Log = Rc::default();
        let addrs: Addrs = Rc::default();
        let sub: Rc<RefCell<Option<Addr<Supervisor>>>> = Rc::default();
        let spec = {
            let (log, addrs, sub) = (log.clone(), addrs.clone(), sub.clone());
            ChildSpec::new(
                "sub",
                Restart::Permanent,
                Duration::from_secs(2),
                move |link| {
                    let config = SupervisorConfig {
                        name: "sub".into(),
                        strategy: Strategy::OneForOne,
                        intensity: MANY,
                    };
                    let specs = fake_specs(&[child("a", Restart::Permanent)], &log, &addrs);
                    let started = Supervisor::start_linked(config, specs, link);
                    let sub = sub.clone();
                    async move {
                        let addr = started.await?;
                        *sub.borrow_mut() = Some(addr.clone());
                        Ok(addr)
                    }
                },
            )
        };
        let t = tree_of(
            Strategy::OneForOne,
            MANY,
            vec![spec],
            log.clone(),
            addrs.clone(),
        );
        assert_eq!(t.wait_log_len(1).await, ["start a"]);
        let sub = sub.borrow().clone().unwrap();
        let added = fake_specs(
            &[
                child("x", Restart::Permanent),
                child("y", Restart::Permanent),
            ],
            &log,
            &addrs,
        );
        assert_eq!(sub.send(AddChildren::new(added)).await.unwrap(), Ok(()));
        assert_eq!(t.log(), ["start a", "start x", "start y"]);
        let remove = |name: &str| {
            sub.send(RemoveChild {
                name: name.to_owned(),
            })
        };
        assert_eq!(remove("x").await.unwrap(), Ok(()));
        assert_eq!(t.log()[3..], ["stop x"]);
        assert!(remove("x").await.unwrap().is_err(), "removed twice");
        // A crash of another restarts that one alone; x stays removed.
        t.addr("y").do_send(Exit(crash()));
        assert_eq!(t.wait_log_len(5).await[4..], ["start y"]);
        let (log, exit) = t.stop().await;
        assert!(matches!(exit, TreeExit::Stopped { .. }), "{exit:?}");
        assert_eq!(log[5..], ["stop y", "stop a"]);
    }

    fn nested(sub_intensity: Intensity) -> Tree {
        let log: Log = Rc::default();
        let addrs: Addrs = Rc::default();
        let mut specs = fake_specs(&[child("display", Restart::Permanent)], &log, &addrs);
        specs.push(subtree(
            vec![
                child("browser", Restart::Permanent),
                child("encoder", Restart::Permanent),
            ],
            sub_intensity,
            &log,
            &addrs,
        ));
        tree_of(Strategy::RestForOne, MANY, specs, log, addrs)
    }

    #[actix_rt::test]
    async fn a_subtree_restarts_with_what_it_depends_on_and_stops_in_order() {
        let t = nested(MANY);
        assert_eq!(
            t.wait_log_len(4).await,
            [
                "start display",
                "start sub",
                "start browser",
                "start encoder"
            ]
        );
        t.addr("display").do_send(Exit(crash()));
        let log = t.wait_log_len(10).await;
        assert_eq!(
            log[4..],
            [
                "stop encoder",
                "stop browser",
                "start display",
                "start sub",
                "start browser",
                "start encoder"
            ]
        );
        let (log, exit) = t.stop().await;
        assert_eq!(log[10..], ["stop encoder", "stop browser", "stop display"]);
        assert!(matches!(exit, TreeExit::Stopped { ref failures, .. } if failures.is_empty()));
    }

    #[actix_rt::test]
    async fn a_crash_inside_a_subtree_stays_inside_it() {
        let t = nested(MANY);
        t.wait_log_len(4).await;
        t.addr("browser").do_send(Exit(crash()));
        assert_eq!(t.wait_log_len(5).await[4], "start browser");
        // Nothing else moved: the next entries are the final stop.
        let (log, _) = t.stop().await;
        assert_eq!(log[5..], ["stop encoder", "stop browser", "stop display"]);
    }

    #[actix_rt::test]
    async fn a_subtree_that_gives_up_is_restarted_by_its_parent() {
        let t = nested(Intensity::NEVER);
        t.wait_log_len(4).await;
        t.addr("encoder").do_send(Exit(crash()));
        // The subtree gives up (stopping the browser); the root restarts it as a whole.
        let log = t.wait_log_len(8).await;
        assert_eq!(
            log[4..],
            [
                "stop browser",
                "start sub",
                "start browser",
                "start encoder"
            ]
        );
        t.stop().await;
    }

    #[actix_rt::test]
    async fn a_stop_request_from_deep_in_the_tree_stops_everything_in_order() {
        let t = nested(MANY);
        t.wait_log_len(4).await;
        t.addr("browser").do_send(AskStop);
        let exit = exit_within(t.exit).await;
        assert_eq!(
            exit,
            TreeExit::Stopped {
                cause: "browser asked".into(),
                failures: vec![]
            }
        );
        assert_eq!(
            t.log.borrow()[4..],
            ["stop encoder", "stop browser", "stop display"]
        );
    }

    #[actix_rt::test]
    async fn failures_a_restart_cannot_fix_are_not_restarted() {
        let t = tree(
            Strategy::OneForOne,
            MANY,
            vec![
                child("a", Restart::Permanent),
                child("browser", Restart::Permanent),
            ],
        );
        t.wait_log_len(2).await;
        let bad_url = ExitReason::Failed(Failure::new(FailureKind::Input, "could not load"));
        t.addr("browser").do_send(Exit(bad_url.clone()));
        let exit = exit_within(t.exit).await;
        assert_eq!(
            exit,
            TreeExit::GaveUp {
                child: "browser".into(),
                reason: bad_url
            }
        );
        assert_eq!(t.log.borrow()[2..], ["stop a"]);
    }

    #[actix_rt::test]
    async fn a_failure_from_a_subtree_names_the_child_it_began_in() {
        let log: Log = Rc::default();
        let addrs: Addrs = Rc::default();
        let specs = vec![subtree(
            vec![child("encoder", Restart::Permanent)],
            Intensity::NEVER,
            &log,
            &addrs,
        )];
        let t = tree_of(Strategy::OneForOne, Intensity::NEVER, specs, log, addrs);
        t.wait_log_len(2).await;
        t.addr("encoder").do_send(Exit(crash()));
        let exit = exit_within(t.exit).await;
        match exit {
            TreeExit::GaveUp {
                child,
                reason: ExitReason::Failed(f),
            } => {
                assert_eq!(child, "sub");
                assert_eq!(f.origin.as_deref(), Some("encoder"));
                assert_eq!(f.message, "boom");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
