//! Basic auth against `basic_auth_users`' bcrypt hashes, done safely.
//!
//! - bcrypt is slow on purpose, so each result is cached, under an HMAC
//!   (keyed at start) of the user, the hash in force and the password: a
//!   changed password or hash never hits, and no plaintext is kept.
//!   Successes and failures have bounded sets of their own, so failures
//!   never push out successes.
//! - Single flight: requests that arrive while the same check waits or runs
//!   wait for it, so 32 clients with the same credentials cost one bcrypt.
//! - An unknown user is checked against a dummy hash and refused, so it
//!   answers after about the time a wrong password takes; the dummy costs
//!   the configured hashes' median cost, at most [`MAX_DUMMY_COST`].
//! - Checks run on the blocking pool, one at a time, through a [`Fair`]
//!   queue bounded per client ([`PER_CLIENT`]) and in all ([`QUEUED`]); a
//!   check that waited [`MAX_WAIT`] is dropped. A request whose check cannot
//!   be queued or was dropped gets [`Verdict::Busy`] at once, and a check
//!   every requester gave up on is dropped unrun with its entry: nothing a
//!   client sends grows memory beyond these bounds.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use base64::{
    Engine, alphabet,
    engine::{GeneralPurpose, GeneralPurposeConfig},
};
use hyper::header::HeaderValue;
use ring::{hmac, rand::SystemRandom};
use tokio::sync::watch;

use super::{
    fair::{Fair, Job, Limits},
    lock,
};

/// How many successful checks are remembered (users × passwords × hashes
/// seen since start; emptied if ever full).
const MAX_GOOD: usize = 1024;
/// How many failed checks are remembered before the set is emptied.
const MAX_BAD: usize = 4096;
/// Checks one client address may have waiting.
pub const PER_CLIENT: usize = 4;
/// Checks waiting, all clients together.
pub const QUEUED: usize = 256;
/// How long a check may wait for its turn.
pub const MAX_WAIT: Duration = Duration::from_secs(4);
/// The highest cost of the dummy hash unknown users are checked against.
pub const MAX_DUMMY_COST: u32 = 10;

/// A cache key: HMAC-SHA256 of (user, hash, password).
type Key = [u8; 32];

/// Checks a password against a bcrypt hash.
pub type Verify = fn(password: &[u8], hash: &str) -> bool;

/// bcrypt's own check; a hash that does not parse never matches.
fn bcrypt_verify(password: &[u8], hash: &str) -> bool {
    bcrypt::verify(password, hash).unwrap_or(false)
}

/// What a request's credentials get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The credentials of a configured user.
    Allow,
    /// None, malformed, unknown or wrong credentials.
    Deny,
    /// Too many checks wait (this client's, or everyone's): try again.
    Busy,
}

/// The checker, shared by all connections for the server's lifetime (it
/// survives reloads of the web config: its keys include the hash).
pub struct Authenticator {
    shared: Arc<Shared>,
    queue: Arc<Fair>,
}

struct Shared {
    /// The HMAC key of the cache keys.
    key: hmac::Key,
    /// The check itself (bcrypt; replaced in tests to count calls).
    verify: Verify,
    /// Results and checks in flight.
    cache: Mutex<Cache>,
}

/// What the authenticator remembers.
#[derive(Default)]
struct Cache {
    good: HashSet<Key>,
    bad: HashSet<Key>,
    /// Checks waiting or running; the result is sent to every subscriber.
    pending: HashMap<Key, watch::Sender<Option<bool>>>,
}

impl Authenticator {
    /// An authenticator that checks with bcrypt.
    pub fn new() -> Authenticator {
        Authenticator::with_verify(bcrypt_verify)
    }

    /// An authenticator that checks with `verify`.
    pub fn with_verify(verify: Verify) -> Authenticator {
        Authenticator {
            shared: Arc::new(Shared {
                key: hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
                    .expect("the system's random source failed"),
                verify,
                cache: Mutex::new(Cache::default()),
            }),
            queue: Fair::new(Limits {
                per_client: PER_CLIENT,
                total: QUEUED,
                max_wait: MAX_WAIT,
            }),
        }
    }

    /// Whether the `Authorization` header, sent from `client`, carries the
    /// credentials of one of `users`.
    pub async fn check(
        &self,
        users: &BTreeMap<String, String>,
        authorization: Option<&HeaderValue>,
        client: IpAddr,
    ) -> Verdict {
        let Some((user, password)) = authorization.and_then(|h| credentials(h.as_bytes())) else {
            return Verdict::Deny;
        };
        let known = users.get(&user);
        let Some(hash) = known.map_or_else(|| dummy(users), |h| Some(h.as_str())) else {
            return Verdict::Deny;
        };
        let key = self.key_of(&user, hash, &password);
        let verdict = |matched: bool| {
            if known.is_some() && matched {
                Verdict::Allow
            } else {
                Verdict::Deny
            }
        };
        let mut result = {
            let mut cache = lock(&self.shared.cache);
            if cache.good.contains(&key) {
                return verdict(true);
            }
            if cache.bad.contains(&key) {
                return verdict(false);
            }
            if let Some(flight) = cache.pending.get(&key) {
                flight.subscribe()
            } else {
                let (flight, result) = watch::channel(None);
                cache.pending.insert(key, flight.clone());
                drop(cache);
                let job = Check {
                    shared: self.shared.clone(),
                    key,
                    password,
                    hash: hash.to_string(),
                    flight: Some(flight),
                };
                // Refused: the job is dropped, and with it the entry.
                if self.queue.submit(client.into(), Box::new(job)).is_err() {
                    return Verdict::Busy;
                }
                result
            }
        };
        match result.wait_for(Option::is_some).await {
            Ok(matched) => verdict(matched.unwrap_or(false)),
            // The check was dropped unrun: it waited too long.
            Err(_) => Verdict::Busy,
        }
    }

    /// Checks waiting or running now.
    #[cfg(test)]
    fn pending(&self) -> usize {
        lock(&self.shared.cache).pending.len()
    }

    /// The cache key of a check: each part length-prefixed, so that no two
    /// different triples encode alike.
    fn key_of(&self, user: &str, hash: &str, password: &[u8]) -> Key {
        let mut context = hmac::Context::with_key(&self.shared.key);
        for part in [user.as_bytes(), hash.as_bytes(), password] {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part);
        }
        let tag = context.sign();
        Key::try_from(tag.as_ref()).expect("HMAC-SHA256 is 32 bytes")
    }
}

/// One bcrypt check in the queue. Dropped, run or not, it takes its entry
/// out of `pending`, which tells its waiters.
struct Check {
    shared: Arc<Shared>,
    key: Key,
    password: Vec<u8>,
    hash: String,
    /// Taken when the result is sent.
    flight: Option<watch::Sender<Option<bool>>>,
}

impl Job for Check {
    fn wanted(&self) -> bool {
        // The requesters hold the receivers: none left, nobody waits.
        self.flight
            .as_ref()
            .is_some_and(|flight| flight.receiver_count() > 0)
    }

    fn run(mut self: Box<Self>) {
        let matched = (self.shared.verify)(&self.password, &self.hash);
        let mut cache = lock(&self.shared.cache);
        cache.pending.remove(&self.key);
        let (set, limit) = if matched {
            (&mut cache.good, MAX_GOOD)
        } else {
            (&mut cache.bad, MAX_BAD)
        };
        if set.len() >= limit {
            set.clear();
        }
        set.insert(self.key);
        drop(cache);
        if let Some(flight) = self.flight.take() {
            flight.send_replace(Some(matched));
        }
    }
}

impl Drop for Check {
    fn drop(&mut self) {
        if self.flight.is_some() {
            // Not run: forget it, so that its waiters see the senders go.
            lock(&self.shared.cache).pending.remove(&self.key);
        }
    }
}

/// The dummy hash unknown users are checked against: a well-formed bcrypt
/// hash (of no password anyone sends with any chance) whose cost is the
/// median of the configured hashes' costs, at most [`MAX_DUMMY_COST`].
fn dummy(users: &BTreeMap<String, String>) -> Option<&'static str> {
    static DUMMIES: OnceLock<Vec<String>> = OnceLock::new();
    let mut costs: Vec<u32> = users.values().map(|hash| cost(hash)).collect();
    if costs.is_empty() {
        return None;
    }
    costs.sort_unstable();
    let cost = costs[costs.len() / 2].clamp(4, MAX_DUMMY_COST);
    let dummies = DUMMIES.get_or_init(|| {
        // One real hash at the lowest cost, to get a salt and digest of the
        // right form; the cost field is what sets the work.
        let base = bcrypt::hash_with_salt(b"unknown user", 4, [0x5a; 16])
            .expect("bcrypt of a fixed input")
            .format_for_version(bcrypt::Version::TwoY);
        (4..=MAX_DUMMY_COST)
            .map(|cost| format!("$2y${cost:02}${}", &base[7..]))
            .collect()
    });
    dummies.get((cost - 4) as usize).map(String::as_str)
}

/// The cost of a bcrypt hash (`$2y$10$...`); what does not parse counts as
/// the lowest.
fn cost(hash: &str) -> u32 {
    hash.get(4..6)
        .and_then(|c| c.parse::<u32>().ok())
        .unwrap_or(4)
}

/// The user and password of a `Basic` authorization header.
fn credentials(header: &[u8]) -> Option<(String, Vec<u8>)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = BASE64.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// Standard base64 with padding (RFC 4648 §4), as basic auth uses; like
/// Go's decoder, it ignores the unused bits of the last character.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// Whether `auth` lets `header` in, from [`HERE`].
    async fn allows(
        auth: &Authenticator,
        users: &BTreeMap<String, String>,
        header: Option<&HeaderValue>,
    ) -> bool {
        auth.check(users, header, HERE).await == Verdict::Allow
    }

    fn header(user: &str, password: &str) -> HeaderValue {
        let raw = format!("{user}:{password}");
        let encoded = encode(raw.as_bytes());
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    fn encode(bytes: &[u8]) -> String {
        BASE64.encode(bytes)
    }

    #[test]
    fn base64_round_trips_and_refuses_junk() {
        for text in ["", "a", "ab", "abc", "alice:s3cret", "ü:ö:\u{0}"] {
            assert_eq!(
                BASE64.decode(encode(text.as_bytes())).unwrap(),
                text.as_bytes()
            );
        }
        for bad in ["YQ", "YQ=", "Y===", "YQ==YQ==", "YW!j", "YWJj\n"] {
            assert!(BASE64.decode(bad).is_err(), "{bad:?}");
        }
        // Unused trailing bits are ignored, as Go does.
        assert_eq!(BASE64.decode("YR==").unwrap(), b"a");
    }

    #[test]
    fn credentials_are_parsed_as_rfc_7617_says() {
        let parse = |h: &HeaderValue| credentials(h.as_bytes());
        assert_eq!(
            parse(&header("alice", "pa:ss")),
            Some(("alice".into(), b"pa:ss".to_vec()))
        );
        assert_eq!(parse(&header("", "")), Some(("".into(), vec![])));
        let lower = HeaderValue::from_str(&format!("basic {}", encode(b"a:b"))).unwrap();
        assert_eq!(parse(&lower), Some(("a".into(), b"b".to_vec())));
        for bad in [
            format!("Bearer {}", encode(b"a:b")),
            format!("Basic {}", encode(b"no colon")),
            "Basic".into(),
            "Basic !!!!".into(),
        ] {
            assert_eq!(parse(&HeaderValue::from_str(&bad).unwrap()), None, "{bad}");
        }
    }

    /// A verifier that counts its calls and takes a while, as bcrypt does.
    /// "right" matches hash "H:right", and so on.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    fn counting(password: &[u8], hash: &str) -> bool {
        CALLS.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        hash.strip_prefix("$2y$10$") == Some(std::str::from_utf8(password).unwrap())
    }

    fn users(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(u, p)| (u.to_string(), format!("$2y$10${p}")))
            .collect()
    }

    // One test, so that the shared call counter is not raced by another.
    #[tokio::test]
    async fn cached_keyed_and_single_flight() {
        let auth = Arc::new(Authenticator::with_verify(counting));
        let calls = || CALLS.load(Ordering::SeqCst);
        let alice = Arc::new(users(&[("alice", "right")]));

        // 32 simultaneous identical requests: one check.
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (auth, alice) = (auth.clone(), alice.clone());
                tokio::spawn(
                    async move { allows(&auth, &alice, Some(&header("alice", "right"))).await },
                )
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap());
        }
        assert_eq!(calls(), 1);
        // Cached from now on.
        assert!(allows(&auth, &alice, Some(&header("alice", "right"))).await);
        assert_eq!(calls(), 1);

        // A wrong password: one check, then cached as a failure.
        assert!(!allows(&auth, &alice, Some(&header("alice", "wrong"))).await);
        assert!(!allows(&auth, &alice, Some(&header("alice", "wrong"))).await);
        assert_eq!(calls(), 2);

        // An unknown user costs one check too (against the dummy hash), and
        // is then refused from the cache.
        assert!(!allows(&auth, &alice, Some(&header("mallory", "right"))).await);
        assert!(!allows(&auth, &alice, Some(&header("mallory", "right"))).await);
        assert_eq!(calls(), 3);

        // A changed hash never hits the cache: the old password now fails
        // after a fresh check, the new one passes after another.
        let rotated = users(&[("alice", "new")]);
        assert!(!allows(&auth, &rotated, Some(&header("alice", "right"))).await);
        assert_eq!(calls(), 4);
        assert!(allows(&auth, &rotated, Some(&header("alice", "new"))).await);
        assert_eq!(calls(), 5);

        // No credentials, or malformed ones: refused without a check.
        assert!(!allows(&auth, &alice, None).await);
        assert!(!allows(&auth, &alice, Some(&HeaderValue::from_static("Basic x"))).await);
        assert!(!allows(&auth, &BTreeMap::new(), Some(&header("a", "b"))).await);
        assert_eq!(calls(), 5);
    }

    #[test]
    fn the_dummy_costs_the_median_and_at_most_10() {
        let users = |costs: &[u32]| -> BTreeMap<String, String> {
            costs
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("u{i}"), format!("$2y${c:02}$x")))
                .collect()
        };
        for (costs, want) in [
            (&[4, 12, 10][..], 10),
            (&[14], 10),
            (&[18, 4], 10),
            (&[4, 4, 12], 4),
            (&[6, 8, 8, 12], 8),
        ] {
            let hash = dummy(&users(costs)).unwrap();
            assert_eq!(cost(hash), want, "{costs:?}: {hash}");
            // Well formed: bcrypt checks it (and no password matches).
            if want == 4 {
                assert_eq!(bcrypt::verify("unknown", hash).ok(), Some(false));
            }
        }
        assert_eq!(dummy(&BTreeMap::new()), None);
    }

    #[test]
    fn real_bcrypt_hashes_of_every_prefix_verify() {
        let parts = bcrypt::hash_with_result("s3cret", 4).unwrap();
        for version in [
            bcrypt::Version::TwoA,
            bcrypt::Version::TwoB,
            bcrypt::Version::TwoY,
        ] {
            let hash = parts.format_for_version(version);
            assert!(bcrypt_verify(b"s3cret", &hash), "{hash}");
            assert!(!bcrypt_verify(b"s3creT", &hash), "{hash}");
        }
        assert!(!bcrypt_verify(b"x", "not a hash"));
    }

    /// bcrypt calls running now, and the most that ever ran at once.
    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static MOST: AtomicUsize = AtomicUsize::new(0);
    fn slow(_password: &[u8], _hash: &str) -> bool {
        let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        MOST.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        false
    }

    #[tokio::test]
    async fn clients_that_go_away_never_run_two_bcrypts_at_once() {
        let auth = Arc::new(Authenticator::with_verify(slow));
        let users: BTreeMap<String, String> =
            [("alice".to_string(), "$2y$10$x".to_string())].into();
        // Each client sends another wrong password and resets the
        // connection while its bcrypt runs.
        for round in 0..10 {
            let (auth, users) = (auth.clone(), users.clone());
            let client = tokio::spawn(async move {
                allows(
                    &auth,
                    &users,
                    Some(&header("alice", &format!("guess {round}"))),
                )
                .await
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
            client.abort();
        }
        assert!(!allows(&auth, &users, Some(&header("alice", "last"))).await);
        assert_eq!(MOST.load(Ordering::SeqCst), 1, "bcrypts ran side by side");
    }

    fn quick(_password: &[u8], _hash: &str) -> bool {
        std::thread::sleep(Duration::from_millis(2));
        false
    }

    #[tokio::test]
    async fn abandoned_requests_leave_nothing_behind() {
        let auth = Arc::new(Authenticator::with_verify(quick));
        let users = Arc::new(users(&[("alice", "right")]));
        // 3,000 requests with distinct wrong passwords from 600 addresses,
        // each given up while its check waits.
        for round in 0..3000u32 {
            let client = IpAddr::from([10, 0, (round % 600 / 256) as u8, (round % 256) as u8]);
            let (auth2, users) = (auth.clone(), users.clone());
            let task = tokio::spawn(async move {
                let guess = header("alice", &format!("guess {round}"));
                auth2.check(&users, Some(&guess), client).await
            });
            tokio::task::yield_now().await;
            task.abort();
            // The worker drops what it takes out unwanted outside the
            // queue's lock, so the bound may be passed for that moment:
            // it must hold again once those drops are done.
            let start = std::time::Instant::now();
            while auth.pending() > QUEUED + 1 {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{} pending",
                    auth.pending()
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let start = std::time::Instant::now();
        while auth.pending() > 0 || auth.queue.waiting() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{} checks still pending",
                auth.pending()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The passwords checked, in order.
    static CHECKED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    fn logged(password: &[u8], hash: &str) -> bool {
        let password = String::from_utf8_lossy(password).into_owned();
        CHECKED.lock().unwrap().push(password.clone());
        std::thread::sleep(Duration::from_millis(20));
        hash.strip_prefix("$2y$10$") == Some(&password)
    }

    #[tokio::test]
    async fn a_flooding_address_delays_another_by_at_most_two_checks() {
        let auth = Arc::new(Authenticator::with_verify(logged));
        let users = Arc::new(users(&[("alice", "right")]));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flooder = IpAddr::from([10, 0, 0, 2]);
        // 20 clients from one address: wrong passwords and unknown users.
        let flood: Vec<_> = (0..20)
            .map(|n| {
                let (auth, users, stop) = (auth.clone(), users.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut busy = 0;
                    for round in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let user = if round % 2 == 0 { "alice" } else { "mallory" };
                        let guess = header(user, &format!("flood {n} {round}"));
                        let verdict = auth.check(&users, Some(&guess), flooder).await;
                        assert_ne!(verdict, Verdict::Allow);
                        if verdict == Verdict::Busy {
                            busy += 1;
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    busy
                })
            })
            .collect();
        let start = std::time::Instant::now();
        while CHECKED.lock().unwrap().len() < 4 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the flood did not start"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let before = CHECKED.lock().unwrap().len();
        let verdict = auth
            .check(&users, Some(&header("alice", "right")), HERE)
            .await;
        assert_eq!(verdict, Verdict::Allow);
        stop.store(true, Ordering::SeqCst);
        let mut busy = 0;
        for task in flood {
            busy += task.await.unwrap();
        }
        let checked = CHECKED.lock().unwrap().clone();
        let at = checked.iter().position(|p| p == "right").unwrap();
        assert!(
            // The worker may start one more between the count and the submit.
            at <= before + 2,
            "{} flood checks ran before the login's (one may have been running)",
            at - before
        );
        assert!(
            busy > 0,
            "the flood's own checks never waited in a full queue"
        );
        assert!(auth.pending() == 0);
    }

    /// Calls of [`kept`].
    static KEPT_CALLS: AtomicUsize = AtomicUsize::new(0);
    fn kept(_password: &[u8], _hash: &str) -> bool {
        KEPT_CALLS.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        true
    }

    #[tokio::test]
    async fn a_check_whose_client_went_away_is_kept() {
        let auth = Arc::new(Authenticator::with_verify(kept));
        let users: BTreeMap<String, String> =
            [("alice".to_string(), "$2y$10$x".to_string())].into();
        let (auth2, users2) = (auth.clone(), users.clone());
        let client = tokio::spawn(async move {
            auth2
                .check(&users2, Some(&header("alice", "pw")), HERE)
                .await
        });
        while KEPT_CALLS.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The scraper times out while bcrypt runs; the next scrape comes.
        client.abort();
        let verdict = auth.check(&users, Some(&header("alice", "pw")), HERE).await;
        assert_eq!(verdict, Verdict::Allow);
        assert_eq!(KEPT_CALLS.load(Ordering::SeqCst), 1, "the check was redone");
    }
}
