//! The services a shard owns: its table of slots (plan, health, scheduling state), and how a
//! definition is added, changed, paused or removed without losing the service's health.

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shard;
use crate::api::ServiceView;
use crate::model::{round_ms, ServiceId, ServiceSpec, Source, UnixMillis};
use crate::pipeline::judge::Health;
use crate::pipeline::sched::{self, Due};
use crate::pipeline::seam::JobRoute;
use crate::probe::plan::Plan;
use crate::store::LastState;
use crate::ws::protocol::ServiceState;

/// A service as its shard holds it.
pub(super) struct Slot {
    /// The definition and what its probes read every run (see `probe::plan`).
    pub(super) plan: Rc<Plan>,
    pub(super) health: Health,
    /// Bumped whenever the planned entry in the heap must be ignored.
    pub(super) generation: u32,
    /// A probe of this service is running.
    pub(super) running: bool,
    /// Latency of the last probe, for snapshots.
    pub(super) last_latency: Duration,
    /// When the last probe ended (zero before the first).
    pub(super) last_probe: UnixMillis,
}

impl Slot {
    pub(super) fn spec(&self) -> &Arc<ServiceSpec> {
        &self.plan.spec
    }
}

impl Shard {
    /// Adds or replaces a service, keeping its health when it already exists.
    pub(super) fn upsert(&self, spec: Arc<ServiceSpec>) {
        let now = Instant::now();
        let mut services = self.services.borrow_mut();
        let mut sched = self.sched.borrow_mut();
        let existing = services.slot_of(spec.id);
        match existing.and_then(|at| Some((at, services.at_mut(at)?))) {
            Some((at, slot)) => {
                let replan =
                    slot.spec().interval != spec.interval || slot.spec().paused != spec.paused;
                slot.plan = self.prober.plan(spec);
                if replan {
                    slot.generation = slot.generation.wrapping_add(1);
                    // A paused service has no planned entry of its current generation, which
                    // is what lets `start_due` skip reading the definition.
                    if let Some(first) = self.first_run(slot.spec(), now) {
                        sched.push(Due {
                            at: first,
                            slot: at,
                            generation: slot.generation,
                        });
                    }
                }
            }
            None => {
                let generation = self.next_generation.get();
                self.next_generation.set(generation.wrapping_add(1));
                let (id, first) = (spec.id, self.first_run(&spec, now));
                let at = services.insert(
                    id,
                    Slot {
                        plan: self.prober.plan(spec),
                        health: Health::new(UnixMillis::now()),
                        generation,
                        running: false,
                        last_latency: Duration::ZERO,
                        last_probe: UnixMillis(0),
                    },
                );
                if let Some(first) = first {
                    sched.push(Due {
                        at: first,
                        slot: at,
                        generation,
                    });
                }
            }
        }
        drop(sched);
        drop(services);
        self.wake_sched.notify();
    }

    /// When a new or rescheduled service first runs here: None when it is not planned on this
    /// shard (paused, or a cluster node that does not schedule). Standalone spreads first runs
    /// over an interval; a cluster scheduler plans on the service's fixed grid of slots.
    fn first_run(&self, spec: &ServiceSpec, now: Instant) -> Option<Instant> {
        if spec.paused {
            return None;
        }
        match self.routes.jobs {
            JobRoute::Probe => Some(sched::first_run(now, spec.interval)),
            JobRoute::Dispatch(_) => {
                let unix = UnixMillis::now();
                let slot =
                    sched::slot_after(unix, sched::phase(spec.id, spec.interval), spec.interval);
                Some(now + Duration::from_millis((slot.0 - unix.0).max(0) as u64))
            }
            JobRoute::Hold => None,
        }
    }

    /// Replaces the config-defined services with `specs` (API-defined ones are untouched), or
    /// with `all` every service (a cluster node mirroring the registry).
    pub(super) fn replace_services(&self, specs: Vec<Arc<ServiceSpec>>, all: bool) {
        let keep: HashSet<ServiceId> = specs.iter().map(|s| s.id).collect();
        let removed: Vec<ServiceId> = self
            .services
            .borrow()
            .values()
            .filter(|s| (all || s.spec().source == Source::Config) && !keep.contains(&s.plan.id))
            .map(|s| s.plan.id)
            .collect();
        for id in &removed {
            self.services.borrow_mut().remove(*id);
        }
        let (mut added, mut changed) = (0, 0);
        for spec in specs {
            match self.services.borrow().get(spec.id) {
                None => added += 1,
                Some(old) if **old.spec() != *spec => changed += 1,
                Some(_) => {}
            }
            self.upsert(spec);
        }
        if self.sched.borrow().len() > 2 * self.services.borrow().len() + 1024 {
            let services = self.services.borrow();
            self.sched.borrow_mut().compact(|d| {
                services
                    .at(d.slot)
                    .is_some_and(|s| s.generation == d.generation)
            });
        }
        tracing::info!(
            shard = self.id,
            added,
            changed,
            removed = removed.len(),
            "services reconciled"
        );
    }

    /// Gives owned services the status their latest stored transition left them in, so a
    /// restart announces nothing that did not change.
    pub(super) fn restore(&self, states: &[LastState]) {
        let mut services = self.services.borrow_mut();
        let mut restored = 0usize;
        for st in states {
            if let Some(at) = services.slot_of(st.service_id) {
                if let Some(slot) = services.at_mut(at) {
                    slot.health = Health::restored(st.status, st.since);
                    restored += 1;
                }
            }
        }
        tracing::debug!(
            shard = self.id,
            restored,
            "statuses restored from the store"
        );
    }

    /// A cluster node's view of a status another process decided (from the events stream).
    pub(super) fn mirror_status(&self, id: ServiceId, to: crate::model::Status, at: UnixMillis) {
        let mut services = self.services.borrow_mut();
        if let Some(slot) = services.slot_of(id).and_then(|at| services.at_mut(at)) {
            if at >= slot.health.since || slot.health.status == crate::model::Status::Unknown {
                slot.health = Health::restored(to, at);
            }
        }
    }

    /// Current state of the services this shard owns.
    pub(super) fn local_states(&self) -> Vec<ServiceState> {
        self.services
            .borrow()
            .values()
            .map(|s| ServiceState {
                id: s.plan.id,
                name: s.spec().name.clone(),
                tags: s.spec().tags.clone(),
                status: s.health.status,
                since: s.health.since,
                latency_ms: round_ms(s.last_latency),
            })
            .collect()
    }
}

/// A slot as the API shows it.
pub(super) fn slot_view(slot: &Slot) -> ServiceView {
    ServiceView {
        spec: slot.spec().clone(),
        status: slot.health.status,
        since: slot.health.since,
    }
}
