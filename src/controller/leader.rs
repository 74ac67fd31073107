//! Lease-based leader election (`coordination.k8s.io/v1`), after client-go's: a candidate
//! takes the Lease when its holder has not renewed it for `leaseDurationSeconds` of the
//! candidate's own clock (never comparing clocks across machines), and every write is a
//! `replace` with the observed `resourceVersion`, so two candidates cannot both win.
//! kube 5 has no leader election of its own.
//!
//! Pure core: [`decide`] (Lease record × this candidate's clock → [`Decision`]); the
//! [`Elector`] around it reads and writes the Lease and waits a fixed `retry_period` between
//! attempts, as client-go does (no backoff: a candidate must try at least once per period to
//! take over in time).
//!
//! May use: [`crate::Result`]; nothing else of the crate.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

use crate::Result;

/// Timing of the election.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A holder that has not renewed for this long may be replaced.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down (less than the duration,
    /// so it stops acting before anyone may take over).
    pub renew_deadline: Duration,
    /// Pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Timing {
    /// client-go's proportions: renew deadline 2/3 and retry period 1/5 of the duration.
    pub fn from_lease_duration(lease_duration: Duration) -> Self {
        Self {
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: lease_duration / 5,
        }
    }
}

/// What a candidate does after reading the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it holding it.
    Create,
    /// Someone else holds a live Lease: wait.
    Wait,
    /// Take the Lease over (free, released or expired).
    Take,
    /// We hold it: renew.
    Renew,
}

/// The decision for `me`, given the Lease's holder and when this candidate last saw the
/// Lease's record change.
pub fn decide(
    me: &str,
    lease: Option<&LeaseSpec>,
    last_change: Instant,
    now: Instant,
    lease_duration: Duration,
) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == me => Decision::Renew,
        None | Some("") => Decision::Take,
        Some(_) if now.duration_since(last_change) >= lease_duration => Decision::Take,
        Some(_) => Decision::Wait,
    }
}

/// A candidate for the Lease `name`.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    /// The Lease's record as last seen, and when this candidate first saw it that way.
    observed: Option<(LeaseSpec, Instant)>,
}

impl Elector {
    /// A candidate called `identity` for the Lease `api`/`name`.
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timing: Timing) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing,
            observed: None,
        }
    }

    /// One attempt to acquire or renew; `true` when we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let duration_secs = i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(15);
        let mine = |acquire: MicroTime, transitions: i32| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(duration_secs),
            acquire_time: Some(acquire),
            renew_time: Some(now.clone()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        };
        let current = self.api.get_opt(&self.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.clone());
        let record_changed = match (&self.observed, &spec) {
            (Some((seen, _)), Some(spec)) => seen != spec,
            _ => true,
        };
        if record_changed {
            self.observed = spec.clone().map(|s| (s, Instant::now()));
        }
        let last_change = self
            .observed
            .as_ref()
            .map_or_else(Instant::now, |(_, at)| *at);
        let decision = decide(
            &self.identity,
            spec.as_ref(),
            last_change,
            Instant::now(),
            self.timing.lease_duration,
        );
        let result = match (decision, current) {
            (Decision::Wait, _) => return Ok(false),
            (Decision::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(mine(now.clone(), 0)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (decision, Some(mut lease)) => {
                let old = lease.spec.clone().unwrap_or_default();
                let transitions = old.lease_transitions.unwrap_or(0);
                lease.spec = Some(if decision == Decision::Renew {
                    mine(old.acquire_time.unwrap_or(now.clone()), transitions)
                } else {
                    mine(now.clone(), transitions.saturating_add(1))
                });
                // NB: `replace` carries the resourceVersion we read: a concurrent writer
                // makes this fail with 409 instead of both of us winning.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(lease) => {
                if let Some(spec) = lease.spec {
                    self.observed = Some((spec, Instant::now()));
                }
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "acquiring the leader lease"),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews the Lease until renewal fails for `renew_deadline` (then sends `false` on
    /// `leading` and returns) or `leading` has no receivers left.
    pub async fn keep_renewing(&mut self, leading: watch::Sender<bool>) {
        let mut last_renew = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.timing.retry_period) => {}
                () = leading.closed() => return,
            }
            let attempt =
                tokio::time::timeout(self.timing.renew_deadline, self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(true)) => last_renew = Instant::now(),
                Ok(Ok(false)) => {
                    tracing::warn!("the leader lease was taken by another instance");
                    let _ = leading.send(false);
                    return;
                }
                Ok(Err(error)) => tracing::warn!(%error, "renewing the leader lease"),
                Err(_) => tracing::warn!("renewing the leader lease timed out"),
            }
            if last_renew.elapsed() >= self.timing.renew_deadline {
                tracing::warn!("could not renew the leader lease in time; stepping down");
                let _ = leading.send(false);
                return;
            }
        }
    }

    /// Gives the Lease up so a standby takes over at once (on graceful shutdown).
    pub async fn release(&mut self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let held = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.identity.as_str());
        if !held {
            return Ok(());
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
        }
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_missing_lease_is_created_and_a_free_one_taken() {
        let t = Instant::now();
        let d = Duration::from_secs(15);
        assert_eq!(decide("a", None, t, t, d), Decision::Create);
        assert_eq!(
            decide("a", Some(&LeaseSpec::default()), t, t, d),
            Decision::Take
        );
    }

    #[test]
    fn a_live_lease_of_another_is_respected_until_it_stops_changing_for_the_duration() {
        let t = Instant::now();
        let d = Duration::from_secs(15);
        let lease = held_by("b");
        assert_eq!(
            decide("a", Some(&lease), t, t + Duration::from_secs(14), d),
            Decision::Wait
        );
        assert_eq!(decide("a", Some(&lease), t, t + d, d), Decision::Take);
        assert_eq!(decide("b", Some(&lease), t, t + d * 10, d), Decision::Renew);
    }

    #[test]
    fn timing_steps_down_before_anyone_may_take_over() {
        let timing = Timing::from_lease_duration(Duration::from_secs(15));
        assert!(timing.renew_deadline < timing.lease_duration);
        assert!(timing.retry_period < timing.renew_deadline);
    }

    #[test]
    fn attempts_are_retried_at_the_fixed_retry_period() {
        let timing = Timing::from_lease_duration(Duration::from_secs(15));
        assert_eq!(timing.retry_period, Duration::from_secs(3));
    }
}
