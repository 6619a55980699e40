//! The map operator: a rule's filters and projections, DataFusion physical expressions evaluated
//! on each Arrow batch where it is (no exchange, no state).

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch};

use super::{Deltas, RenderContext, conform_columns, eval, map_deltas};
use crate::delta::Delta;
use crate::plan::Step;

/// Renders map steps over `input`.
pub fn render_map<'s>(input: Deltas<'s>, steps: Vec<Step>, cx: &RenderContext) -> Deltas<'s> {
    map_deltas(input, &cx.name("Map"), cx, move |d| apply_steps(&steps, d))
}

/// Applies map steps; `None` when no row is left.
pub fn apply_steps(steps: &[Step], mut d: Delta) -> Result<Option<Delta>, String> {
    for step in steps {
        if d.is_empty() {
            return Ok(None);
        }
        match step {
            Step::Filter(pred) => {
                let mask = eval(pred, &d.rows)?;
                let mask = mask
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or("a predicate that is not boolean")?
                    .clone();
                d = d.filter(&mask).map_err(|e| e.to_string())?;
            }
            Step::Project(exprs, schema) => {
                let cols = exprs.iter().map(|e| eval(e, &d.rows)).collect::<Result<Vec<_>, _>>()?;
                let cols = conform_columns(cols, schema)?;
                d.rows = RecordBatch::try_new(Arc::clone(schema), cols).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok((!d.is_empty()).then_some(d))
}
