//! Basic auth against `basic_auth_users`' bcrypt hashes, done safely.
//!
//! - bcrypt is slow on purpose (cost 10 is tens of milliseconds), so each
//!   result is cached. The cache key is an HMAC, under a key drawn at
//!   start, of the user, the hash in force and the password: a changed
//!   password or a changed hash is a new key and never hits, and the
//!   plaintext password is not kept.
//! - Single flight: requests that arrive while the same check runs wait
//!   for it, so 32 clients with the same credentials cost one bcrypt.
//! - An unknown user is checked against a configured user's hash (the
//!   costliest) and refused whatever the outcome: the same answer, after
//!   about the same time, as a wrong password. Its result is cached the
//!   same way.
//! - bcrypt runs on the blocking pool, one at a time, so a flood of wrong
//!   passwords can occupy at most one of its threads and never the thread
//!   that serves connections.
//! - Failures are cached in a set of their own, bounded and emptied when
//!   full, so they can never push out the successes.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
};

use hyper::header::HeaderValue;
use ring::{hmac, rand::SystemRandom};
use tokio::sync::{OnceCell, Semaphore};

/// How many successful checks are remembered (users × passwords × hashes
/// seen since start; emptied if ever full).
const MAX_GOOD: usize = 1024;
/// How many failed checks are remembered before the set is emptied.
const MAX_BAD: usize = 4096;

/// A cache key: HMAC-SHA256 of (user, hash, password).
type Key = [u8; 32];

/// Checks a password against a bcrypt hash.
pub type Verify = fn(password: &[u8], hash: &str) -> bool;

/// bcrypt's own check; a hash that does not parse never matches.
fn bcrypt_verify(password: &[u8], hash: &str) -> bool {
    bcrypt::verify(password, hash).unwrap_or(false)
}

/// The checker, shared by all connections for the server's lifetime (it
/// survives reloads of the web config: its keys include the hash).
pub struct Authenticator {
    /// The HMAC key of the cache keys.
    key: hmac::Key,
    /// The check itself (bcrypt; replaced in tests to count calls).
    verify: Verify,
    /// Results and checks in flight.
    cache: Arc<Mutex<Cache>>,
    /// One bcrypt at a time.
    bcrypt_slot: Arc<Semaphore>,
}

/// What the authenticator remembers.
#[derive(Default)]
struct Cache {
    good: HashSet<Key>,
    bad: HashSet<Key>,
    pending: HashMap<Key, Arc<OnceCell<bool>>>,
}

impl Cache {
    /// The recorded result of a check, if any.
    fn known(&self, key: &Key) -> Option<bool> {
        (self.good.contains(key) || self.bad.contains(key)).then(|| self.good.contains(key))
    }

    /// Records the result of a check and forgets it as pending.
    fn record(&mut self, key: Key, matched: bool) {
        self.pending.remove(&key);
        let (set, limit) = if matched {
            (&mut self.good, MAX_GOOD)
        } else {
            (&mut self.bad, MAX_BAD)
        };
        if set.len() >= limit {
            set.clear();
        }
        set.insert(key);
    }
}

impl Authenticator {
    /// An authenticator that checks with bcrypt.
    pub fn new() -> Authenticator {
        Authenticator::with_verify(bcrypt_verify)
    }

    /// An authenticator that checks with `verify`.
    pub fn with_verify(verify: Verify) -> Authenticator {
        Authenticator {
            key: hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
                .expect("the system's random source failed"),
            verify,
            cache: Arc::new(Mutex::new(Cache::default())),
            bcrypt_slot: Arc::new(Semaphore::new(1)),
        }
    }

    /// Whether the `Authorization` header carries the credentials of one of
    /// `users`.
    pub async fn allows(
        &self,
        users: &BTreeMap<String, String>,
        authorization: Option<&HeaderValue>,
    ) -> bool {
        let Some((user, password)) = authorization.and_then(|h| credentials(h.as_bytes())) else {
            return false;
        };
        let (known, hash) = match users.get(&user) {
            Some(hash) => (true, hash),
            None => match costliest(users) {
                Some(hash) => (false, hash),
                None => return false,
            },
        };
        let key = self.key_of(&user, hash, &password);
        let cell = {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.good.contains(&key) {
                return known;
            }
            if cache.bad.contains(&key) {
                return false;
            }
            cache.pending.entry(key).or_default().clone()
        };
        let matched = *cell
            .get_or_init(|| self.check(key, password, hash.clone()))
            .await;
        known && matched
    }

    /// Runs one bcrypt check on the blocking pool and records its result.
    /// The result is recorded by the blocking task itself, so that a check
    /// whose client went away (a scraper's timeout) is not thrown away and
    /// redone for the next request with the same credentials.
    async fn check(&self, key: Key, password: Vec<u8>, hash: String) -> bool {
        // The semaphore is never closed, so acquiring cannot fail. The slot
        // goes with the bcrypt itself: if this request goes away meanwhile,
        // the bcrypt still runs to its end, and no other may start before.
        let slot = self.bcrypt_slot.clone().acquire_owned().await;
        // A check whose client went away may have finished meanwhile.
        if let Some(known) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .known(&key)
        {
            return known;
        }
        let (verify, cache) = (self.verify, self.cache.clone());
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let matched = verify(&password, &hash);
            cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(key, matched);
            matched
        })
        .await
        .unwrap_or(false)
    }

    /// The cache key of a check: each part length-prefixed, so that no two
    /// different triples encode alike.
    fn key_of(&self, user: &str, hash: &str, password: &[u8]) -> Key {
        let mut context = hmac::Context::with_key(&self.key);
        for part in [user.as_bytes(), hash.as_bytes(), password] {
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part);
        }
        let tag = context.sign();
        let mut key = [0; 32];
        key.copy_from_slice(tag.as_ref());
        key
    }
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator::new()
    }
}

/// The hash with the highest cost (an unknown user is checked against it,
/// so that an unknown user never answers faster than a known one).
fn costliest(users: &BTreeMap<String, String>) -> Option<&String> {
    users
        .values()
        .max_by_key(|hash| hash.get(4..6).and_then(|c| c.parse::<u32>().ok()))
}

/// The user and password of a `Basic` authorization header.
fn credentials(header: &[u8]) -> Option<(String, Vec<u8>)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(encoded.trim())?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// Standard base64 with padding (RFC 4648 §4), as basic auth uses.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.len() / 4;
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    fn header(user: &str, password: &str) -> HeaderValue {
        let raw = format!("{user}:{password}");
        let encoded = encode(raw.as_bytes());
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    /// A plain base64 encoder, for the tests only.
    fn encode(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn base64_round_trips_and_refuses_junk() {
        for text in ["", "a", "ab", "abc", "alice:s3cret", "ü:ö:\u{0}"] {
            assert_eq!(
                base64_decode(&encode(text.as_bytes())).unwrap(),
                text.as_bytes()
            );
        }
        for bad in ["YQ", "YQ=", "Y===", "YQ==YQ==", "YW!j", "YWJj\n"] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
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
                    async move { auth.allows(&alice, Some(&header("alice", "right"))).await },
                )
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap());
        }
        assert_eq!(calls(), 1);
        // Cached from now on.
        assert!(auth.allows(&alice, Some(&header("alice", "right"))).await);
        assert_eq!(calls(), 1);

        // A wrong password: one check, then cached as a failure.
        assert!(!auth.allows(&alice, Some(&header("alice", "wrong"))).await);
        assert!(!auth.allows(&alice, Some(&header("alice", "wrong"))).await);
        assert_eq!(calls(), 2);

        // An unknown user costs the same single check, and fails even with
        // a password that matches the hash it is checked against.
        assert!(!auth.allows(&alice, Some(&header("mallory", "right"))).await);
        assert!(!auth.allows(&alice, Some(&header("mallory", "right"))).await);
        assert_eq!(calls(), 3);

        // A changed hash never hits the cache: the old password now fails
        // after a fresh check, the new one passes after another.
        let rotated = users(&[("alice", "new")]);
        assert!(!auth.allows(&rotated, Some(&header("alice", "right"))).await);
        assert_eq!(calls(), 4);
        assert!(auth.allows(&rotated, Some(&header("alice", "new"))).await);
        assert_eq!(calls(), 5);

        // No credentials, or malformed ones: refused without a check.
        assert!(!auth.allows(&alice, None).await);
        assert!(
            !auth
                .allows(&alice, Some(&HeaderValue::from_static("Basic x")))
                .await
        );
        assert!(!auth.allows(&BTreeMap::new(), Some(&header("a", "b"))).await);
        assert_eq!(calls(), 5);
    }

    #[test]
    fn the_dummy_hash_is_the_costliest() {
        let users: BTreeMap<String, String> =
            [("a", "$2y$04$x"), ("b", "$2y$12$y"), ("c", "$2y$10$z")]
                .iter()
                .map(|(u, h)| (u.to_string(), h.to_string()))
                .collect();
        assert_eq!(costliest(&users).map(String::as_str), Some("$2y$12$y"));
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
                auth.allows(&users, Some(&header("alice", &format!("guess {round}"))))
                    .await
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
            client.abort();
        }
        assert!(!auth.allows(&users, Some(&header("alice", "last"))).await);
        assert_eq!(MOST.load(Ordering::SeqCst), 1, "bcrypts ran side by side");
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
        let client =
            tokio::spawn(async move { auth2.allows(&users2, Some(&header("alice", "pw"))).await });
        while KEPT_CALLS.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The scraper times out while bcrypt runs; the next scrape comes.
        client.abort();
        assert!(auth.allows(&users, Some(&header("alice", "pw"))).await);
        assert_eq!(KEPT_CALLS.load(Ordering::SeqCst), 1, "the check was redone");
    }
}
