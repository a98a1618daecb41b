//! Claims in flight: a machine asks for one run at a time. A second claim of the same machine while
//! the first still waits (a driver bug, or one credential used twice) is answered 409
//! `claim_in_progress` at once, before it touches anything, instead of racing the first for the
//! machine. Kept per server in memory (a claim is one request); across replicas the claim itself
//! checks that the machine holds no run, and a run just handed out is never taken back by another
//! claim ([`super::leases::release_before_claim`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct ClaimsInFlight {
    machines: Mutex<HashSet<i64>>,
}

/// The machine's claim; the machine may claim again once this is dropped.
pub struct Claiming {
    claims: Arc<ClaimsInFlight>,
    machine_id: i64,
}

impl ClaimsInFlight {
    /// The machine's claim, or `None` while it already has one in flight.
    pub fn begin(claims: &Arc<Self>, machine_id: i64) -> Option<Claiming> {
        let mut machines = claims.machines.lock().unwrap_or_else(|e| e.into_inner());
        machines.insert(machine_id).then(|| Claiming {
            claims: claims.clone(),
            machine_id,
        })
    }
}

impl Drop for Claiming {
    fn drop(&mut self) {
        let mut machines = self
            .claims
            .machines
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        machines.remove(&self.machine_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_per_machine_until_it_ends() {
        let claims = Arc::new(ClaimsInFlight::default());
        let first = ClaimsInFlight::begin(&claims, 7).expect("the first claim");
        assert!(
            ClaimsInFlight::begin(&claims, 7).is_none(),
            "a second waits its turn"
        );
        let other = ClaimsInFlight::begin(&claims, 8);
        assert!(other.is_some(), "other machines are not held up");
        drop(first);
        assert!(ClaimsInFlight::begin(&claims, 7).is_some(), "free again");
    }
}
