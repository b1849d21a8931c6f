//! The forms a value the user gives must have, checked the same way whether it comes from a flag
//! or from the config file: these values go into OpenSSH configurations and AWS calls as they
//! are, so each is held to a narrow form and anything else is refused, shown escaped.

/// A value that goes into an OpenSSH configuration or an AWS call as it is: printable, no
/// spaces or quotes, at most `max` characters, of `allowed` characters.
pub fn plain(s: &str, what: &str, max: usize, allowed: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || allowed.contains(c));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("'{}' is not {what}", s.escape_debug()))
    }
}

/// An AWS profile name (as ~/.aws/config allows them, without spaces).
pub fn parse_profile(s: &str) -> Result<String, String> {
    plain(s, "an AWS profile name", 128, "-_.@+=,/")
}

/// An AWS region name such as eu-west-1.
pub fn parse_region(s: &str) -> Result<String, String> {
    let ok = s.len() <= 32
        && s.split('-').count() >= 3
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "'{}' is not an AWS region such as eu-west-1",
            s.escape_debug()
        ))
    }
}

/// An EC2 instance type such as t3.medium.
pub fn parse_instance_type(s: &str) -> Result<String, String> {
    plain(s, "an EC2 instance type such as t3.medium", 32, ".-")
}

/// A login name (as OpenSSH's `User` takes one).
pub fn parse_login(s: &str) -> Result<String, String> {
    let r = plain(s, "a login name", 32, "._-")?;
    if r.starts_with('-') {
        return Err(format!("'{s}' is not a login name"));
    }
    Ok(r)
}

/// `HOST`, `HOST:PORT` or `[V6]:PORT`.
pub fn parse_address(s: &str) -> Result<String, String> {
    let r = plain(s, "an address (HOST or HOST:PORT)", 255, ".-:[]")?;
    if r.starts_with('-') {
        return Err(format!("'{s}' is not an address"));
    }
    Ok(r)
}

/// A path that can stand in an OpenSSH configuration: no control characters, no quotes.
pub fn parse_path_text(s: &str) -> Result<String, String> {
    if s.is_empty() || s.chars().any(|c| c.is_control() || c == '"') {
        return Err(format!(
            "'{}' is not a usable path (no control characters or quotes)",
            s.escape_debug()
        ));
    }
    Ok(s.to_string())
}

/// A ParallelCluster cluster name: a letter, then letters, digits and hyphens (max 60).
pub fn parse_cluster_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 60
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "'{s}' is not a ParallelCluster cluster name (a letter, then letters, digits and hyphens, at most 60)"
        ))
    }
}

/// `host`, `host:port`, `[v6]:port` -> (host, port); the port defaults to 22.
pub fn split_address(a: &str) -> (String, u16) {
    if let Some(rest) = a.strip_prefix('[')
        && let Some((host, tail)) = rest.split_once(']')
    {
        let port = tail
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(22);
        return (host.to_string(), port);
    }
    match a.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (host.to_string(), p),
            Err(_) => (a.to_string(), 22),
        },
        _ => (a.to_string(), 22),
    }
}

#[cfg(test)]
mod tests {
    use super::split_address;

    #[test]
    fn addresses_take_an_optional_port() {
        assert_eq!(split_address("10.0.0.1"), ("10.0.0.1".into(), 22));
        assert_eq!(
            split_address("vpn.example.org:2222"),
            ("vpn.example.org".into(), 2222)
        );
        assert_eq!(split_address("[fd00::1]:2200"), ("fd00::1".into(), 2200));
        assert_eq!(split_address("fd00::1"), ("fd00::1".into(), 22));
    }
}
