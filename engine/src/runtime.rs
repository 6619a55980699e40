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
//! then everything later. [`Runtime::remove`] ends a dataflow's imports; it drains and ends.
//!
//! Shutting down ([`Runtime::finish`]) drops the input's capability, so the frontier becomes
//! empty, every window closes and every sink flushes before the worker threads end.

use std::rc::Rc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
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
}

impl RuntimeConfig {
    /// `workers` workers fed `inputs`, keeping nothing in memory.
    pub fn new(workers: usize, inputs: Vec<&'static StreamInfo>) -> Self {
        let workers = workers.max(1);
        Self { workers, queue_depth: 1024, inputs, retained: Retained::shared(workers, 0, usize::MAX) }
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
}

/// A running engine. Feed it with [`send`](Self::send) and [`advance`](Self::advance).
pub struct Runtime {
    senders: Vec<SyncSender<Msg>>,
    guards: timely::communication::initialize::WorkerGuards<Result<()>>,
    watermark: Time,
    retained: Arc<Mutex<Retained>>,
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
        let workers = config.workers.max(1);
        let mut senders = Vec::with_capacity(workers);
        let mut receivers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = sync_channel(config.queue_depth.max(1));
            senders.push(tx);
            receivers.push(Some(rx));
        }
        let receivers = Arc::new(Mutex::new(receivers));
        let (inputs, retained) = (config.inputs, Arc::clone(&config.retained));
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
            // Added dataflows, and removed ones still draining.
            let mut added: std::collections::BTreeMap<u64, ProbeHandle<Time>> = Default::default();
            let mut draining: Vec<ProbeHandle<Time>> = Vec::new();
            // The latest time given to the input: a removed dataflow still gets what was sent
            // before its removal (everything before this time), then ends.
            let mut latest: Time = start;
            drive_worker(worker, &rx, |worker, msg| match msg {
                Msg::Batch(time, input) => {
                    let at = cap.delayed(&time.max(*cap.time()));
                    latest = latest.max(*at.time());
                    handle.activate().session(&at).give(input);
                }
                Msg::Advance(time) => {
                    if time > *cap.time() {
                        cap.downgrade(&time);
                    }
                }
                Msg::Install { id, build, from } => {
                    let probe = worker.dataflow::<Time, _, _>(|scope| {
                        let mut graph = Graph::imported(scope, index, Rc::clone(&hubs), id, from);
                        build(&mut graph)
                    });
                    added.insert(id, probe);
                }
                Msg::Remove(id) => {
                    hubs.close(id, latest.max(*cap.time()) + 1);
                    draining.retain(|p| !p.done());
                    draining.extend(added.remove(&id));
                }
            });
            drop(cap);
            drop(handle);
            let probes: Vec<ProbeHandle<Time>> = added.into_values().chain(draining).collect();
            while !probe.done() || probes.iter().any(|p| !p.done()) {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            Ok(())
        })
        .map_err(|e| EngineError::Internal(format!("starting timely workers: {e}")))?;
        Ok(Runtime { senders, guards, watermark: start, retained: config.retained })
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
        self.senders[worker % self.senders.len()]
            .send(Msg::Batch(time, input))
            .map_err(|_| EngineError::Internal(format!("worker {worker} stopped early")))
    }

    /// Adds a dataflow built by `build` on every worker, identified by `id`, whose imports start
    /// at `from` (retained batches from then on, then every later one).
    pub fn install(&self, id: u64, build: Builder, from: Time) -> Result<()> {
        for (i, s) in self.senders.iter().enumerate() {
            s.send(Msg::Install { id, build: Arc::clone(&build), from })
                .map_err(|_| EngineError::Internal(format!("worker {i} stopped early")))?;
        }
        Ok(())
    }

    /// Ends the imports of dataflow `id` on every worker, after what was sent before this call;
    /// it finishes what it holds and ends.
    pub fn remove(&self, id: u64) -> Result<()> {
        for (i, s) in self.senders.iter().enumerate() {
            s.send(Msg::Remove(id))
                .map_err(|_| EngineError::Internal(format!("worker {i} stopped early")))?;
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
            s.send(Msg::Advance(watermark))
                .map_err(|_| EngineError::Internal(format!("worker {i} stopped early")))?;
        }
        Ok(())
    }

    /// Closes the inputs, lets every window close and every sink flush, and joins the workers.
    pub fn finish(self) -> Result<()> {
        drop(self.senders);
        let mut first_err = None;
        for r in self.guards.join() {
            let r = r.map_err(|e| EngineError::Internal(format!("worker panicked: {e}"))).and_then(|r| r);
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Moves messages from the channel into the dataflow until the channel closes, stepping the
/// worker between messages so that no operator waits for a whole queue to drain.
fn drive_worker(
    worker: &mut timely::worker::Worker,
    rx: &Receiver<Msg>,
    mut handle: impl FnMut(&mut timely::worker::Worker, Msg),
) {
    loop {
        let mut handled = 0;
        loop {
            match rx.try_recv() {
                Ok(msg) => {
                    handle(worker, msg);
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
