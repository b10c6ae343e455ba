//! Sets of ports, and the `22,80,8000-9000` list syntax of `--ports` and
//! `--exclude`. A [`PortSet`] is an 8 KiB bitmap: cheap membership and
//! sorted iteration, and each port stored once, as a series is.

use std::fmt;

/// Number of 64-bit words needed for one bit per 16-bit port.
const WORDS: usize = 65536 / 64;

/// A set of ports, iterated in ascending order. An empty set holds no
/// bitmap until a port is added: a run makes several that stay empty.
#[derive(Clone, Default)]
pub struct PortSet {
    bits: Option<Box<[u64; WORDS]>>,
}

impl PortSet {
    /// The empty set.
    pub(crate) fn new() -> PortSet {
        PortSet { bits: None }
    }

    /// Every valid port, 1 through 65535.
    pub fn all() -> PortSet {
        let mut bits = Box::new([u64::MAX; WORDS]);
        bits[0] &= !1;
        PortSet { bits: Some(bits) }
    }

    /// The bitmap, made (empty) if there is none yet.
    fn bits_mut(&mut self) -> &mut [u64; WORDS] {
        self.bits.get_or_insert_with(|| Box::new([0; WORDS]))
    }

    /// The words of the bitmap; none for a set that never held a port.
    fn words(&self) -> &[u64] {
        self.bits.as_deref().map_or(&[], |bits| &bits[..])
    }

    /// Adds `port`.
    pub(crate) fn insert(&mut self, port: u16) {
        self.bits_mut()[usize::from(port) / 64] |= 1 << (port % 64);
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.words()
            .get(usize::from(port) / 64)
            .is_some_and(|word| word & (1 << (port % 64)) != 0)
    }

    /// Number of ports in the set.
    pub fn len(&self) -> usize {
        self.words().iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set holds no port.
    pub fn is_empty(&self) -> bool {
        self.words().iter().all(|&w| w == 0)
    }

    /// Adds every port of `other`.
    pub(crate) fn union_with(&mut self, other: &PortSet) {
        if let Some(theirs) = &other.bits {
            for (a, b) in self.bits_mut().iter_mut().zip(theirs.iter()) {
                *a |= b;
            }
        }
    }

    /// Keeps only the ports that are also in `other`.
    pub(crate) fn intersect_with(&mut self, other: &PortSet) {
        match (&mut self.bits, &other.bits) {
            (None, _) => {}
            (Some(_), None) => self.bits = None,
            (Some(ours), Some(theirs)) => {
                for (a, b) in ours.iter_mut().zip(theirs.iter()) {
                    *a &= b;
                }
            }
        }
    }

    /// Removes every port of `other`.
    pub fn subtract(&mut self, other: &PortSet) {
        if let (Some(ours), Some(theirs)) = (&mut self.bits, &other.bits) {
            for (a, b) in ours.iter_mut().zip(theirs.iter()) {
                *a &= !b;
            }
        }
    }

    /// The ports in ascending order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.words().iter().enumerate().flat_map(|(i, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros();
                rest &= rest - 1;
                // i < 1024 and bit < 64, so the port fits in a u16.
                Some((i * 64) as u16 + bit as u16)
            })
        })
    }
}

/// Two sets are equal when they hold the same ports, bitmap or none.
impl PartialEq for PortSet {
    fn eq(&self, other: &PortSet) -> bool {
        match (self.words(), other.words()) {
            ([], _) => other.is_empty(),
            (_, []) => self.is_empty(),
            (ours, theirs) => ours == theirs,
        }
    }
}

impl Eq for PortSet {}

impl FromIterator<u16> for PortSet {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> PortSet {
        let mut set = PortSet::new();
        for port in iter {
            set.insert(port);
        }
        set
    }
}

impl fmt::Debug for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The items of a comma-separated list, trimmed. An empty item is an
/// error: it is most often an empty variable (`--ports 22,$EXTRA`) or a
/// list split by a space (`--ports 22, 80`), a mistake not to hide.
pub(crate) fn list_items(list: &str) -> Result<Vec<&str>, String> {
    if list.trim().is_empty() {
        return Err("the list is empty".to_string());
    }
    let items: Vec<&str> = list.split(',').map(str::trim).collect();
    let last = items.len() - 1;
    match items.iter().position(|item| item.is_empty()) {
        None => Ok(items),
        Some(0) => Err("the list starts with a comma; remove it (is a variable empty?)".into()),
        Some(i) if i == last => {
            Err("the list ends with a comma; remove it (is a variable empty?)".into())
        }
        Some(_) => Err("two commas with nothing between them; remove one".into()),
    }
}

/// Parses a port list such as `22,80,443,8000-9000` (inclusive ranges);
/// the error names the offending item.
pub(crate) fn parse_list(list: &str) -> Result<PortSet, String> {
    let mut set = PortSet::new();
    for item in list_items(list)? {
        match item.split_once('-') {
            None => set.insert(parse_port(item)?),
            Some((low, high)) => {
                if low.trim().is_empty() {
                    return Err(format!(
                        "{} is not a port (ports are 1-65535)",
                        quoted(item)
                    ));
                }
                let (low, high) = (parse_port(low)?, parse_port(high)?);
                if low > high {
                    return Err(format!(
                        "range {} runs backwards (write {high}-{low})",
                        quoted(item)
                    ));
                }
                for port in low..=high {
                    set.insert(port);
                }
            }
        }
    }
    Ok(set)
}

/// Parses one port number, 1 through 65535.
fn parse_port(text: &str) -> Result<u16, String> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{} is not a port number", quoted(text)));
    }
    match text.parse::<u32>() {
        Ok(port @ 1..=65535) => Ok(port as u16),
        _ => Err(format!(
            "port {} is out of range (ports are 1-65535)",
            cut(text)
        )),
    }
}

/// `text` in single quotes, cut as [`cut`] does.
pub(crate) fn quoted(text: &str) -> String {
    format!("'{}'", cut(text))
}

/// `text`, or its first 40 characters and how long it was: an error message
/// stays one readable line whatever the user passed.
pub(crate) fn cut(text: &str) -> String {
    const KEEP: usize = 40;
    match text.char_indices().nth(KEEP) {
        None => text.to_string(),
        Some((end, _)) => format!("{}... ({} bytes)", &text[..end], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl PortSet {
        /// Removes `port`.
        fn remove(&mut self, port: u16) {
            if let Some(bits) = &mut self.bits {
                bits[usize::from(port) / 64] &= !(1 << (port % 64));
            }
        }
    }

    fn ports(list: &str) -> Vec<u16> {
        parse_list(list).unwrap().iter().collect()
    }

    #[test]
    fn single_ports_and_ranges() {
        assert_eq!(ports("22"), [22]);
        assert_eq!(ports("443,22,80"), [22, 80, 443]);
        assert_eq!(ports("8000-8003"), [8000, 8001, 8002, 8003]);
        assert_eq!(ports(" 22 , 10-11 "), [10, 11, 22]);
        assert_eq!(ports("5-5"), [5]);
        assert_eq!(ports("1,65535"), [1, 65535]);
        assert_eq!(ports("80,80,79-81"), [79, 80, 81]);
    }

    #[test]
    fn full_range() {
        let all = parse_list("1-65535").unwrap();
        assert_eq!(all.len(), 65535);
        assert_eq!(all, PortSet::all());
        assert!(!all.contains(0));
    }

    #[test]
    fn bad_lists_name_the_bad_item() {
        for (list, needle) in [
            ("0", "port 0 is out of range"),
            ("65536", "port 65536 is out of range"),
            ("99999999999", "port 99999999999 is out of range"),
            ("10-5", "range '10-5' runs backwards"),
            ("abc", "'abc' is not a port number"),
            ("", "the list is empty"),
            ("  ", "the list is empty"),
            ("1,,2", "two commas with nothing between them"),
            ("1, ,2", "two commas with nothing between them"),
            ("1,", "the list ends with a comma"),
            (",1", "the list starts with a comma"),
            ("-5", "'-5' is not a port"),
            ("5-", "'' is not a port number"),
            ("1-2-3", "'2-3' is not a port number"),
            ("+5", "'+5' is not a port number"),
            ("0x10", "'0x10' is not a port number"),
            (
                &"9".repeat(100_000),
                "port 9999999999999999999999999999999999999999... (100000 bytes) is out of range",
            ),
            (
                &format!("1,{}", "x".repeat(100_000)),
                "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... (100000 bytes)' is not a port",
            ),
        ] {
            let err = parse_list(list).unwrap_err();
            assert!(err.contains(needle), "{list:?}: {err}");
        }
    }

    #[test]
    fn set_operations() {
        let mut a = parse_list("1-10").unwrap();
        a.subtract(&parse_list("3-4").unwrap());
        assert_eq!(a.iter().collect::<Vec<_>>(), [1, 2, 5, 6, 7, 8, 9, 10]);
        a.intersect_with(&parse_list("2,5,11").unwrap());
        assert_eq!(a.iter().collect::<Vec<_>>(), [2, 5]);
        a.union_with(&parse_list("65535").unwrap());
        assert_eq!(a.len(), 3);
        assert!(a.contains(65535) && !a.contains(1));
        assert!(PortSet::new().is_empty());
        // A set that held ports and lost them equals one that never held any.
        let mut emptied = parse_list("7").unwrap();
        emptied.remove(7);
        assert_eq!(emptied, PortSet::new());
        assert!(!PortSet::new().contains(7));
        let mut none = PortSet::new();
        none.intersect_with(&PortSet::all());
        none.subtract(&PortSet::all());
        assert!(none.is_empty() && none.iter().next().is_none());
        none.union_with(&parse_list("1-3").unwrap());
        assert_eq!(none.len(), 3);
        none.intersect_with(&PortSet::new());
        assert!(none.is_empty());
        assert_eq!(format!("{a:?}"), "{2, 5, 65535}");
    }
}
