//! The deny log's Prometheus metrics: `nftpolicy_denials_total{direction,verdict}` and
//! `nftpolicy_deny_log_lost_total{reason}`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::Verdict;
use policy_compiler::model::Direction;

/// Labels of the denials counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    /// `ingress` or `egress`.
    pub direction: String,
    /// `deny` or `would_deny`.
    pub verdict: String,
}

/// Labels of the lost messages counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LostLabels {
    /// See [`LostReason`].
    pub reason: String,
}

/// Why a logged packet is not (fully) a denial record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostReason {
    /// The kernel dropped the message: the socket's receive buffer was full.
    Overrun,
    /// The message or the packet's headers cannot be read.
    Malformed,
    /// The prefix names no drop point of the ruleset in force: recorded with its policies unknown.
    UnknownPrefix,
}

impl LostReason {
    /// Every reason.
    pub const ALL: [LostReason; 3] = [Self::Overrun, Self::Malformed, Self::UnknownPrefix];

    /// The label value: `overrun`, `malformed`, `unknown_prefix`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Overrun => "overrun",
            Self::Malformed => "malformed",
            Self::UnknownPrefix => "unknown_prefix",
        }
    }
}

/// The counters, shared (each handle counts into the same series).
#[derive(Clone, Debug, Default)]
pub struct DenialMetrics {
    /// Denials recorded whose drop point is known, by direction and verdict.
    pub denials: Family<DenialLabels, Counter>,
    /// Log messages lost or not understood, by reason.
    pub lost: Family<LostLabels, Counter>,
}

impl DenialMetrics {
    /// Registers both counters, every direction, verdict and lost reason from zero (so that each
    /// series exists before its first count).
    pub fn register(&self, registry: &mut Registry) {
        for direction in Direction::BOTH {
            for verdict in [Verdict::Deny, Verdict::WouldDeny] {
                drop(self.denials.get_or_create(&DenialLabels {
                    direction: direction.as_str().to_string(),
                    verdict: verdict.as_str().to_string(),
                }));
            }
        }
        registry.register(
            "denials",
            "Denials logged through NFLOG and recorded, by direction and verdict (deny, or would_deny for audited policies)",
            self.denials.clone(),
        );
        for reason in LostReason::ALL {
            drop(self.lost.get_or_create(&LostLabels {
                reason: reason.as_str().to_string(),
            }));
        }
        registry.register(
            "deny_log_lost",
            "Deny log messages lost (overrun: dropped by the kernel for want of buffer; malformed: unreadable) or not understood (unknown_prefix: recorded without policies)",
            self.lost.clone(),
        );
    }

    /// Counts one denial.
    pub fn denial(&self, direction: &str, verdict: &str) {
        self.denials
            .get_or_create(&DenialLabels {
                direction: direction.to_string(),
                verdict: verdict.to_string(),
            })
            .inc();
    }

    /// Counts `n` messages lost for `reason`.
    pub fn lost(&self, reason: LostReason, n: u64) {
        self.lost
            .get_or_create(&LostLabels {
                reason: reason.as_str().to_string(),
            })
            .inc_by(n);
    }

    /// The count of `reason` so far.
    pub fn lost_count(&self, reason: LostReason) -> u64 {
        self.lost
            .get(&LostLabels {
                reason: reason.as_str().to_string(),
            })
            .map_or(0, |c| c.get())
    }

    /// The count of denials with `direction` and `verdict` so far.
    pub fn denial_count(&self, direction: &str, verdict: &str) -> u64 {
        self.denials
            .get(&DenialLabels {
                direction: direction.to_string(),
                verdict: verdict.to_string(),
            })
            .map_or(0, |c| c.get())
    }
}
