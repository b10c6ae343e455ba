//! A fair queue for the server's CPU-heavy work: bcrypt checks and the
//! costly step of TLS handshakes.
//!
//! That work runs on tokio's blocking pool, never on the thread that serves
//! connections, one job at a time. Waiting jobs are kept per client (a
//! source address; an IPv6 /64 counts as one) and taken round robin between
//! clients: a client that floods the queue makes its own jobs wait, not
//! another's, which waits for at most one job per other client. Each client
//! may have [`Limits::per_client`] jobs waiting and all together
//! [`Limits::total`]; a job that has waited [`Limits::max_wait`] is dropped
//! unrun, and so is one that nobody wants any more (its request or
//! connection went away). Dropping a job is how its waiters learn it will
//! not run.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::lock;

/// Work for the queue.
pub trait Job: Send + 'static {
    /// Whether anyone still waits for this job's result.
    fn wanted(&self) -> bool;
    /// Does the work (on a blocking thread) and delivers its result.
    fn run(self: Box<Self>);
}

/// Who a job is for: a source address, IPv6 reduced to its /64 (what one
/// host is usually given), IPv4-mapped IPv6 to IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Client(IpAddr);

impl From<IpAddr> for Client {
    fn from(ip: IpAddr) -> Client {
        Client(match ip.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
            v4 => v4,
        })
    }
}

/// The queue's bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Jobs one client may have waiting.
    pub per_client: usize,
    /// Jobs waiting, all clients together.
    pub total: usize,
    /// How long a job may wait to start.
    pub max_wait: Duration,
}

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// The queue.
pub struct Fair {
    limits: Limits,
    state: Mutex<State>,
}

/// A waiting job and when it came.
type Waiting = (Instant, Box<dyn Job>);

#[derive(Default)]
struct State {
    /// Each client's waiting jobs, oldest first.
    clients: HashMap<Client, VecDeque<Waiting>>,
    /// Clients with waiting jobs, in the order they are served.
    turns: VecDeque<Client>,
    /// Jobs waiting, all clients together.
    waiting: usize,
    /// Whether the worker runs.
    running: bool,
}

impl Fair {
    pub fn new(limits: Limits) -> Arc<Fair> {
        Arc::new(Fair {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    /// Queues `job` for `client`, and starts the worker if it is idle. Must
    /// be called within a tokio runtime.
    pub fn submit(self: &Arc<Self>, client: Client, job: Box<dyn Job>) -> Result<(), Full> {
        // Declared before the lock, so dropped after it: a job's drop may
        // take other locks.
        let mut unwanted = Vec::new();
        let mut state = lock(&self.state);
        let limits = self.limits;
        if state.clients.get(&client).map_or(0, VecDeque::len) >= limits.per_client {
            state.prune(Some(client), limits.max_wait, &mut unwanted);
            if state.clients.get(&client).map_or(0, VecDeque::len) >= limits.per_client {
                return Err(Full);
            }
        }
        if state.waiting >= limits.total {
            state.prune(None, limits.max_wait, &mut unwanted);
        }
        if state.waiting >= limits.total {
            // A client with nothing waiting still gets in: it takes the
            // place of the newest job of the client with most waiting.
            if state.clients.contains_key(&client) {
                return Err(Full);
            }
            let Some(longest) = state
                .clients
                .iter()
                .max_by_key(|(_, jobs)| jobs.len())
                .map(|(c, _)| *c)
            else {
                return Err(Full);
            };
            if let Some(evicted) = state.take_newest(longest) {
                unwanted.push(evicted);
            }
        }
        let queue = state.clients.entry(client).or_default();
        queue.push_back((Instant::now(), job));
        if queue.len() == 1 {
            state.turns.push_back(client);
        }
        state.waiting += 1;
        if !state.running {
            state.running = true;
            let fair = self.clone();
            tokio::task::spawn_blocking(move || fair.work());
        }
        Ok(())
    }

    /// A worker: runs jobs until none waits.
    fn work(self: Arc<Self>) {
        // Counts this worker out if a job panics; when the queue is found
        // empty it is counted out under the same lock, so that a job queued
        // just then starts a new worker.
        struct Running<'a>(Option<&'a Fair>);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                if let Some(fair) = self.0 {
                    lock(&fair.state).running = false;
                }
            }
        }
        let mut running = Running(Some(&self));
        loop {
            // Declared before the lock, so dropped after it.
            let mut unwanted = Vec::new();
            let mut state = lock(&self.state);
            let Some(job) = state.next(self.limits.max_wait, &mut unwanted) else {
                state.running = false;
                running.0 = None;
                return;
            };
            drop(state);
            drop(unwanted);
            job.run();
        }
    }

    /// Jobs waiting now.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        lock(&self.state).waiting
    }
}

impl State {
    /// The next job to run, round robin between clients; jobs too old or
    /// unwanted go to `unwanted` on the way. `None`: nothing waits.
    fn next(&mut self, max_wait: Duration, unwanted: &mut Vec<Waiting>) -> Option<Box<dyn Job>> {
        while let Some(client) = self.turns.pop_front() {
            let Some(queue) = self.clients.get_mut(&client) else {
                continue;
            };
            let Some((since, job)) = queue.pop_front() else {
                self.clients.remove(&client);
                continue;
            };
            if queue.is_empty() {
                self.clients.remove(&client);
            } else {
                self.turns.push_back(client);
            }
            self.waiting -= 1;
            if since.elapsed() > max_wait || !job.wanted() {
                unwanted.push((since, job));
                continue;
            }
            return Some(job);
        }
        None
    }

    /// Moves the unwanted and too old jobs of `client` (of every client
    /// when `None`) to `unwanted`.
    fn prune(&mut self, client: Option<Client>, max_wait: Duration, unwanted: &mut Vec<Waiting>) {
        let mut emptied = Vec::new();
        for (who, queue) in &mut self.clients {
            if client.is_some_and(|c| c != *who) {
                continue;
            }
            let before = queue.len();
            let mut kept = VecDeque::with_capacity(before);
            for (since, job) in queue.drain(..) {
                if since.elapsed() > max_wait || !job.wanted() {
                    unwanted.push((since, job));
                } else {
                    kept.push_back((since, job));
                }
            }
            self.waiting -= before - kept.len();
            if kept.is_empty() {
                emptied.push(*who);
            }
            *queue = kept;
        }
        for who in emptied {
            self.clients.remove(&who);
            self.turns.retain(|c| *c != who);
        }
    }

    /// Takes the newest waiting job of `client`.
    fn take_newest(&mut self, client: Client) -> Option<Waiting> {
        let queue = self.clients.get_mut(&client)?;
        let newest = queue.pop_back()?;
        if queue.is_empty() {
            self.clients.remove(&client);
            self.turns.retain(|c| *c != client);
        }
        self.waiting -= 1;
        Some(newest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job that takes `ms` and logs its name when run, or `-name` when
    /// dropped unrun.
    struct Logged {
        name: &'static str,
        ms: u64,
        log: Arc<Mutex<Vec<String>>>,
        ran: bool,
        /// When given, the job runs until this is set.
        gate: Option<Arc<std::sync::atomic::AtomicBool>>,
    }

    impl Job for Logged {
        fn wanted(&self) -> bool {
            true
        }
        fn run(mut self: Box<Self>) {
            std::thread::sleep(Duration::from_millis(self.ms));
            while let Some(gate) = &self.gate
                && !gate.load(std::sync::atomic::Ordering::SeqCst)
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.ran = true;
            self.log.lock().unwrap().push(self.name.into());
        }
    }

    impl Drop for Logged {
        fn drop(&mut self) {
            if !self.ran {
                self.log.lock().unwrap().push(format!("-{}", self.name));
            }
        }
    }

    fn job(name: &'static str, ms: u64, log: &Arc<Mutex<Vec<String>>>) -> Box<dyn Job> {
        Box::new(Logged {
            name,
            ms,
            log: log.clone(),
            ran: false,
            gate: None,
        })
    }

    const A: Client = Client(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const B: Client = Client(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    async fn settled(fair: &Fair, log: &Arc<Mutex<Vec<String>>>, count: usize) -> Vec<String> {
        for _ in 0..1000 {
            if fair.waiting() == 0 && log.lock().unwrap().len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        log.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn clients_take_turns_within_their_bounds() {
        let fair = Fair::new(Limits {
            per_client: 3,
            total: 100,
            max_wait: Duration::from_secs(60),
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let names = ["a1", "a2", "a3", "a4", "a5", "a6"];
        let refused = names
            .iter()
            .filter(|name| fair.submit(A, job(name, 20, &log)).is_err())
            .count();
        // Three wait; a fourth may have been taken by the worker already.
        assert!((2..=3).contains(&refused), "{refused} refused");
        fair.submit(B, job("b1", 20, &log)).unwrap();
        let order = settled(&fair, &log, 7).await;
        let b = order.iter().position(|n| n == "b1").unwrap();
        let ran_before_b = order[..b].iter().filter(|n| !n.starts_with('-')).count();
        assert!(ran_before_b <= 2, "{order:?}");
    }

    #[tokio::test]
    async fn a_job_that_waited_too_long_is_dropped_unrun() {
        let fair = Fair::new(Limits {
            per_client: 10,
            total: 100,
            max_wait: Duration::from_millis(300),
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        // "slow" holds the only worker until released; "late" is queued
        // once it runs, and released only after max_wait has passed.
        let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gate = release.clone();
        let slow = Logged {
            name: "slow",
            ms: 0,
            log: log.clone(),
            ran: false,
            gate: Some(gate),
        };
        fair.submit(A, Box::new(slow)).unwrap();
        let start = Instant::now();
        while fair.waiting() > 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "never started");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        fair.submit(B, job("late", 1, &log)).unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        release.store(true, std::sync::atomic::Ordering::SeqCst);
        let order = settled(&fair, &log, 2).await;
        assert_eq!(order, ["slow", "-late"]);
    }

    #[tokio::test]
    async fn when_all_is_full_a_new_client_still_gets_in() {
        let fair = Fair::new(Limits {
            per_client: 10,
            total: 3,
            max_wait: Duration::from_secs(60),
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        fair.submit(A, job("a0", 50, &log)).unwrap();
        let mut accepted = 0;
        for name in ["a1", "a2", "a3", "a4"] {
            accepted += usize::from(fair.submit(A, job(name, 1, &log)).is_ok());
        }
        assert!(accepted <= 3);
        fair.submit(B, job("b1", 1, &log)).unwrap();
        let order = settled(&fair, &log, 6).await;
        assert!(order.contains(&"b1".to_string()), "{order:?}");
    }

    #[test]
    fn ipv6_clients_are_their_64s() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Client::from(a), Client::from(b));
        assert_ne!(Client::from(a), Client::from(c));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(
            Client::from(mapped),
            Client::from(IpAddr::from([127, 0, 0, 2]))
        );
    }
}
