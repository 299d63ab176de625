use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pool(max_connections: usize, max_unauthenticated: usize, per_ip: usize) -> Arc<Admission> {
    Arc::new(Admission::new(
        max_connections,
        max_unauthenticated,
        per_ip,
        TrustedProxies::parse("10.9.9.9").unwrap(),
    ))
}

async fn admit(a: &Arc<Admission>, from: &str) -> Result<(Ticket, CancellationToken), Refusal> {
    let slot = a.slot().await;
    a.admit(slot, ip(from))
}

#[tokio::test]
async fn a_flooding_address_gives_way_to_others_oldest_first() {
    let a = pool(100, 3, 0);
    let mut flood = Vec::new();
    for _ in 0..3 {
        flood.push(admit(&a, "192.0.2.1").await.unwrap());
    }
    // Full: the flooder itself is refused, and loses nothing.
    assert_eq!(
        admit(&a, "192.0.2.1").await.err(),
        Some(Refusal::UnauthenticatedCap)
    );
    assert!(flood.iter().all(|(_, t)| !t.is_cancelled()));
    // Another address takes the flooder's oldest place.
    let (mut other, _) = admit(&a, "198.51.100.7").await.unwrap();
    assert!(flood[0].1.is_cancelled());
    assert!(!flood[1].1.is_cancelled() && !flood[2].1.is_cancelled());
    // 2 against 1: a third address may evict again, but a tie refuses.
    let (_third, _) = admit(&a, "203.0.113.3").await.unwrap();
    assert!(flood[1].1.is_cancelled());
    assert_eq!(
        admit(&a, "203.0.113.4").await.err(),
        Some(Refusal::UnauthenticatedCap)
    );
    // Authenticating leaves the pool and makes room.
    other.authenticated();
    assert!(admit(&a, "203.0.113.4").await.is_ok());
}

#[tokio::test]
async fn slots_and_places_come_back_when_tickets_drop() {
    let a = pool(2, 2, 0);
    let (mut first, _) = admit(&a, "192.0.2.1").await.unwrap();
    let second = admit(&a, "192.0.2.1").await.unwrap();
    first.authenticated();
    assert_eq!(a.slots.available_permits(), 0);
    drop(second);
    assert_eq!(a.slots.available_permits(), 1);
    drop(first);
    assert_eq!(a.slots.available_permits(), 2);
    let state = a.state.lock().unwrap();
    assert_eq!(state.pending_len, 0);
    assert!(state.pending.is_empty() && state.ranking.is_empty());
}

#[tokio::test]
async fn per_ip_cap_counts_every_connection_of_an_address() {
    let a = pool(100, 100, 2);
    let (mut one, _) = admit(&a, "192.0.2.1").await.unwrap();
    one.authenticated();
    let two = admit(&a, "192.0.2.1").await.unwrap();
    assert_eq!(admit(&a, "192.0.2.1").await.err(), Some(Refusal::PerIpCap));
    assert!(admit(&a, "192.0.2.2").await.is_ok());
    drop(two);
    assert!(admit(&a, "192.0.2.1").await.is_ok());
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_counts() {
    let a = pool(100, 100, 1);
    // The proxy's own address is not capped…
    let (mut p1, _) = admit(&a, "10.9.9.9").await.unwrap();
    let (mut p2, _) = admit(&a, "10.9.9.9").await.unwrap();
    let (mut p3, _) = admit(&a, "10.9.9.9").await.unwrap();
    // …the clients behind it are.
    assert!(p1.forwarded_for(ip("203.0.113.5")).is_ok());
    assert_eq!(p2.forwarded_for(ip("203.0.113.5")), Err(Refusal::PerIpCap));
    assert!(p3.forwarded_for(ip("203.0.113.6")).is_ok());
    drop(p2);
    drop(p1);
    let (mut p4, _) = admit(&a, "10.9.9.9").await.unwrap();
    assert!(p4.forwarded_for(ip("203.0.113.5")).is_ok());
    let state = a.state.lock().unwrap();
    assert_eq!(
        state.pending.get(&ip("203.0.113.5")).map(|m| m.len()),
        Some(1)
    );
    assert_eq!(state.pending_len, 2);
}
