//! Port lists (`20000-20099`, `8080`, `8080,8081,9000-9009`) and the loopback-only address
//! check shared by the subcommands.

use std::net::IpAddr;

/// Most ports one list may name; a fleet thread holds one listener per port.
pub const MAX_PORTS: usize = 10_000;

/// Parses a comma-separated list of ports and inclusive ranges, keeping the given order.
///
/// Port 0 (an ephemeral port chosen by the kernel) is allowed only alone, for tests.
pub fn parse_ports(spec: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (parse_port(a)?, parse_port(b)?),
            None => {
                let p = parse_port(part)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(format!("port range {part:?} is backwards"));
        }
        if ports.len() + usize::from(hi - lo) + 1 > MAX_PORTS {
            return Err(format!("more than {MAX_PORTS} ports in {spec:?}"));
        }
        ports.extend(lo..=hi);
    }
    if ports.is_empty() {
        return Err(format!("no ports in {spec:?}"));
    }
    if ports.len() > 1 && ports.contains(&0) {
        return Err("port 0 (ephemeral) must be the only port".into());
    }
    Ok(ports)
}

fn parse_port(s: &str) -> Result<u16, String> {
    s.trim()
        .parse::<u16>()
        .map_err(|_| format!("bad port {s:?} (want 0-65535)"))
}

/// Parses an address and refuses anything outside 127.0.0.0/8.
///
/// The fleet and the generated configs are for loading this machine; binding a routable
/// address by mistake would expose `/hang` and `/bytes/N` to the network.
pub fn parse_loopback(s: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = s
        .trim()
        .parse()
        .map_err(|_| format!("bad IPv4 address {s:?}"))?;
    match ip {
        IpAddr::V4(v4) if v4.octets()[0] == 127 => Ok(ip),
        _ => Err(format!(
            "refusing to bind {ip}: only 127.0.0.0/8 addresses are allowed"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(
            parse_ports("20000-20002").unwrap(),
            vec![20000, 20001, 20002]
        );
        assert_eq!(parse_ports("80, 90-91").unwrap(), vec![80, 90, 91]);
        assert_eq!(parse_ports("0").unwrap(), vec![0]);
        assert!(parse_ports("0,1").is_err());
        assert!(parse_ports("5-3").is_err());
        assert!(parse_ports("").is_err());
        assert!(parse_ports("70000").is_err());
        assert!(parse_ports("1-65535").is_err());
    }

    #[test]
    fn loopback_only() {
        assert!(parse_loopback("127.0.0.1").is_ok());
        assert!(parse_loopback("127.3.2.1").is_ok());
        assert!(parse_loopback("0.0.0.0").is_err());
        assert!(parse_loopback("10.0.0.1").is_err());
        assert!(parse_loopback("::1").is_err());
        assert!(parse_loopback("localhost").is_err());
    }
}
