//! A dataflow under construction on one worker: its streams, typed by definition, by name.
//!
//! The main dataflow's [`Graph`] starts with the input split once into one stream per input
//! definition ([`Graph::split`]); operators then take typed streams out of it and add the ones
//! they derive. A dataflow added at runtime (a rule) gets a graph that imports from the main
//! one's shared streams on demand ([`Graph::imported`]): asking it for `tracks` subscribes to
//! the tracks the main dataflow computed.
//!
//! ```
//! use vigil_engine::graph::Graph;
//! use vigil_engine::stream::{Events, StreamDef, Timestamp};
//!
//! vigil_engine::stream! {
//!     /// Ticks.
//!     pub struct Ticks {
//!         name: "ticks", class: Record, keys: [], personal: [],
//!         row: Tick, builder: TickRows, reader: TickCols,
//!         columns: { event_time: Timestamp }
//!     }
//! }
//!
//! timely::example(|scope| {
//!     let input = timely::dataflow::operators::generic::operator::empty(scope);
//!     let mut graph = Graph::split(scope, 0, input, &[Ticks::info()]);
//!     let ticks: Events<Ticks> = graph.get::<Ticks>().expect("an input");
//!     assert_eq!(ticks.info().name, "ticks");
//!     assert_eq!(graph.names(), vec!["ticks"]);
//! });
//! ```

use std::collections::BTreeMap;
use std::rc::Rc;

use timely::dataflow::Scope;
use timely::dataflow::operators::Concat;
use timely::dataflow::operators::core::Partition;

use crate::runtime::{Input, InputStream, Time};
use crate::share::{Hubs, empty};
use crate::stream::{Batch, Batches, Events, StreamDef, StreamInfo};

/// Where an imported graph's streams come from.
struct Imports {
    hubs: Rc<Hubs>,
    owner: u64,
    from: Time,
}

/// A dataflow's streams by name; see the module documentation.
pub struct Graph<'s> {
    scope: Scope<'s, Time>,
    worker: usize,
    streams: BTreeMap<&'static str, (&'static StreamInfo, Batches<'s>)>,
    imports: Option<Imports>,
}

impl std::fmt::Debug for Graph<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph").field("worker", &self.worker).field("streams", &self.names()).finish()
    }
}

impl<'s> Graph<'s> {
    /// The graph of the main dataflow: `input` split once into a stream per definition of
    /// `inputs` (batches of other streams are a bug of the feeder and are dropped).
    pub fn split(
        scope: Scope<'s, Time>,
        worker: usize,
        input: InputStream<'s>,
        inputs: &[&'static StreamInfo],
    ) -> Self {
        let index: BTreeMap<&'static str, u64> =
            inputs.iter().enumerate().map(|(i, info)| (info.name, i as u64)).collect();
        let parts = inputs.len() as u64;
        let streams = input.partition::<timely::container::CapacityContainerBuilder<Vec<Batch>>, _, _>(
            parts + 1,
            move |i: Input| (index.get(i.stream.name).copied().unwrap_or(parts), i.batch),
        );
        let streams = inputs.iter().zip(streams).map(|(info, s)| (info.name, (*info, s))).collect();
        Self { scope, worker, streams, imports: None }
    }

    /// The graph of a dataflow added at runtime: streams are imported from the main dataflow's
    /// hubs when first asked for, starting at `from`.
    pub fn imported(scope: Scope<'s, Time>, worker: usize, hubs: Rc<Hubs>, owner: u64, from: Time) -> Self {
        Self { scope, worker, streams: BTreeMap::new(), imports: Some(Imports { hubs, owner, from }) }
    }

    /// The dataflow's scope.
    pub fn scope(&self) -> Scope<'s, Time> {
        self.scope
    }

    /// This worker's index.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The number of workers.
    pub fn peers(&self) -> usize {
        self.scope.peers()
    }

    /// Stream `S`, if the graph has it (or can import it).
    pub fn get<S: StreamDef>(&mut self) -> Option<Events<'s, S>> {
        self.lookup(S::info()).map(Events::new)
    }

    /// Stream `info` (imported on first use in an imported graph).
    pub fn lookup(&mut self, info: &'static StreamInfo) -> Option<Batches<'s>> {
        if let Some((_, s)) = self.streams.get(info.name) {
            return Some(s.clone());
        }
        let imports = self.imports.as_ref()?;
        let s = imports.hubs.import(self.scope, info, imports.owner, imports.from);
        self.streams.insert(info.name, (info, s.clone()));
        Some(s)
    }

    /// Adds stream `S` (concatenated with what the graph has of it already).
    pub fn add<S: StreamDef>(&mut self, events: Events<'s, S>) {
        self.add_untyped(S::info(), events.into_inner());
    }

    /// Adds a stream by definition (concatenated with what the graph has of it already).
    pub fn add_untyped(&mut self, info: &'static StreamInfo, stream: Batches<'s>) {
        match self.streams.remove(info.name) {
            Some((_, old)) => self.streams.insert(info.name, (info, old.concat(stream))),
            None => self.streams.insert(info.name, (info, stream)),
        };
    }

    /// An empty, complete stream (for definitions a graph does not have).
    pub fn empty(&self) -> Batches<'s> {
        empty(self.scope)
    }

    /// Every stream, by name.
    pub fn streams(&self) -> impl Iterator<Item = (&'static StreamInfo, Batches<'s>)> + '_ {
        self.streams.values().map(|(i, s)| (*i, s.clone()))
    }

    /// The names of the streams, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.streams.keys().copied().collect()
    }
}
