//! Where webhooks may go: the address policy that keeps deliveries (and
//! whoever chooses their URLs) off the hub's own networks.
//!
//! An address is checked where it is used: a URL's literal address before
//! the request, a name's addresses by the resolver the delivery client
//! connects with (so what was checked is what is connected to: no DNS
//! rebinding window), and both when a subscription is made, to refuse it
//! at once with a clear reason.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use ipnet::IpNet;

/// The settings that loosen the policy. The default refuses every
/// non-public address.
#[derive(Debug, Clone, Default)]
pub struct DestinationPolicy {
    /// Any address may be delivered to (loopback, private networks, link-local...).
    /// The hub's own listen addresses stay refused.
    pub allow_private: bool,
    /// Networks delivered to even though they are not public.
    pub allowed: Vec<IpNet>,
}

/// The settings that would let a refused destination through, named in
/// every refusal.
pub const SETTINGS: &str = "--allow-destination CIDR or --allow-private-destinations";

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "destination refused: {detail}; the hub delivers only to public addresses unless allowed ({SETTINGS})"
)]
pub struct Refusal {
    /// What was refused and why (names the address: for the admin's eyes).
    pub detail: String,
}

impl Refusal {
    fn new(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
        }
    }
}

/// What an application is told about a refused delivery: not which
/// address its URL led to, nor why (that would map the hub's network).
pub const GENERIC_REFUSAL: &str = "destination refused by the hub's address policy";

/// The reserved range `ip` falls in, if it is not a public unicast address:
/// IANA's special-purpose registries, with IPv4 inside IPv6 (mapped,
/// compatible, NAT64, 6to4) judged by the IPv4 address it carries.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let range = match (a, b, c) {
        (0, _, _) => "\"this network\" (0.0.0.0/8)",
        (10, _, _) => "private (10.0.0.0/8)",
        (100, 64..=127, _) => "shared address space (100.64.0.0/10, carrier-grade NAT)",
        (127, _, _) => "loopback (127.0.0.0/8)",
        (169, 254, _) => "link-local (169.254.0.0/16, cloud metadata services)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay anycast (192.88.99.0/24)",
        (192, 168, _) => "private (192.168.0.0/16)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "multicast (224.0.0.0/4)",
        (240..=255, _, _) => "reserved (240.0.0.0/4, broadcast)",
        _ => return None,
    };
    Some(range)
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback (::1)");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    let embedded = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0; 6] {
        // IPv4-compatible (deprecated): judged by what it carries.
        return special_v4(embedded).or(Some("IPv4-compatible (::/96, deprecated)"));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return special_v4(embedded);
    }
    if s[0] == 0x2002 {
        let carried = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return special_v4(carried);
    }
    let range = match s[0] {
        0x0064 if s[1] == 0xff9b && s[2] == 1 => "local-use NAT64 (64:ff9b:1::/48)",
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only (100::/64)",
        0x2001 if s[1] == 0 => "Teredo (2001::/32)",
        0x2001 if s[1] == 0x0db8 => "documentation (2001:db8::/32)",
        0x2001 if s[1] < 0x0200 => "IETF protocol assignments (2001::/23)",
        0x3fff if s[1] < 0x1000 => "documentation (3fff::/20)",
        0x5f00 => "segment routing (5f00::/16)",
        x if x & 0xfe00 == 0xfc00 => "unique-local (fc00::/7)",
        x if x & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        x if x & 0xffc0 == 0xfec0 => "site-local (fec0::/10, deprecated)",
        x if x & 0xff00 == 0xff00 => "multicast (ff00::/8)",
        x if x & 0xe000 != 0x2000 => "not global unicast (outside 2000::/3)",
        _ => return None,
    };
    Some(range)
}

/// Whether a host name is one only a private network can answer for:
/// `localhost` and its subdomains (always loopback), the private-use
/// `.internal` (cloud metadata names), mDNS `.local`, `.home.arpa`, and
/// single-label names (completed by the hub's own search domains).
fn private_name(host: &str) -> Option<&'static str> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let ends = |suffix: &str| host == suffix || host.ends_with(&format!(".{suffix}"));
    if ends("localhost") {
        Some("a loopback name")
    } else if ends("internal") || ends("local") || ends("home.arpa") || ends("lan") {
        Some("a private-use name")
    } else if !host.contains('.') {
        Some("a single-label name (resolved by the hub's own search domains)")
    } else {
        None
    }
}

/// The policy in force, with the addresses the hub itself listens on
/// (learnt when its server binds), which are refused whatever the settings.
#[derive(Debug, Default)]
pub struct Destinations {
    policy: RwLock<DestinationPolicy>,
    own: RwLock<Vec<SocketAddr>>,
}

/// How long a subscription's check waits for DNS.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

impl Destinations {
    /// The policy `policy`.
    pub fn new(policy: DestinationPolicy) -> Self {
        Self {
            policy: RwLock::new(policy),
            own: RwLock::default(),
        }
    }

    /// The settings in force.
    pub fn policy(&self) -> DestinationPolicy {
        self.policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Lets deliveries go to any address but the hub's own (what a server
    /// in protected mode, reachable from loopback only, does).
    pub fn allow_private(&self) {
        self.policy
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .allow_private = true;
    }

    /// Refuses `addr` (one the hub listens on) as a destination, so no
    /// subscription makes the hub post to itself.
    pub fn add_own_address(&self, addr: SocketAddr) {
        self.own
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(addr);
    }

    fn is_own(&self, addr: SocketAddr) -> bool {
        let addr = SocketAddr::new(canonical(addr.ip()), addr.port());
        let own = self.own.read().unwrap_or_else(PoisonError::into_inner);
        own.iter().any(|listen| {
            listen.port() == addr.port()
                && (listen.ip() == addr.ip()
                    || (listen.ip().is_unspecified()
                        && (addr.ip().is_loopback() || addr.ip().is_unspecified())))
        })
    }

    /// Checks one address: refused if it is the hub's own, or not public
    /// and not allowed.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = canonical(ip);
        {
            let policy = self.policy.read().unwrap_or_else(PoisonError::into_inner);
            if policy.allow_private || policy.allowed.iter().any(|net| net.contains(&ip)) {
                return Ok(());
            }
        }
        match special_range(ip) {
            Some(range) => Err(Refusal::new(format!("{ip} is {range}"))),
            None => Ok(()),
        }
    }

    /// Checks an address with its port (the hub's own listen addresses are refused too).
    pub fn check_socket(&self, addr: SocketAddr) -> Result<(), Refusal> {
        if self.is_own(addr) {
            return Err(Refusal::new(format!(
                "{addr} is this hub's own listen address (a delivery there would loop)"
            )));
        }
        self.check_ip(addr.ip())
    }

    /// Checks a URL before a request: its literal address, or, for a name,
    /// the names only private networks answer for. The addresses a name
    /// resolves to are checked by [`Destinations::resolver`].
    pub fn check_literal(&self, url: &reqwest::Url) -> Result<(), Refusal> {
        let port = url.port_or_known_default().unwrap_or(80);
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_socket(SocketAddr::new(ip.into(), port)),
            Some(url::Host::Ipv6(ip)) => self.check_socket(SocketAddr::new(ip.into(), port)),
            Some(url::Host::Domain(name)) => self.check_name(name),
            None => Err(Refusal::new("the URL has no host")),
        }
    }

    fn check_name(&self, name: &str) -> Result<(), Refusal> {
        match private_name(name) {
            Some(kind) if !self.policy().allow_private => {
                Err(Refusal::new(format!("{name} is {kind}")))
            }
            _ => Ok(()),
        }
    }

    /// The full check of a subscription's URL: the literal checks, then
    /// every address its name resolves to now, with its port. A name that
    /// does not resolve yet passes (each delivery checks it again).
    pub async fn check_url(&self, url: &reqwest::Url) -> Result<(), Refusal> {
        self.check_literal(url)?;
        let (Some(url::Host::Domain(name)), Some(port)) = (url.host(), url.port_or_known_default())
        else {
            return Ok(());
        };
        let lookup = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, port)));
        let Ok(Ok(addrs)) = lookup.await else {
            return Ok(());
        };
        for addr in addrs {
            self.check_socket(addr).map_err(|refusal| {
                Refusal::new(format!("{name} resolves to {}", refusal.detail))
            })?;
        }
        Ok(())
    }

    /// A resolver for the delivery client: it resolves with the system's
    /// resolver and keeps only the addresses the policy allows, failing
    /// with a [`Refusal`] when none is left.
    pub fn resolver(self: &Arc<Self>) -> Arc<CheckedResolver> {
        Arc::new(CheckedResolver(self.clone()))
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The system's resolver, keeping only the addresses a policy allows.
pub struct CheckedResolver(Arc<Destinations>);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(resolve_allowed(self.0.clone(), name.as_str().to_owned()))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Resolves `name` and keeps the allowed addresses; a [`Refusal`] if none is.
async fn resolve_allowed(
    destinations: Arc<Destinations>,
    name: String,
) -> Result<reqwest::dns::Addrs, BoxError> {
    destinations.check_name(&name)?;
    let mut refused = None;
    let allowed: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
        .await?
        .filter(|addr| match destinations.check_ip(addr.ip()) {
            Ok(()) => true,
            Err(refusal) => {
                refused.get_or_insert(refusal);
                false
            }
        })
        .collect();
    match refused {
        Some(refusal) if allowed.is_empty() => Err(Box::new(Refusal::new(format!(
            "{name} resolves to {}",
            refusal.detail
        )))),
        _ => Ok(Box::new(allowed.into_iter())),
    }
}

/// The [`Refusal`] somewhere in an error's chain of causes, if any.
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return Some(refusal);
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> Destinations {
        Destinations::new(DestinationPolicy::default())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn url(text: &str) -> reqwest::Url {
        reqwest::Url::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn every_reserved_range_is_refused() {
        let refused = [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.0.9",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.5",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "2001:10::1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:101::1",
            "3fff::1",
            "5f00::1",
            "fc00::1",
            "fd00::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "4000::1",
            "1::1",
        ];
        let destinations = strict();
        for text in refused {
            assert!(
                destinations.check_ip(ip(text)).is_err(),
                "{text} was allowed"
            );
        }
    }

    #[test]
    fn public_addresses_pass() {
        let destinations = strict();
        for text in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.0.1.1",
            "192.169.0.1",
            "198.20.0.1",
            "223.255.255.254",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(destinations.check_ip(ip(text)), Ok(()), "{text}");
        }
    }

    #[test]
    fn every_encoding_of_loopback_in_a_url_is_refused() {
        let destinations = strict();
        for text in [
            "http://127.0.0.1:8080/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://127.0.1/",
            "http://0.0.0.0/",
            "http://0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:ffff:127.0.0.1]/",
            "http://localhost/",
            "http://LOCALHOST./",
            "http://api.localhost/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://printer.local/",
            "http://router.home.arpa/",
            "http://metadata/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00::1]/",
            "http://10.0.0.1/",
        ] {
            assert!(
                destinations.check_literal(&url(text)).is_err(),
                "{text} was allowed"
            );
        }
        assert_eq!(
            destinations.check_literal(&url("https://hooks.example.com/x")),
            Ok(())
        );
    }

    #[test]
    fn settings_loosen_and_own_addresses_stay_refused() {
        let allowed = Destinations::new(DestinationPolicy {
            allow_private: false,
            allowed: vec!["127.0.0.0/8".parse().unwrap_or_else(|_| unreachable!())],
        });
        assert_eq!(allowed.check_ip(ip("127.0.0.1")), Ok(()));
        assert!(allowed.check_ip(ip("10.0.0.1")).is_err());
        let open = Destinations::new(DestinationPolicy {
            allow_private: true,
            allowed: Vec::new(),
        });
        assert_eq!(open.check_literal(&url("http://localhost:9/")), Ok(()));
        open.add_own_address("127.0.0.1:3310".parse().unwrap_or_else(|_| unreachable!()));
        assert!(
            open.check_literal(&url("http://127.0.0.1:3310/v1/events"))
                .is_err()
        );
        assert_eq!(open.check_literal(&url("http://127.0.0.1:3311/")), Ok(()));
        let any = Destinations::new(DestinationPolicy {
            allow_private: true,
            allowed: Vec::new(),
        });
        any.add_own_address("0.0.0.0:3310".parse().unwrap_or_else(|_| unreachable!()));
        assert!(any.check_literal(&url("http://127.0.0.2:3310/")).is_err());
        assert!(
            any.check_literal(&url("http://[::ffff:127.0.0.1]:3310/"))
                .is_err()
        );
    }

    #[tokio::test]
    async fn the_resolver_keeps_only_allowed_addresses() {
        let destinations = Arc::new(strict());
        // A name the system resolves to loopback (a literal resolves to itself).
        let refused = resolve_allowed(destinations.clone(), "127.0.0.1".to_owned()).await;
        let error = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("127.0.0.1 is loopback"), "{error}");
        let allowed = resolve_allowed(destinations.clone(), "93.184.216.34".to_owned()).await;
        assert_eq!(allowed.map(Iterator::count).ok(), Some(1));
        // Through the HTTP client: its error carries the refusal.
        let client = reqwest::Client::builder()
            .dns_resolver(destinations.resolver())
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let failed = client.get("http://localhost:9/").send().await;
        let refusal = failed.as_ref().err().and_then(|e| refusal_in(e).cloned());
        assert!(
            refusal.is_some_and(|r| r.detail.contains("localhost is a loopback name")),
            "{failed:?}"
        );
    }
}
