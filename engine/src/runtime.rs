//! The timely runtime: worker threads whose single input carries Arrow batches at event time.
//!
//! [`Runtime::start`] spawns `workers` timely workers. Each builds the same dataflow (through
//! the caller's `build` function) over one input stream of [`EventBatch`]es, fed from a bounded
//! channel. The ingest side ([`crate::ingest::Ingest`]) decides which worker gets which batch
//! and, identically for every worker, when the watermark advances: a worker delays its input
//! capability to a batch's time to send it, and downgrades the capability to the watermark.
//! Because every worker holds the same watermark, the frontier (and therefore every window
//! decision) is the same whatever the number of workers.
//!
//! Dataflows can also be added while the runtime runs ([`Runtime::install`]), each with its
//! own input: every worker builds it at the same point of its message sequence, replays the
//! batches it is given (backfill, at their own times), then receives every later batch, so the
//! new dataflow sees a gap-free input and the others are not touched. [`Runtime::remove`]
//! closes such a dataflow's input; it drains and ends.
//!
//! Shutting down ([`Runtime::finish`]) drops the inputs' capabilities, so the frontier becomes
//! empty, every window closes and every sink flushes before the worker threads end.

use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;
use timely::dataflow::operators::core::UnorderedInput;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::{Scope, Stream};

use crate::error::{EngineError, Result};
use crate::schema::StreamKind;

/// Logical time of the dataflow: milliseconds of event time since the Unix epoch.
pub type Time = u64;

/// What a batch on the dataflow's input is.
#[derive(Clone, Debug, PartialEq)]
pub enum BatchKind {
    /// Events of a stream, on time.
    Events(StreamKind),
    /// Rows added to (`diff > 0`) or removed from (`diff < 0`) a reference table.
    Reference {
        /// The table's name (`watchlist`, `zones`, ...).
        table: Arc<str>,
        /// +1 to add the rows, -1 to remove them.
        diff: i64,
    },
}

/// An Arrow batch travelling through the dataflow, tagged with what it holds.
#[derive(Clone, Debug)]
pub struct EventBatch {
    /// What the rows are.
    pub kind: BatchKind,
    /// The rows.
    pub data: RecordBatch,
}

impl EventBatch {
    /// The batch's stream, if it holds events.
    pub fn stream(&self) -> Option<StreamKind> {
        match self.kind {
            BatchKind::Events(s) => Some(s),
            BatchKind::Reference { .. } => None,
        }
    }
}

/// The dataflow input stream type handed to the `build` function.
pub type BatchStream<'scope> = Stream<'scope, Time, Vec<EventBatch>>;

/// Runtime options.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// Number of timely worker threads (at least 1).
    pub workers: usize,
    /// Messages that may wait in each worker's queue before the ingest side blocks.
    pub queue_depth: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self { workers: 1, queue_depth: 1024 }
    }
}

impl RuntimeConfig {
    /// A configuration with `workers` workers and the default queue depth.
    pub fn with_workers(workers: usize) -> Self {
        Self { workers: workers.max(1), ..Self::default() }
    }
}

/// Builds a dataflow over an input stream of batches on one worker; returns a probe on its
/// outputs. Called once per worker with `(scope, input, worker_index)`.
pub type Builder = Arc<
    dyn for<'scope> Fn(Scope<'scope, Time>, BatchStream<'scope>, usize) -> ProbeHandle<Time> + Send + Sync,
>;

enum Msg {
    Batch(Time, EventBatch),
    Advance(Time),
    Install { id: u64, build: Builder, backfill: Vec<(Time, EventBatch)> },
    Remove(u64),
}

/// What an added dataflow's input is given.
enum Feed {
    Batch(Time, EventBatch),
    Advance(Time),
}

/// A dataflow added at runtime, on one worker: its input (owned by `feed`) and its probe.
struct Added {
    feed: Box<dyn FnMut(Feed)>,
    probe: ProbeHandle<Time>,
}

/// A running dataflow. Feed it with [`send`](Self::send) and [`advance`](Self::advance).
pub struct Runtime {
    senders: Vec<SyncSender<Msg>>,
    guards: timely::communication::initialize::WorkerGuards<Result<()>>,
    watermark: Time,
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
    /// Starts the workers; each calls `build(scope, input, worker_index)` once to construct its
    /// dataflow, which returns a probe on the dataflow's outputs.
    pub fn start<B>(config: RuntimeConfig, start: Time, build: B) -> Result<Runtime>
    where
        B: for<'scope> Fn(Scope<'scope, Time>, BatchStream<'scope>, usize) -> ProbeHandle<Time>
            + Send
            + Sync
            + 'static,
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
        let guards = timely::execute(timely::Config::process(workers), move |worker| {
            let index = worker.index();
            let rx = receivers.lock().map_err(|_| EngineError::Internal("receiver table poisoned".into()))?
                [index]
                .take()
                .ok_or_else(|| EngineError::Internal(format!("worker {index} started twice")))?;
            let (mut handle, mut cap, probe) = worker.dataflow::<Time, _, _>(|scope| {
                let ((handle, cap), stream) = scope
                    .new_unordered_input::<timely::container::CapacityContainerBuilder<Vec<EventBatch>>>();
                let probe = build(scope, stream, index);
                (handle, cap, probe)
            });
            cap.downgrade(&start);
            let mut added: std::collections::BTreeMap<u64, Added> = std::collections::BTreeMap::new();
            drive_worker(worker, &rx, |worker, msg| match msg {
                Msg::Batch(time, batch) => {
                    let at = cap.delayed(&time.max(*cap.time()));
                    for a in added.values_mut() {
                        (a.feed)(Feed::Batch(time, batch.clone()));
                    }
                    handle.activate().session(&at).give(batch);
                }
                Msg::Advance(time) => {
                    if time > *cap.time() {
                        cap.downgrade(&time);
                    }
                    for a in added.values_mut() {
                        (a.feed)(Feed::Advance(time));
                    }
                }
                Msg::Install { id, build, backfill } => {
                    let (mut handle, cap0, probe) = worker.dataflow::<Time, _, _>(|scope| {
                        let ((handle, cap), stream) = scope
                                    .new_unordered_input::<timely::container::CapacityContainerBuilder<
                                    Vec<EventBatch>,
                                >>();
                        let probe = build(scope, stream, index);
                        (handle, cap, probe)
                    });
                    // The input starts at time 0: backfill goes in at its own times, then the
                    // input joins the others at the watermark.
                    let mut new_cap = cap0;
                    for (t, batch) in backfill {
                        let at = new_cap.delayed(&t.max(*new_cap.time()));
                        handle.activate().session(&at).give(batch);
                    }
                    new_cap.downgrade(cap.time());
                    let feed = move |f: Feed| match f {
                        Feed::Batch(time, batch) => {
                            let at = new_cap.delayed(&time.max(*new_cap.time()));
                            handle.activate().session(&at).give(batch);
                        }
                        Feed::Advance(time) => {
                            if time > *new_cap.time() {
                                new_cap.downgrade(&time);
                            }
                        }
                    };
                    added.insert(id, Added { feed: Box::new(feed), probe });
                }
                Msg::Remove(id) => {
                    // Dropping the input and its capability lets the dataflow drain and end.
                    added.remove(&id);
                }
            });
            drop(cap);
            drop(handle);
            let probes: Vec<ProbeHandle<Time>> = added.into_values().map(|a| a.probe).collect();
            while !probe.done() || probes.iter().any(|p| !p.done()) {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            Ok(())
        })
        .map_err(|e| EngineError::Internal(format!("starting timely workers: {e}")))?;
        Ok(Runtime { senders, guards, watermark: start })
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.senders.len()
    }

    /// The last watermark sent.
    pub fn watermark(&self) -> Time {
        self.watermark
    }

    /// Sends `batch` to `worker` at logical `time`; a time behind the watermark is moved up
    /// to the watermark (the ingest side routes late events before they get here).
    pub fn send(&self, worker: usize, time: Time, batch: EventBatch) -> Result<()> {
        let time = time.max(self.watermark);
        self.senders[worker % self.senders.len()]
            .send(Msg::Batch(time, batch))
            .map_err(|_| EngineError::Internal(format!("worker {worker} stopped early")))
    }

    /// Adds a dataflow built by `build` on every worker, identified by `id`. Worker `w` first
    /// receives `backfill[w]` (batches at their times, which may be behind the watermark),
    /// then every batch sent after this call.
    pub fn install(&self, id: u64, build: Builder, mut backfill: Vec<Vec<(Time, EventBatch)>>) -> Result<()> {
        backfill.resize_with(self.senders.len(), Vec::new);
        for (i, (s, b)) in self.senders.iter().zip(backfill).enumerate() {
            s.send(Msg::Install { id, build: Arc::clone(&build), backfill: b })
                .map_err(|_| EngineError::Internal(format!("worker {i} stopped early")))?;
        }
        Ok(())
    }

    /// Closes the input of dataflow `id` on every worker; it finishes what it holds and ends.
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
