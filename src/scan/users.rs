//! User names of socket owners, through the system's user database (NSS:
//! /etc/passwd, LDAP, systemd's dynamic users, ...), as `ls -l` finds them.

/// The name of each uid of `uids`, or the number when no name resolves:
/// `(uid, name)` in the order given (sorted, when `uids` is).
pub(super) fn names(uids: &[u32]) -> Vec<(u32, String)> {
    let name = |uid| match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    };
    uids.iter().map(|&uid| (uid, name(uid))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_a_name_and_an_unknown_uid_its_number() {
        assert_eq!(
            names(&[0, 4_000_000_123]),
            [
                (0, "root".to_string()),
                (4_000_000_123, "4000000123".to_string())
            ]
        );
    }
}
