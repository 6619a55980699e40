//! The main dataflow each worker builds: the derivations, Parquet for every stream of the
//! catalog, and alerts to the bus.
//!
//! The graph starts with the inputs split by stream; each [`Derivation`] adds what it derives;
//! then every event stream the graph holds is written to `<out>/<stream>/` (the catalog decides,
//! no list is kept here), and the `alerts` stream is published. The runtime shares every stream
//! with the rules' dataflows after this builder returns.

use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use vigil_engine::catalog::Catalog;
use vigil_engine::error::ErrorSink;
use vigil_engine::graph::Graph;
use vigil_engine::ids::Epoch;
use vigil_engine::parquet_sink::{ParquetSinkConfig, WriteParquet};
use vigil_engine::runtime::Time;
use vigil_engine::time::Millis;
use vigil_operators::alerts::{AlertBus, Alerts, alerts_from_batch};

use crate::derive::{Derivation, DeriveContext};

/// Columns with few distinct values, which get dictionary encoding in Parquet.
pub const DICTIONARY: [&str; 14] = [
    "camera_id",
    "class",
    "state",
    "zone",
    "zone_id",
    "level",
    "kind",
    "rule",
    "severity",
    "camera",
    "time_source",
    "stream",
    "line",
    "direction",
];

/// What the main dataflow is made of.
pub struct MainGraph {
    /// The derivations, in order (a derivation may read what an earlier one added).
    pub derivations: Vec<Arc<dyn Derivation>>,
    /// The streams the engine has.
    pub catalog: Catalog,
    /// The output root; `None` writes no Parquet.
    pub out: Option<std::path::PathBuf>,
    /// Parquet partition length, ms.
    pub partition_ms: Millis,
    /// The run's epoch.
    pub epoch: Epoch,
    /// How often sinks commit their open files.
    pub commit: std::time::Duration,
    /// The most bytes of rows a sink holds while its writes fail.
    pub hold_bytes: usize,
    /// Where alerts are published.
    pub bus: AlertBus,
    /// Where errors go.
    pub errors: ErrorSink,
    /// The epoch derived ids are made with: the run's own, or in a resumed run the first run's,
    /// so that a replayed row has the id it had (the sinks recognise it by its keys).
    pub ids_epoch: Epoch,
    /// A resumed run replays its input from before this time: alerts before it were published
    /// by the run it resumes, and are not published again.
    pub replayed_until: Time,
}

/// The builder of the main dataflow; prepares the output directories first.
pub fn main(
    g: MainGraph,
) -> anyhow::Result<impl for<'s> Fn(&mut Graph<'s>) -> ProbeHandle<Time> + Send + Sync + 'static> {
    if let Some(out) = &g.out {
        for info in g.catalog.streams() {
            sink_config(out, info.name, &g).prepare()?;
        }
    }
    Ok(move |graph: &mut Graph<'_>| {
        let probe = ProbeHandle::new();
        let cx = DeriveContext { epoch: g.ids_epoch, errors: g.errors.clone() };
        for d in &g.derivations {
            d.build(graph, &cx);
        }
        if let Some(alerts) = graph.get::<Alerts>() {
            let (bus, errors, replayed) = (g.bus.clone(), g.errors.clone(), g.replayed_until);
            alerts.into_inner().sink(Pipeline, "PublishAlerts", move |(input, _frontier)| {
                input.for_each(|cap, data| {
                    if cap.least().is_some_and(|t| *t < replayed) {
                        return;
                    }
                    for b in data.iter() {
                        match alerts_from_batch(&b.rows) {
                            Ok(alerts) => alerts.into_iter().for_each(|a| {
                                bus.publish(a);
                            }),
                            Err(e) => errors.report("PublishAlerts", e),
                        }
                    }
                });
            });
        }
        let worker = graph.worker();
        for (info, stream) in graph.streams() {
            if info.is_table() {
                continue;
            }
            match &g.out {
                Some(out) => {
                    let errors = g.errors.clone();
                    let name = format!("ParquetSink({})", info.name);
                    stream
                        .write_parquet(
                            Arc::clone(&info.schema),
                            sink_config(out, info.name, &g).with_keys(info.keys),
                            worker,
                            move |e| errors.fatal(&name, e),
                        )
                        .probe_with(&probe);
                }
                None => {
                    stream.probe_with(&probe);
                }
            }
        }
        probe
    })
}

fn sink_config(out: &std::path::Path, name: &str, g: &MainGraph) -> ParquetSinkConfig {
    ParquetSinkConfig::new(out.join(name), name, g.partition_ms, g.epoch)
        .with_dictionary(&DICTIONARY)
        .with_commit(g.commit)
        .with_hold(g.hold_bytes, vigil_engine::parquet_sink::DEFAULT_RETRY)
}
