//! Scans for scrapes: one at a time, shared by the requests that wait for
//! it, and always fresh, however clients come and go:
//! - at most one scan runs, and at most one more waits to start;
//! - a request is answered by a scan that started after it arrived (one
//!   already running may predate a port opened just before), shared by
//!   every request that arrives meanwhile;
//! - when every request that waited for the next scan has gone, that scan
//!   does not run; a scan that starts runs to its end, for whoever waits.
//!
//! The scan is a function given to [`Scraper::start`], so that these rules
//! are tested with a fake scan on tokio's paused clock.

use std::{
    future::Future,
    sync::{Arc, Mutex},
};

use super::lock;

use hyper::body::Bytes;
use tokio::sync::{Notify, watch};

/// The outcome of one scan: the exposition, or why the scan failed.
pub type Outcome = Result<Bytes, Arc<str>>;

/// Hands out scans to requests.
pub struct Scraper {
    /// Scans started, and requests waiting for the next one.
    state: Mutex<State>,
    /// Wakes the driver when a request waits for a scan.
    wake: Notify,
    /// The last scan that ended: its number and outcome.
    done: watch::Sender<(u64, Option<Outcome>)>,
}

#[derive(Debug, Default)]
struct State {
    /// Scans started so far; the number of the latest.
    started: u64,
    /// Requests waiting for scan `started + 1`, which has not started.
    waiting: usize,
}

impl Scraper {
    /// A scraper whose scans are `scan()`, run one after another by a task
    /// of the current tokio runtime.
    pub fn start<F, S>(mut scan: F) -> Arc<Scraper>
    where
        F: FnMut() -> S + Send + 'static,
        S: Future<Output = Outcome> + Send + 'static,
    {
        let scraper = Arc::new(Scraper {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            done: watch::Sender::new((0, None)),
        });
        let driver = scraper.clone();
        tokio::spawn(async move {
            loop {
                let number = driver.next_scan().await;
                let outcome = scan().await;
                driver.done.send_replace((number, Some(outcome)));
            }
        });
        scraper
    }

    /// The outcome of a scan that starts after this call.
    pub async fn scrape(&self) -> Outcome {
        let mut done = self.done.subscribe();
        let wanted = {
            let mut state = lock(&self.state);
            state.waiting += 1;
            state.started + 1
        };
        // Whoever stops waiting before scan `wanted` started (the client
        // went away) takes back its request for it.
        let waiter = Waiter {
            scraper: self,
            wanted,
        };
        self.wake.notify_one();
        let outcome = done
            .wait_for(|(number, _)| *number >= wanted)
            .await
            .ok()
            .and_then(|finished| finished.1.clone());
        drop(waiter);
        // The driver never stops while a request holds the scraper.
        outcome.unwrap_or_else(|| Err("the scanner stopped".into()))
    }

    /// Waits until a request wants a scan, then starts it: returns its
    /// number.
    async fn next_scan(&self) -> u64 {
        loop {
            {
                let mut state = lock(&self.state);
                if state.waiting > 0 {
                    state.waiting = 0;
                    state.started += 1;
                    return state.started;
                }
            }
            // A notification sent since the check above is kept for us.
            self.wake.notified().await;
        }
    }
}

/// A request's claim on scan `wanted`, withdrawn when the request goes
/// away before that scan starts.
struct Waiter<'a> {
    scraper: &'a Scraper,
    wanted: u64,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.scraper.state);
        if state.started < self.wanted {
            state.waiting -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };
    use tokio::{task::JoinHandle, time::sleep};

    /// A fake scan that takes `took` of (paused) time and answers with its
    /// number; it counts scans and the most that ran at once.
    struct Fake {
        scans: AtomicUsize,
        running: AtomicUsize,
        most_at_once: AtomicUsize,
    }

    fn fake(took: Duration, fail: bool) -> (Arc<Fake>, Arc<Scraper>) {
        let fake = Arc::new(Fake {
            scans: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            most_at_once: AtomicUsize::new(0),
        });
        let counts = fake.clone();
        let scraper = Scraper::start(move || {
            let counts = counts.clone();
            Box::pin(async move {
                let number = counts.scans.fetch_add(1, Ordering::SeqCst) + 1;
                let now = counts.running.fetch_add(1, Ordering::SeqCst) + 1;
                counts.most_at_once.fetch_max(now, Ordering::SeqCst);
                sleep(took).await;
                counts.running.fetch_sub(1, Ordering::SeqCst);
                if fail {
                    Err(format!("scan {number} failed").into())
                } else {
                    Ok(Bytes::from(format!("scan {number}")))
                }
            })
        });
        (fake, scraper)
    }

    fn request(scraper: &Arc<Scraper>) -> JoinHandle<Outcome> {
        let scraper = scraper.clone();
        tokio::spawn(async move { scraper.scrape().await })
    }

    async fn answer(handle: JoinHandle<Outcome>) -> String {
        let body = handle.await.unwrap().unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn simultaneous_requests_share_one_scan() {
        let (fake, scraper) = fake(Duration::from_secs(1), false);
        let handles: Vec<_> = (0..50).map(|_| request(&scraper)).collect();
        for handle in handles {
            assert_eq!(answer(handle).await, "scan 1");
        }
        assert_eq!(fake.scans.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_during_a_scan_get_the_next_one_and_share_it() {
        let (fake, scraper) = fake(Duration::from_secs(1), false);
        let first = request(&scraper);
        sleep(Duration::from_millis(500)).await;
        // Scan 1 is running: these must not get its (older) answer.
        let later: Vec<_> = (0..20).map(|_| request(&scraper)).collect();
        sleep(Duration::from_millis(300)).await;
        let latest = request(&scraper);
        assert_eq!(answer(first).await, "scan 1");
        for handle in later {
            assert_eq!(answer(handle).await, "scan 2");
        }
        assert_eq!(answer(latest).await, "scan 2");
        assert_eq!(fake.scans.load(Ordering::SeqCst), 2);
        // Idle again: the next request starts a scan at once.
        assert_eq!(answer(request(&scraper)).await, "scan 3");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_that_go_away_leave_no_scans_behind() {
        let (fake, scraper) = fake(Duration::from_secs(1), false);
        let first = request(&scraper);
        sleep(Duration::from_millis(100)).await;
        // 500 clients reset their connections while scan 1 runs.
        for _ in 0..500 {
            let handle = request(&scraper);
            sleep(Duration::from_millis(1)).await;
            handle.abort();
        }
        sleep(Duration::from_secs(30)).await;
        assert_eq!(answer(first).await, "scan 1");
        assert_eq!(
            fake.scans.load(Ordering::SeqCst),
            1,
            "a scan ran for nobody"
        );
        assert_eq!(answer(request(&scraper)).await, "scan 2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_scan_whose_requests_went_away_still_ends_and_counts() {
        let (fake, scraper) = fake(Duration::from_secs(1), false);
        request(&scraper).abort();
        let handle = request(&scraper);
        sleep(Duration::from_millis(10)).await;
        handle.abort();
        sleep(Duration::from_secs(2)).await;
        assert_eq!(fake.scans.load(Ordering::SeqCst), 1);
        assert_eq!(fake.running.load(Ordering::SeqCst), 0);
        assert_eq!(answer(request(&scraper)).await, "scan 2");
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_one_scan_at_once() {
        let (fake, scraper) = fake(Duration::from_millis(300), false);
        // xorshift: arrivals and aborts at irregular moments.
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let mut handles = Vec::new();
        for _ in 0..2000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let handle = request(&scraper);
            if state.is_multiple_of(3) {
                handle.abort();
            } else {
                handles.push(handle);
            }
            sleep(Duration::from_millis(state % 7)).await;
        }
        for handle in handles {
            assert!(answer(handle).await.starts_with("scan "));
        }
        assert_eq!(fake.most_at_once.load(Ordering::SeqCst), 1);
        // 2,000 arrivals over ~6 s of 300 ms scans: about one scan per
        // 300 ms, not one per request.
        let scans = fake.scans.load(Ordering::SeqCst);
        assert!((10..=40).contains(&scans), "{scans} scans");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_shared_and_the_next_request_scans_again() {
        let (fake, scraper) = fake(Duration::from_secs(1), true);
        let handles: Vec<_> = (0..3).map(|_| request(&scraper)).collect();
        for handle in handles {
            assert_eq!(&*handle.await.unwrap().unwrap_err(), "scan 1 failed");
        }
        assert_eq!(&*scraper.scrape().await.unwrap_err(), "scan 2 failed");
        assert_eq!(fake.scans.load(Ordering::SeqCst), 2);
    }
}
