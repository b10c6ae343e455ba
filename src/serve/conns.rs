//! The connection cap, and who gives way when it is reached.
//!
//! Every accepted connection takes a [`Slot`]. A slot is *waiting* while
//! its connection has not completed a request head (a new connection, or a
//! keep-alive one between requests) and *busy* while a request is being
//! answered. When all slots are taken, a new connection evicts the one that
//! has been waiting longest, as nginx reuses idle connections: clients that
//! trickle bytes (slowloris) or hold connections open and silent cannot
//! keep a scrape out, and a connection that is being answered is never cut.
//! Only when every slot is busy is the new connection closed at once.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use super::lock;

use tokio::sync::Notify;

/// The slots of one server.
pub struct Conns {
    /// Most slots at once.
    cap: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Slots taken.
    taken: usize,
    /// Numbers handed out so far, to tell slots apart.
    next: u64,
    /// The waiting slots, oldest first, with the bell that evicts each.
    waiting: BTreeMap<(Instant, u64), Arc<Notify>>,
}

/// A connection's slot: given back when dropped.
pub struct Slot {
    conns: Arc<Conns>,
    id: u64,
    /// Rung when the slot is taken from the connection.
    evict: Arc<Notify>,
    /// Since when the slot waits, if it does (it is in `waiting` then).
    since: Mutex<Option<Instant>>,
}

impl Conns {
    /// Room for `cap` connections.
    pub fn new(cap: usize) -> Arc<Conns> {
        Arc::new(Conns {
            cap,
            inner: Mutex::new(Inner::default()),
        })
    }

    /// A slot for a new connection: a free one, or the one of the
    /// connection that has waited longest, which is told to go. `None` when
    /// every connection is being answered.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut inner = lock(&self.inner);
        if inner.taken >= self.cap {
            let (_, victim) = inner.waiting.pop_first()?;
            // Its task drops the connection and gives the slot back soon;
            // until then the count is one over the cap.
            victim.notify_one();
        }
        inner.taken += 1;
        inner.next += 1;
        let (id, now) = (inner.next, Instant::now());
        let evict = Arc::new(Notify::new());
        inner.waiting.insert((now, id), evict.clone());
        Some(Slot {
            conns: self.clone(),
            id,
            evict,
            since: Mutex::new(Some(now)),
        })
    }

    /// Slots taken now.
    #[cfg(test)]
    fn taken(&self) -> usize {
        lock(&self.inner).taken
    }
}

impl Slot {
    /// A request head has arrived: this connection is being answered and
    /// may not be evicted.
    pub fn busy(&self) {
        let mut since = lock(&self.since);
        if let Some(at) = since.take() {
            lock(&self.conns.inner).waiting.remove(&(at, self.id));
        }
    }

    /// The answer is out: the connection waits for its next request.
    pub fn waiting(&self) {
        let mut since = lock(&self.since);
        if since.is_none() {
            let now = Instant::now();
            *since = Some(now);
            lock(&self.conns.inner)
                .waiting
                .insert((now, self.id), self.evict.clone());
        }
    }

    /// Resolves when a new connection takes this slot: drop the connection.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let since = *lock(&self.since);
        let mut inner = lock(&self.conns.inner);
        if let Some(at) = since {
            inner.waiting.remove(&(at, self.id));
        }
        inner.taken -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Whether `slot` has been told to go.
    async fn was_evicted(slot: &Slot) -> bool {
        tokio::time::timeout(Duration::from_millis(1), slot.evicted())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_new_connection_evicts_the_longest_waiting_one() {
        let conns = Conns::new(3);
        let oldest = conns.admit().unwrap();
        let busy = conns.admit().unwrap();
        busy.busy();
        let young = conns.admit().unwrap();
        assert_eq!(conns.taken(), 3);
        let newest = conns.admit().unwrap();
        assert!(was_evicted(&oldest).await, "the oldest waiting one stayed");
        assert!(!was_evicted(&busy).await, "a busy one was evicted");
        assert!(!was_evicted(&young).await);
        drop(oldest);
        assert_eq!(conns.taken(), 3);
        // Next in line: `young`, not the busy one.
        let _another = conns.admit().unwrap();
        assert!(was_evicted(&young).await);
        assert!(!was_evicted(&busy).await);
        drop((young, newest));
    }

    #[tokio::test]
    async fn when_every_connection_is_busy_new_ones_are_refused() {
        let conns = Conns::new(2);
        let slots: Vec<Slot> = (0..2).map(|_| conns.admit().unwrap()).collect();
        for slot in &slots {
            slot.busy();
        }
        assert!(conns.admit().is_none());
        // An answer goes out: that connection waits again, and gives way.
        slots[1].waiting();
        let _new = conns.admit().unwrap();
        assert!(was_evicted(&slots[1]).await);
        assert!(!was_evicted(&slots[0]).await);
    }

    #[tokio::test]
    async fn a_keep_alive_connection_waits_from_the_end_of_its_answer() {
        let conns = Conns::new(2);
        let first = conns.admit().unwrap();
        let second = conns.admit().unwrap();
        // `first` is answered after `second` arrived: it now waits since
        // later, so `second` is the one that has waited longest.
        first.busy();
        tokio::time::sleep(Duration::from_millis(2)).await;
        first.waiting();
        let _third = conns.admit().unwrap();
        assert!(was_evicted(&second).await);
        assert!(!was_evicted(&first).await);
    }

    #[tokio::test]
    async fn slots_are_given_back() {
        let conns = Conns::new(2);
        let slots: Vec<Slot> = (0..2).map(|_| conns.admit().unwrap()).collect();
        slots[0].busy();
        drop(slots);
        assert_eq!(conns.taken(), 0);
        assert!(lock(&conns.inner).waiting.is_empty());
    }
}
