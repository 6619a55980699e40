//! The timely runtime: worker threads whose main dataflow is fed Arrow batches at event time,
//! and dataflows added while it runs.
//!
//! [`Runtime::start`] spawns `workers` timely workers. Each builds the main dataflow over one
//! input of [`Input`]s, fed from a bounded channel: the input is split once into a stream per
//! input definition ([`Graph::split`]), the caller's `build` adds its operators, and every stream
//! of the resulting graph is *shared* ([`crate::share`]): retained for backfill and queries,
//! and readable by dataflows added later. The ingest side ([`crate::ingest::Ingest`]) decides
//! which worker gets which batch and, identically for every worker, when the watermark
//! advances: a worker delays its input capability to a batch's time to send it, and
//! downgrades the capability to the watermark. Because every worker holds the same watermark,
//! the frontier (and so every window decision) is the same whatever the number of workers.
//!
//! Dataflows added while the runtime runs ([`Runtime::install`]) get a graph that imports the
//! main dataflow's streams on demand, from a given time: backfill from the retained batches,
//! then everything later. [`Runtime::remove`] ends a dataflow's imports; it drains and ends,
//! or is dropped with what it holds if it has not ended within [`RuntimeConfig::grace`].
//! [`Runtime::kill`] drops it at once (a rule over its budget). Shutting down waits for added
//! dataflows for the same grace, no longer: one slow rule never holds the engine.
//!
//! Shutting down ([`Runtime::finish`]) drops the input's capability, so the frontier becomes
//! empty, every window closes and every sink flushes before the worker threads end.
//!
//! A worker that panics cannot take part in progress tracking any more, so the others can
//! never finish: the panic is recorded with its place ([`worker_panic`]), every sink is asked
//! to commit what it holds ([`crate::parquet_sink::request_flush`]; the panicking worker's own
//! sinks commit while it unwinds), and after one commit interval the runtime lets go of the
//! workers instead of joining them; the run ends with the panic as its error.

use std::rc::Rc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use timely::dataflow::Stream;
use timely::dataflow::operators::core::UnorderedInput;
use timely::dataflow::operators::probe::Handle as ProbeHandle;

use crate::error::{EngineError, Result};
use crate::graph::Graph;
use crate::share::{Hubs, Retained};
use crate::stream::{Batch, StreamInfo};

/// Logical time of the dataflow: milliseconds of event time since the Unix epoch.
pub type Time = u64;

/// One batch on the main dataflow's input, with the stream it belongs to.
#[derive(Clone, Debug)]
pub struct Input {
    /// The stream (or reference table).
    pub stream: &'static StreamInfo,
    /// Its rows and their multiplicity.
    pub batch: Batch,
}

/// The main dataflow's input, before [`Graph::split`].
pub type InputStream<'scope> = Stream<'scope, Time, Vec<Input>>;

/// Runtime options.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// Number of timely worker threads (at least 1).
    pub workers: usize,
    /// Messages that may wait in each worker's queue before the ingest side blocks.
    pub queue_depth: usize,
    /// The streams and tables the main dataflow is fed.
    pub inputs: Vec<&'static StreamInfo>,
    /// Where shared batches are kept (backfill, queries).
    pub retained: Arc<Mutex<Retained>>,
    /// The sinks' commit interval: how long a panicked run waits for them to commit.
    pub commit: Duration,
    /// How long a removed dataflow (and every added one, at shutdown) may take to drain.
    pub grace: Duration,
}

impl RuntimeConfig {
    /// `workers` workers fed `inputs`, keeping nothing in memory.
    pub fn new(workers: usize, inputs: Vec<&'static StreamInfo>) -> Self {
        let workers = workers.max(1);
        Self {
            workers,
            queue_depth: 1024,
            inputs,
            retained: Retained::shared(workers, 0, usize::MAX),
            commit: crate::parquet_sink::DEFAULT_COMMIT,
            grace: Duration::from_secs(10),
        }
    }

    /// Sinks commit every `commit`.
    pub fn with_commit(mut self, commit: Duration) -> Self {
        self.commit = commit;
        self
    }

    /// Keeps shared batches in `retained`.
    pub fn with_retained(mut self, retained: Arc<Mutex<Retained>>) -> Self {
        self.retained = retained;
        self
    }
}

/// Builds a dataflow on one worker from its graph; returns a probe on its outputs. The main
/// dataflow's graph holds its inputs; an added dataflow's imports what it asks for.
pub type Builder = Arc<dyn for<'scope> Fn(&mut Graph<'scope>) -> ProbeHandle<Time> + Send + Sync>;

enum Msg {
    Batch(Time, Input),
    Advance(Time),
    Install { id: u64, build: Builder, from: Time },
    Remove(u64),
    Kill(u64),
}

/// An added dataflow on one worker.
struct Added {
    /// Timely's index of the dataflow (to drop it).
    index: usize,
    probe: ProbeHandle<Time>,
}

static PANIC: Mutex<Option<String>> = Mutex::new(None);

/// The first panic of a worker thread of this process, with its place, if one panicked.
pub fn worker_panic() -> Option<String> {
    PANIC.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Records panics of timely worker threads (see the module documentation); other threads'
/// panics go to the hook that was there before.
fn watch_panics() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            if thread.name().is_some_and(|n| n.starts_with("timely:work")) {
                let place = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let cause = format!("{} panicked at {place}: {message}", thread.name().unwrap_or("worker"));
                tracing::error!("{cause}; committing what the sinks hold");
                PANIC.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(cause);
                crate::parquet_sink::request_flush();
            }
            previous(info);
        }));
    });
}

/// The error of a worker that is gone: its panic when it panicked.
fn stopped(worker: usize) -> EngineError {
    match worker_panic() {
        Some(cause) => EngineError::Internal(cause),
        None => EngineError::Internal(format!("worker {worker} stopped early")),
    }
}

/// A running engine. Feed it with [`send`](Self::send) and [`advance`](Self::advance).
pub struct Runtime {
    senders: Vec<SyncSender<Msg>>,
    guards: Option<timely::communication::initialize::WorkerGuards<Result<()>>>,
    watermark: Time,
    retained: Arc<Mutex<Retained>>,
    commit: Duration,
}

impl Drop for Runtime {
    /// After a worker panic the other workers can never finish: give their sinks one commit
    /// interval to commit, then let the threads go rather than wait for them forever.
    fn drop(&mut self) {
        if worker_panic().is_some()
            && let Some(guards) = self.guards.take()
        {
            std::thread::sleep(self.commit + Duration::from_millis(500));
            std::mem::forget(guards);
        }
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("workers", &self.senders.len())
            .field("watermark", &self.watermark)
            .finish()
    }
}

impl Runtime {
    /// Starts the workers; each calls `build(graph)` once to construct its main dataflow, which
    /// returns a probe on the dataflow's outputs.
    pub fn start<B>(config: RuntimeConfig, start: Time, build: B) -> Result<Runtime>
    where
        B: for<'scope> Fn(&mut Graph<'scope>) -> ProbeHandle<Time> + Send + Sync + 'static,
    {
        watch_panics();
        let workers = config.workers.max(1);
        let commit = config.commit;
        let mut senders = Vec::with_capacity(workers);
        let mut receivers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = sync_channel(config.queue_depth.max(1));
            senders.push(tx);
            receivers.push(Some(rx));
        }
        let receivers = Arc::new(Mutex::new(receivers));
        let (inputs, retained) = (config.inputs, Arc::clone(&config.retained));
        let fault = injected_panic();
        let grace = config.grace;
        let guards = timely::execute(timely::Config::process(workers), move |worker| {
            let index = worker.index();
            let rx = receivers.lock().map_err(|_| EngineError::Internal("receiver table poisoned".into()))?
                [index]
                .take()
                .ok_or_else(|| EngineError::Internal(format!("worker {index} started twice")))?;
            let hubs = Rc::new(Hubs::new(index, Arc::clone(&retained)));
            let (mut handle, mut cap, probe) = worker.dataflow::<Time, _, _>(|scope| {
                let ((handle, cap), input) =
                    scope.new_unordered_input::<timely::container::CapacityContainerBuilder<Vec<Input>>>();
                let mut graph = Graph::split(scope, index, input, &inputs);
                let probe = build(&mut graph);
                for (info, stream) in graph.streams() {
                    hubs.share(info, stream);
                }
                (handle, cap, probe)
            });
            cap.downgrade(&start);
            // Added dataflows, and removed ones still draining (until a deadline).
            let mut added: std::collections::BTreeMap<u64, Added> = Default::default();
            let mut draining: Vec<(u64, Added, std::time::Instant)> = Vec::new();
            // The latest time given to the input: a removed dataflow still gets what was sent
            // before its removal (everything before this time), then ends.
            let mut latest: Time = start;
            drive_worker(worker, &rx, |worker, msg| match msg {
                // Between messages: removed dataflows that did not drain in time are dropped.
                None => draining.retain(|(id, d, deadline)| {
                    if d.probe.done() {
                        return false;
                    }
                    if std::time::Instant::now() < *deadline {
                        return true;
                    }
                    if index == 0 {
                        tracing::warn!(
                            "dataflow {id} did not drain within {} s of its removal: dropped",
                            grace.as_secs()
                        );
                    }
                    worker.drop_dataflow(d.index);
                    false
                }),
                Some(Msg::Batch(time, input)) => {
                    let at = cap.delayed(&time.max(*cap.time()));
                    latest = latest.max(*at.time());
                    handle.activate().session(&at).give(input);
                }
                Some(Msg::Advance(time)) => {
                    if index == 0 && fault.is_some_and(|after| time >= start + after) {
                        panic!("injected fault: VIGIL_FAULT_PANIC_AFTER_MS");
                    }
                    if time > *cap.time() {
                        cap.downgrade(&time);
                    }
                }
                Some(Msg::Install { id, build, from }) => {
                    let dataflow = worker.next_dataflow_index();
                    let probe = worker.dataflow::<Time, _, _>(|scope| {
                        let mut graph = Graph::imported(scope, index, Rc::clone(&hubs), id, from);
                        build(&mut graph)
                    });
                    added.insert(id, Added { index: dataflow, probe });
                }
                Some(Msg::Remove(id)) => {
                    hubs.close(id, latest.max(*cap.time()) + 1);
                    if let Some(d) = added.remove(&id) {
                        draining.push((id, d, std::time::Instant::now() + grace));
                    }
                }
                Some(Msg::Kill(id)) => {
                    hubs.close(id, latest.max(*cap.time()) + 1);
                    let d = added.remove(&id).or_else(|| {
                        let at = draining.iter().position(|(i, _, _)| *i == id)?;
                        Some(draining.swap_remove(at).1)
                    });
                    if let Some(d) = d {
                        worker.drop_dataflow(d.index);
                    }
                }
            });
            drop(cap);
            drop(handle);
            while !probe.done() {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            // The added dataflows get the grace to finish, then are dropped with what they hold.
            let deadline = std::time::Instant::now() + grace;
            let rest: Vec<(u64, Added)> =
                added.into_iter().chain(draining.into_iter().map(|(id, d, _)| (id, d))).collect();
            while rest.iter().any(|(_, d)| !d.probe.done()) && std::time::Instant::now() < deadline {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            for (id, d) in rest.into_iter().filter(|(_, d)| !d.probe.done()) {
                if index == 0 {
                    tracing::warn!(
                        "dataflow {id} did not finish within {} s of the shutdown: dropped",
                        grace.as_secs()
                    );
                }
                worker.drop_dataflow(d.index);
            }
            Ok(())
        })
        .map_err(|e| EngineError::Internal(format!("starting timely workers: {e}")))?;
        Ok(Runtime { senders, guards: Some(guards), watermark: start, retained: config.retained, commit })
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.senders.len()
    }

    /// The last watermark sent.
    pub fn watermark(&self) -> Time {
        self.watermark
    }

    /// The store of shared batches.
    pub fn retained(&self) -> &Arc<Mutex<Retained>> {
        &self.retained
    }

    /// Sends `input` to `worker` at logical `time`; a time behind the watermark is moved up
    /// to the watermark (the ingest side routes late events before they get here).
    pub fn send(&self, worker: usize, time: Time, input: Input) -> Result<()> {
        let time = time.max(self.watermark);
        self.senders[worker % self.senders.len()].send(Msg::Batch(time, input)).map_err(|_| stopped(worker))
    }

    /// Adds a dataflow built by `build` on every worker, identified by `id`, whose imports start
    /// at `from` (retained batches from then on, then every later one).
    pub fn install(&self, id: u64, build: Builder, from: Time) -> Result<()> {
        for (i, s) in self.senders.iter().enumerate() {
            s.send(Msg::Install { id, build: Arc::clone(&build), from }).map_err(|_| stopped(i))?;
        }
        Ok(())
    }

    /// Ends the imports of dataflow `id` on every worker, after what was sent before this call;
    /// it finishes what it holds and ends.
    pub fn remove(&self, id: u64) -> Result<()> {
        for (i, s) in self.senders.iter().enumerate() {
            s.send(Msg::Remove(id)).map_err(|_| stopped(i))?;
        }
        Ok(())
    }

    /// Drops dataflow `id` on every worker at once, with what it holds (its sinks commit what
    /// they wrote).
    pub fn kill(&self, id: u64) -> Result<()> {
        for (i, s) in self.senders.iter().enumerate() {
            s.send(Msg::Kill(id)).map_err(|_| stopped(i))?;
        }
        Ok(())
    }

    /// Advances every worker's input to `watermark`; earlier times can no longer be sent.
    pub fn advance(&mut self, watermark: Time) -> Result<()> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        for (i, s) in self.senders.iter().enumerate() {
            s.send(Msg::Advance(watermark)).map_err(|_| stopped(i))?;
        }
        Ok(())
    }

    /// Closes the inputs, lets every window close and every sink flush, and joins the workers.
    pub fn finish(mut self) -> Result<()> {
        self.senders.clear();
        if let Some(cause) = worker_panic() {
            return Err(EngineError::Internal(cause));
        }
        let mut first_err = None;
        // Joined only once every worker has ended: a worker that panics meanwhile would leave
        // the others waiting forever (dropping `self` then lets them go).
        while self.guards.as_ref().is_some_and(|g| g.guards().iter().any(|t| !t.is_finished())) {
            if let Some(cause) = worker_panic() {
                return Err(EngineError::Internal(cause));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let guards = self.guards.take().expect("joined once");
        for r in guards.join() {
            let r = r.map_err(|e| EngineError::Internal(format!("worker panicked: {e}"))).and_then(|r| r);
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// A fault for the crash tests, in debug builds only: worker 0 panics once the watermark is
/// `VIGIL_FAULT_PANIC_AFTER_MS` past the start.
fn injected_panic() -> Option<Time> {
    if cfg!(debug_assertions) {
        std::env::var("VIGIL_FAULT_PANIC_AFTER_MS").ok().and_then(|v| v.parse().ok())
    } else {
        None
    }
}

/// Moves messages from the channel into the dataflow until the channel closes (`handle` gets
/// `None` between rounds of messages), stepping the
/// worker between messages so that no operator waits for a whole queue to drain.
fn drive_worker(
    worker: &mut timely::worker::Worker,
    rx: &Receiver<Msg>,
    mut handle: impl FnMut(&mut timely::worker::Worker, Option<Msg>),
) {
    loop {
        handle(worker, None);
        let mut handled = 0;
        loop {
            match rx.try_recv() {
                Ok(msg) => {
                    handle(worker, Some(msg));
                    handled += 1;
                    if handled == 64 {
                        break;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if handled == 0 {
            worker.step_or_park(Some(Duration::from_millis(1)));
        } else {
            worker.step();
        }
    }
}
