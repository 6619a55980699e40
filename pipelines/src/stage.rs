//! A worker thread fed by a bounded queue that drops its oldest item when full: the shape of
//! every model stage (detection, plate reading), which must never make a camera wait.
//!
//! Written here rather than taken from a channel crate: std's and crossbeam's bounded channels
//! block or refuse a send when full, and a stage wants the opposite: keep the newest, drop (and
//! count) the oldest, so that memory stays bounded by the queue and analytics sees fresh frames.
//! A stage may also say that a new item *supersedes* one already waiting (the plate stage: a
//! newer frame of the same camera), which then takes its place instead of queueing behind it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a stage takes its items.
#[derive(Clone, Copy, Debug)]
pub struct Batching {
    /// Items per batch, at most.
    pub batch: usize,
    /// Longest wait for a batch to fill once its first item is in.
    pub deadline: Duration,
    /// Items waiting, at most.
    pub queue: usize,
}

/// Called with an item dropped because the queue was full.
type OnDrop<T> = Box<dyn Fn(&T) + Send + Sync>;
/// Whether a new item (first) takes the place of one waiting (second).
pub type Supersedes<T> = Box<dyn Fn(&T, &T) -> bool + Send + Sync>;

struct Shared<T> {
    queue: Mutex<VecDeque<T>>,
    ready: Condvar,
    stop: AtomicBool,
    batching: Batching,
    on_drop: OnDrop<T>,
    supersedes: Option<Supersedes<T>>,
}

/// A running stage: [`Stage::offer`] never blocks; one thread takes batches and works on them.
pub struct Stage<T> {
    shared: Arc<Shared<T>>,
    thread: Option<JoinHandle<()>>,
}

impl<T> std::fmt::Debug for Stage<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage").field("batching", &self.shared.batching).finish()
    }
}

/// A handle that offers items to a stage (cheap to clone, usable from any thread).
pub struct Offer<T>(Arc<Shared<T>>);

impl<T> std::fmt::Debug for Offer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offer").field("batching", &self.0.batching).finish()
    }
}

impl<T> Clone for Offer<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> Offer<T> {
    /// Queues `item` (see [`Stage::offer`]).
    pub fn offer(&self, item: T) {
        offer(&self.0, item);
    }
}

impl<T: Send + 'static> Stage<T> {
    /// Starts thread `name`: it calls `work` with each batch until `work` returns `false` or
    /// the stage stops. `on_drop` hears of every item dropped to make room.
    pub fn start(
        name: &str,
        batching: Batching,
        on_drop: impl Fn(&T) + Send + Sync + 'static,
        supersedes: Option<Supersedes<T>>,
        mut work: impl FnMut(Vec<T>) -> bool + Send + 'static,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::with_capacity(batching.queue.max(1))),
            ready: Condvar::new(),
            stop: AtomicBool::new(false),
            batching,
            on_drop: Box::new(on_drop),
            supersedes,
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || {
            while let Some(batch) = next_batch(&s) {
                if !work(batch) {
                    return;
                }
            }
        })?;
        Ok(Self { shared, thread: Some(thread) })
    }
}

impl<T> Stage<T> {
    /// A handle to offer items with.
    pub fn offers(&self) -> Offer<T> {
        Offer(Arc::clone(&self.shared))
    }

    /// Queues `item`: it replaces a waiting item it supersedes; otherwise, when the queue is
    /// full, the oldest waiting item is dropped (and reported) to make room.
    pub fn offer(&self, item: T) {
        offer(&self.shared, item);
    }

    /// Items waiting now.
    pub fn waiting(&self) -> usize {
        self.shared.queue.lock().expect("stage queue").len()
    }

    /// Stops the thread after the batch in hand; what waits is dropped.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.ready.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<T> Drop for Stage<T> {
    fn drop(&mut self) {
        self.shut();
    }
}

fn offer<T>(s: &Shared<T>, item: T) {
    let mut q = s.queue.lock().expect("stage queue");
    if let Some(sup) = &s.supersedes
        && let Some(old) = q.iter_mut().find(|old| sup(&item, old))
    {
        *old = item;
        return;
    }
    if q.len() >= s.batching.queue.max(1)
        && let Some(old) = q.pop_front()
    {
        (s.on_drop)(&old);
    }
    q.push_back(item);
    drop(q);
    s.ready.notify_one();
}

/// Waits for a batch: the first item, then more until `batch` or the deadline. `None` once
/// stopped.
fn next_batch<T>(s: &Shared<T>) -> Option<Vec<T>> {
    let b = s.batching;
    let mut q = s.queue.lock().expect("stage queue");
    while q.is_empty() {
        if s.stop.load(Ordering::Relaxed) {
            return None;
        }
        q = s.ready.wait_timeout(q, Duration::from_millis(100)).expect("stage queue").0;
    }
    let first = Instant::now();
    while q.len() < b.batch && !s.stop.load(Ordering::Relaxed) {
        let left = b.deadline.saturating_sub(first.elapsed());
        if left.is_zero() {
            break;
        }
        q = s.ready.wait_timeout(q, left).expect("stage queue").0;
    }
    let n = q.len().min(b.batch.max(1));
    Some(q.drain(..n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    fn batching(queue: usize) -> Batching {
        Batching { batch: 1, deadline: Duration::ZERO, queue }
    }

    /// While the worker is busy, a full queue keeps the newest items and reports each dropped one.
    #[test]
    fn a_full_queue_drops_its_oldest_and_says_so() {
        let dropped = Arc::new(Mutex::new(Vec::new()));
        let d = Arc::clone(&dropped);
        let (gate_tx, gate) = mpsc::channel::<()>();
        let (tx, done) = mpsc::channel();
        let stage = Stage::start(
            "test",
            batching(3),
            move |i: &u32| d.lock().unwrap().push(*i),
            None,
            move |b: Vec<u32>| {
                gate.recv().unwrap();
                tx.send(b).is_ok()
            },
        )
        .unwrap();
        stage.offer(0);
        // The worker holds 0 at the gate; 1..=5 queue behind it, 1 and 2 dropped for 4 and 5.
        while stage.waiting() > 0 {
            std::thread::yield_now();
        }
        for i in 1..=5 {
            stage.offer(i);
        }
        assert_eq!(stage.waiting(), 3);
        assert_eq!(*dropped.lock().unwrap(), [1, 2]);
        for _ in 0..4 {
            gate_tx.send(()).unwrap();
        }
        let got: Vec<u32> = (0..4).flat_map(|_| done.recv().unwrap()).collect();
        assert_eq!(got, [0, 3, 4, 5]);
        stage.stop();
    }

    /// An item that supersedes a waiting one takes its place: no drop, and the queue keeps its
    /// order and its room for the others.
    #[test]
    fn a_newer_item_of_the_same_source_takes_the_waiting_ones_place() {
        let drops = Arc::new(AtomicUsize::new(0));
        let d = Arc::clone(&drops);
        let (gate_tx, gate) = mpsc::channel::<()>();
        let (tx, done) = mpsc::channel();
        let same_camera: Supersedes<(u32, u32)> = Box::new(|new, old| new.0 == old.0);
        let stage = Stage::start(
            "test",
            batching(2),
            move |_: &(u32, u32)| {
                d.fetch_add(1, Ordering::Relaxed);
            },
            Some(same_camera),
            move |b: Vec<(u32, u32)>| {
                gate.recv().unwrap();
                tx.send(b).is_ok()
            },
        )
        .unwrap();
        stage.offer((9, 0));
        while stage.waiting() > 0 {
            std::thread::yield_now();
        }
        for frame in 1..=4 {
            stage.offer((1, frame));
            stage.offer((2, frame));
        }
        assert_eq!((stage.waiting(), drops.load(Ordering::Relaxed)), (2, 0));
        for _ in 0..3 {
            gate_tx.send(()).unwrap();
        }
        let got: Vec<(u32, u32)> = (0..3).flat_map(|_| done.recv().unwrap()).collect();
        assert_eq!(got, [(9, 0), (1, 4), (2, 4)]);
    }
}
