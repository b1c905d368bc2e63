//! Turns inputs into applied decisions: read the records once per batch,
//! decide in order with the pure domain, write every transition in one
//! pipelined round trip, and decide again for the devices whose record
//! changed under us (another worker, a sweeper) until all are settled.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::domain::{decide, Decision, DeviceRef, Ignored, Input, Policy, Rejection, Transition};
use crate::payload;
use crate::store::{AnyStore, Applied, ApplyOp, Loaded, StoreError};

/// Rounds of re-deciding after conflicts before the batch is retried whole.
/// Conflicts need a concurrent writer on the same device, so more than a few
/// in a row mean something is wrong.
const MAX_ROUNDS: usize = 8;

/// Source of the current time, injected so tests control it.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// What became of one input.
#[derive(Debug, Clone)]
pub enum Resolution {
    Applied(Box<AppliedTransition>),
    Ignored(Ignored),
    Rejected(Rejection),
}

#[derive(Debug, Clone)]
pub struct AppliedTransition {
    pub transition: Transition,
    /// The StatusChanged event, as written to the outbox.
    pub event: String,
    /// For an expiry: the deadline that was reached.
    pub deadline: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("records kept changing under {MAX_ROUNDS} rounds of decisions")]
    Contended,
}

#[derive(Clone)]
pub struct Engine {
    pub store: AnyStore,
    pub policy: Policy,
    pub links_base_url: Arc<str>,
    pub clock: Arc<dyn Clock>,
}

impl Engine {
    /// Resolves `inputs` (in order; a device's inputs apply in their order).
    /// On error nothing is settled and the whole batch may be retried: every
    /// write is guarded by the record version and the input's dedup marker.
    pub async fn process(&self, inputs: &[Input]) -> Result<Vec<Resolution>, EngineError> {
        let mut resolved: Vec<Option<Resolution>> = vec![None; inputs.len()];
        let mut todo: Vec<usize> = (0..inputs.len()).collect();
        for _ in 0..MAX_ROUNDS {
            if todo.is_empty() {
                break;
            }
            todo = self.round(inputs, &todo, &mut resolved).await?;
        }
        if !todo.is_empty() {
            return Err(EngineError::Contended);
        }
        Ok(resolved
            .into_iter()
            .map(|r| r.unwrap_or(Resolution::Ignored(Ignored::NotDue)))
            .collect())
    }

    /// One read-decide-write round over `todo`; returns the inputs to decide again.
    async fn round(
        &self,
        inputs: &[Input],
        todo: &[usize],
        resolved: &mut [Option<Resolution>],
    ) -> Result<Vec<usize>, EngineError> {
        let now = self.clock.now();
        let mut devices: Vec<DeviceRef> = todo.iter().map(|&i| inputs[i].device()).collect();
        devices.sort();
        devices.dedup();
        let ids: Vec<_> = todo
            .iter()
            .filter_map(|&i| inputs[i].id().map(|id| (inputs[i].device(), id)))
            .collect();
        let (mut state, seen) = self.store.load(&devices, &ids).await?;

        let mut applied_here = HashSet::new();
        let mut ops = Vec::new();
        let mut op_inputs = Vec::new();
        let mut provisional = Vec::with_capacity(todo.len());
        for &i in todo {
            let input = &inputs[i];
            let device = input.device();
            let loaded = state.entry(device).or_default();
            let already = input.id().is_some_and(|id| {
                seen.contains(&(device, id)) || applied_here.contains(&(device, id))
            });
            let resolution = match decide(loaded.record.as_ref(), input, already, now, &self.policy)
            {
                Decision::Transition(transition) => {
                    let event =
                        payload::status_changed(&transition, &self.links_base_url).to_string();
                    let deadline = matches!(input, Input::Expire(_))
                        .then(|| loaded.record.as_ref().and_then(|r| r.expires_at))
                        .flatten();
                    ops.push(ApplyOp {
                        expected_version: loaded.version.clone(),
                        transition: transition.clone(),
                        input_id: input.id(),
                        event: event.clone(),
                    });
                    op_inputs.push(i);
                    if let Some(id) = input.id() {
                        applied_here.insert((device, id));
                    }
                    *loaded = Loaded {
                        version: transition.record.event_id().to_string(),
                        record: Some(transition.record.clone()),
                    };
                    Resolution::Applied(Box::new(AppliedTransition {
                        transition,
                        event,
                        deadline,
                    }))
                }
                Decision::Ignore(ignored) => Resolution::Ignored(ignored),
                Decision::Reject(rejection) => Resolution::Rejected(rejection),
            };
            provisional.push((i, resolution));
        }

        let results = self.store.apply(&ops, now).await?;
        // For each device whose write did not apply: the input where it failed.
        let mut failed_at: HashMap<DeviceRef, usize> = HashMap::new();
        let mut duplicates = HashSet::new();
        for (&i, result) in op_inputs.iter().zip(results) {
            if result == Applied::Applied {
                continue;
            }
            failed_at.entry(inputs[i].device()).or_insert(i);
            if result == Applied::Duplicate {
                duplicates.insert(i);
            }
        }
        let mut again = Vec::new();
        for (i, resolution) in provisional {
            match failed_at.get(&inputs[i].device()) {
                Some(&first) if i == first && duplicates.contains(&i) => {
                    resolved[i] = Some(Resolution::Ignored(Ignored::Duplicate));
                }
                // Decided on a state that did not happen: decide again.
                Some(&first) if i >= first => again.push(i),
                _ => resolved[i] = Some(resolution),
            }
        }
        Ok(again)
    }
}
