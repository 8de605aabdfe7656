//! Subscribing: the snapshot, the `since` replay from the store merged with this shard's
//! resume ring, gap-free and without duplicates, then live delivery.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::client::{Client, Out};
use super::hub::Hub;
use super::protocol::{self, Filter, ServiceState};
use crate::model::Transition;
use crate::pipeline::event::{Event, EventTags};

/// A subscription being prepared.
pub struct Subscription {
    /// Generation from `begin_subscribe`.
    pub gen: u32,
    /// Resume-ring position from `begin_subscribe`.
    pub mark: u64,
    /// The requested filter.
    pub filter: Filter,
    /// Replay stored transitions after this seq.
    pub since: Option<u64>,
}

impl Hub {
    /// Begins a subscription: live events for `c` wait in the resume ring until `finish`.
    /// Returns the generation and ring position the preparation must present.
    pub fn begin_subscribe(&self, c: &Client) -> (u32, u64) {
        let gen = c.sub_gen.get().wrapping_add(1);
        c.sub_gen.set(gen);
        c.pending.set(true);
        *c.skip.borrow_mut() = None;
        (gen, self.pushed.get())
    }

    /// Stops a client's subscription.
    pub fn unsubscribe(&self, c: &Client) {
        c.sub_gen.set(c.sub_gen.get().wrapping_add(1));
        c.pending.set(false);
        *c.skip.borrow_mut() = None;
        self.set_filter(c, None);
    }

    /// The snapshot of the matching services, then a warning for each name in the filter that
    /// matches none of them (a typo must not look like a quiet service).
    fn send_snapshot(&self, c: &Client, states: &[ServiceState], filter: &Filter) {
        self.send_text(c, &protocol::snapshot(states, filter));
        for warning in protocol::unknown_services(states, filter) {
            self.send_text(c, &warning);
        }
    }

    /// Completes a subscription: snapshot, then replayed and buffered events in seq order,
    /// then live delivery. `rows` are stored transitions with seq > `since`.
    pub fn finish_subscribe(
        &self,
        c: &Client,
        sub: Subscription,
        states: &[ServiceState],
        rows: Vec<Transition>,
    ) {
        let Subscription {
            gen,
            mark,
            filter,
            since,
        } = sub;
        if c.sub_gen.get() != gen || c.done.get() {
            return;
        }
        self.send_snapshot(c, states, &filter);
        let (mut by_seq, ring_min) = self.buffered(c, mark, since);
        let skip = self.merge_replay(&rows, &mut by_seq, ring_min);
        let mut events: Vec<Arc<Event>> = by_seq.into_values().collect();
        events.sort_by_key(|e| e.seq);
        self.send_matching(c, &events, &filter, states);
        *c.skip.borrow_mut() = (!skip.is_empty()).then(|| Box::new(skip));
        self.set_filter(c, Some(filter));
        c.pending.set(false);
    }

    /// The events this shard's resume ring holds for a subscription (after `since`, or since
    /// the subscribe began), by seq, and the smallest seq in the ring. Tells the client when
    /// more events arrived while it was prepared than the ring holds.
    fn buffered(
        &self,
        c: &Client,
        mark: u64,
        since: Option<u64>,
    ) -> (HashMap<u64, Arc<Event>>, u64) {
        let recent = self.recent.borrow();
        let oldest_pos = self.pushed.get() - recent.len() as u64;
        if oldest_pos > mark && since.is_none() {
            self.stats.borrow_mut().resume_overflows += 1;
            self.send_text(
                c,
                &protocol::error(
                    "events_lost",
                    "events were lost while the subscription was prepared; resubscribe",
                ),
            );
        }
        let mut by_seq = HashMap::new();
        let mut ring_min = u64::MAX;
        for (i, e) in recent.iter().enumerate() {
            ring_min = ring_min.min(e.seq);
            let wanted = match since {
                Some(s) => e.seq > s,
                None => oldest_pos + i as u64 >= mark,
            };
            if wanted {
                by_seq.insert(e.seq, e.clone());
            }
        }
        (by_seq, ring_min)
    }

    /// Adds the stored transitions the ring does not hold; returns the replayed seqs that may
    /// still arrive live (newer than the ring's oldest), which the client then skips.
    fn merge_replay(
        &self,
        rows: &[Transition],
        by_seq: &mut HashMap<u64, Arc<Event>>,
        ring_min: u64,
    ) -> Vec<u64> {
        let mut skip = Vec::new();
        let mut replayed = 0;
        for t in rows {
            if by_seq.contains_key(&t.seq) {
                continue;
            }
            if t.seq > ring_min && skip.len() < 1024 {
                skip.push(t.seq);
            }
            replayed += 1;
            let e = Event::transition_with(t, EventTags::Unknown, Instant::now());
            by_seq.insert(t.seq, Arc::new(e));
        }
        self.stats.borrow_mut().replayed += replayed;
        skip
    }

    /// Queues the events that match `filter`; replayed ones carry no definition, so their
    /// tags come from the snapshot.
    fn send_matching(
        &self,
        c: &Client,
        events: &[Arc<Event>],
        filter: &Filter,
        states: &[ServiceState],
    ) {
        let tags: HashMap<&str, &[String]> = states
            .iter()
            .map(|s| (s.name.as_str(), &s.tags[..]))
            .collect();
        for e in events {
            let ok = match e.tags.known() {
                true => filter.matches(e),
                false => {
                    filter.transitions
                        && filter.matches_service(
                            &e.service,
                            tags.get(e.service.as_str()).unwrap_or(&&[][..]),
                        )
                }
            };
            if ok {
                self.push(
                    c,
                    Out {
                        bytes: e.frame.clone(),
                        born: None,
                        close: false,
                    },
                );
            }
        }
    }
}
