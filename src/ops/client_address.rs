//! Who is asking: the address of the client behind a request. Behind a load balancer every peer is
//! the proxy, so `GRANITE_TRUSTED_PROXIES` names the proxies (CIDRs) whose `X-Forwarded-For` is
//! believed; from anyone else the header is ignored (any client can send it). The address recorded
//! for last use, the audit log, sign-in throttling and enrollment all come from here.

use std::net::IpAddr;
use std::str::FromStr;

use actix_web::{HttpRequest, web};

use crate::config::Settings;

/// A network, `10.0.0.0/8` or a single address (`192.0.2.7`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (address, prefix) = text.split_once('/').unwrap_or((text, ""));
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an address or network (e.g. 10.0.0.0/8)"))?;
        let most = if network.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            most
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= most)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0 to {most}"))?
        };
        Ok(Self { network, prefix })
    }
}

/// The proxies whose forwarding is believed (none by default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }
}

/// `GRANITE_TRUSTED_PROXIES`: networks separated by commas.
pub fn parse_trusted(text: &str) -> Result<TrustedProxies, String> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map(TrustedProxies)
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the nearest address in
/// `X-Forwarded-For` that is not a trusted proxy itself (read from the right: proxies append).
/// The block one subscriber usually holds: an IPv4 address itself (IPv4-mapped IPv6 included), an
/// IPv6 address's /64. What per-client limits count by, so a client cannot dodge them by hopping
/// through its own addresses.
pub fn subscriber_block(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

pub fn client_ip(req: &HttpRequest) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    let Some(settings) = req.app_data::<web::Data<Settings>>() else {
        return Some(peer);
    };
    let is_trusted = |ip: IpAddr| settings.trusted_proxies.contains(ip);
    if !is_trusted(peer) {
        return Some(peer);
    }
    // Split the raw bytes: one piece that is not text (a client may send anything, and proxies
    // append to what it sent) must not cost the pieces the proxies added after it.
    let forwarded: Vec<&[u8]> = req
        .headers()
        .get_all("x-forwarded-for")
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .collect();
    // Each trusted hop vouches for the address to its left; an entry that is not an address ends
    // what can be believed, and the nearest trusted hop is all that is known.
    let mut nearest = peer;
    for part in forwarded.iter().rev() {
        let Some(ip) = std::str::from_utf8(part)
            .ok()
            .and_then(|text| text.trim().parse::<IpAddr>().ok())
        else {
            break;
        };
        nearest = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    Some(nearest)
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_subscriber_is_an_ipv4_address_or_an_ipv6_64() {
        assert_eq!(subscriber_block(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(
            subscriber_block(ip("::ffff:203.0.113.7")),
            ip("203.0.113.7")
        );
        assert_eq!(
            subscriber_block(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(
            subscriber_block(ip("2001:db8:1:2::1")),
            subscriber_block(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn networks_parse_and_contain() {
        let nets = parse_trusted("10.0.0.0/8, 192.0.2.7,fd00::/8").unwrap().0;
        assert!(nets[0].contains(ip("10.200.1.1")) && !nets[0].contains(ip("11.0.0.1")));
        assert!(nets[1].contains(ip("192.0.2.7")) && !nets[1].contains(ip("192.0.2.8")));
        assert!(nets[2].contains(ip("fd12::1")) && !nets[2].contains(ip("fe80::1")));
        assert!(
            nets[0].contains(ip("::ffff:10.1.2.3")),
            "IPv4 seen through IPv6"
        );
        assert!(parse_trusted("10.0.0.0/33").is_err());
        assert!(parse_trusted("proxy.internal").is_err());
        assert_eq!(parse_trusted("").unwrap(), TrustedProxies::default());
    }

    fn trusting(trusted: &str) -> web::Data<Settings> {
        let mut settings = Settings::new(
            crate::db::DatabaseUrl::parse("sqlite://x.db").unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        );
        settings.trusted_proxies = parse_trusted(trusted).unwrap();
        web::Data::new(settings)
    }

    fn with(trusted: &str, peer: &str, forwarded: Option<&str>) -> Option<IpAddr> {
        let mut request = TestRequest::default()
            .peer_addr(format!("{peer}:5000").parse().unwrap())
            .app_data(trusting(trusted));
        if let Some(forwarded) = forwarded {
            request = request.insert_header(("X-Forwarded-For", forwarded));
        }
        client_ip(&request.to_http_request())
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        // Nobody trusted: the header is anyone's to forge.
        assert_eq!(
            with("", "203.0.113.9", Some("1.2.3.4")),
            Some(ip("203.0.113.9"))
        );
        // From a trusted proxy: the nearest untrusted address, from the right.
        assert_eq!(
            with(
                "10.0.0.0/8",
                "10.0.0.2",
                Some("6.6.6.6, 198.51.100.4, 10.0.0.9")
            ),
            Some(ip("198.51.100.4"))
        );
        // Not from a trusted peer: ignored even if it names one.
        assert_eq!(
            with("10.0.0.0/8", "198.51.100.4", Some("10.0.0.1")),
            Some(ip("198.51.100.4"))
        );
        // A trusted proxy with no (or only trusted) forwarding: the proxy itself.
        assert_eq!(with("10.0.0.0/8", "10.0.0.2", None), Some(ip("10.0.0.2")));
        // Garbage ends the walk: what stood to its right still counts, nothing to its left.
        assert_eq!(
            with("10.0.0.0/8", "10.0.0.2", Some("not-an-ip, 198.51.100.4")),
            Some(ip("198.51.100.4"))
        );
        assert_eq!(
            with(
                "10.0.0.0/8",
                "10.0.0.2",
                Some("198.51.100.4, not-an-ip, 10.0.0.7")
            ),
            Some(ip("10.0.0.7"))
        );
        // Bytes that are not text in the client's part do not hide what the proxy appended.
        let request = TestRequest::default()
            .peer_addr("10.0.0.2:5000".parse().unwrap())
            .app_data(trusting("10.0.0.0/8"))
            .insert_header((
                "X-Forwarded-For",
                actix_web::http::header::HeaderValue::from_bytes(b"\xff\xfe, 198.51.100.4")
                    .unwrap(),
            ))
            .to_http_request();
        assert_eq!(client_ip(&request), Some(ip("198.51.100.4")));
    }
}
