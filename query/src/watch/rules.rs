//! Watches as typed values: what is watched and the rule that raises an
//! alert, checked field by field when a caller puts one.

use satflow_indexer::labels::Category;
use satflow_indexer::Network;
use satflow_proto::v1 as pb;
use satflow_schema::script::AddrKey;
use satflow_schema::ClusterId;

use crate::args::{self, invalid};
use crate::error::Result;
use crate::patterns::Kind;

/// The longest exposure path, in transactions: each hop multiplies the
/// transactions a search reads.
pub const MAX_HOPS: u32 = 6;
const MAX_NAME: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    Address(AddrKey),
    /// A cluster, by the address number it was named with: its cluster is
    /// looked up again at each block, so the watch follows merges.
    Cluster(ClusterId),
    Label(String),
    Category(Category),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    AnyActivity,
    IncomingAbove(u64),
    Exposure {
        category: Category,
        max_hops: u32,
        /// The subject is paid with coins from the category.
        from_category: bool,
        /// The category is paid with coins from the subject.
        to_category: bool,
    },
    /// A pattern of this kind involving the subject.
    Pattern(Kind),
}

#[derive(Clone, Debug)]
pub struct Watch {
    pub subject: Subject,
    pub rule: Rule,
    /// As the caller put it, for the alerts.
    pub message: pb::Watch,
}

pub fn parse(w: &pb::Watch, network: Network) -> Result<Watch> {
    use pb::watch::{Rule as R, Subject as S};
    let name = &w.name;
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(invalid(
            "name",
            format!("{name:?}: 1 to {MAX_NAME} printable characters"),
        ));
    }
    let subject = match &w.subject {
        Some(S::Address(a)) => Subject::Address(args::address("address", a, network)?),
        Some(S::ClusterId(c)) => Subject::Cluster(ClusterId(*c)),
        Some(S::Label(l)) if l.trim().is_empty() => return Err(invalid("label", "is empty")),
        Some(S::Label(l)) => Subject::Label(l.clone()),
        Some(S::Category(c)) => Subject::Category(args::category("category", c)?),
        None => {
            return Err(invalid(
                "subject",
                "set one of address, cluster_id, label or category",
            ))
        }
    };
    let rule = match &w.rule {
        Some(R::AnyActivity(_)) => Rule::AnyActivity,
        Some(R::IncomingAbove(0)) => {
            return Err(invalid(
                "incoming_above",
                "must be at least 1 satoshi (any_activity watches every payment)",
            ))
        }
        Some(R::IncomingAbove(v)) => Rule::IncomingAbove(*v),
        Some(R::Exposure(e)) => {
            if !(1..=MAX_HOPS).contains(&e.max_hops) {
                return Err(invalid(
                    "exposure.max_hops",
                    format!("{} is not between 1 and {MAX_HOPS}", e.max_hops),
                ));
            }
            let (from_category, to_category) = match pb::ExposureDirection::try_from(e.direction) {
                Ok(pb::ExposureDirection::ExposureEither) => (true, true),
                Ok(pb::ExposureDirection::ExposureFromCategory) => (true, false),
                Ok(pb::ExposureDirection::ExposureToCategory) => (false, true),
                Err(_) => {
                    return Err(invalid(
                        "exposure.direction",
                        format!("{} is no direction", e.direction),
                    ))
                }
            };
            Rule::Exposure {
                category: args::category("exposure.category", &e.category)?,
                max_hops: e.max_hops,
                from_category,
                to_category,
            }
        }
        Some(R::Pattern(p)) => {
            Rule::Pattern(p.kind.parse().map_err(|e| invalid("pattern.kind", e))?)
        }
        None => {
            return Err(invalid(
                "rule",
                "set one of any_activity, incoming_above, exposure or pattern",
            ))
        }
    };
    Ok(Watch {
        subject,
        rule,
        message: w.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::watch::{Rule as R, Subject as S};

    fn watch(subject: S, rule: R) -> pb::Watch {
        pb::Watch {
            name: "w".into(),
            subject: Some(subject),
            rule: Some(rule),
        }
    }

    fn field_at_fault(w: pb::Watch) -> String {
        let e = parse(&w, Network::Main).unwrap_err().to_string();
        e.split(':').next().unwrap().to_string()
    }

    #[test]
    fn each_bad_field_is_named() {
        let any = || R::AnyActivity(pb::AnyActivity {});
        let exposure = |category: &str, max_hops, direction| {
            R::Exposure(pb::ExposureRule {
                category: category.into(),
                max_hops,
                direction,
            })
        };
        let ok = watch(S::Category("sanctioned".into()), any());
        assert_eq!(
            parse(&ok, Network::Main).unwrap().subject,
            Subject::Category(Category::Sanctioned)
        );
        let cases = [
            (
                pb::Watch {
                    name: String::new(),
                    ..ok.clone()
                },
                "name",
            ),
            (
                pb::Watch {
                    name: "a\nb".into(),
                    ..ok.clone()
                },
                "name",
            ),
            (
                pb::Watch {
                    subject: None,
                    ..ok.clone()
                },
                "subject",
            ),
            (
                pb::Watch {
                    rule: None,
                    ..ok.clone()
                },
                "rule",
            ),
            (watch(S::Address("tb1qxyz".into()), any()), "address"),
            (watch(S::Category("bank".into()), any()), "category"),
            (watch(S::Label(" ".into()), any()), "label"),
            (
                watch(S::ClusterId(3), R::IncomingAbove(0)),
                "incoming_above",
            ),
            (
                watch(S::ClusterId(3), exposure("exchange", 0, 0)),
                "exposure.max_hops",
            ),
            (
                watch(S::ClusterId(3), exposure("exchange", 7, 0)),
                "exposure.max_hops",
            ),
            (
                watch(S::ClusterId(3), exposure("bank", 2, 0)),
                "exposure.category",
            ),
            (
                watch(S::ClusterId(3), exposure("exchange", 2, 9)),
                "exposure.direction",
            ),
            (
                watch(
                    S::ClusterId(3),
                    R::Pattern(pb::PatternRule {
                        kind: "smurfing".into(),
                    }),
                ),
                "pattern.kind",
            ),
        ];
        for (w, field) in cases {
            assert_eq!(field_at_fault(w.clone()), field, "{w:?}");
        }
        let w = parse(
            &watch(S::ClusterId(3), exposure("exchange", 6, 2)),
            Network::Main,
        )
        .unwrap();
        assert_eq!(
            w.rule,
            Rule::Exposure {
                category: Category::Exchange,
                max_hops: 6,
                from_category: false,
                to_category: true
            }
        );
    }
}
