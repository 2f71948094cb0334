//! Label selectors (`matchLabels` and `matchExpressions`) in a compact, validated form.

use std::collections::BTreeMap;
use std::fmt;

/// Labels of a pod or namespace.
pub type Labels = BTreeMap<String, String>;

/// One requirement of a selector; a selector matches when all of its requirements do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Requirement {
    /// `key In (values)`; `matchLabels` entries become `In` with one value.
    In(String, Vec<String>),
    /// `key NotIn (values)`: also matches objects that lack the key.
    NotIn(String, Vec<String>),
    /// `key Exists`.
    Exists(String),
    /// `key DoesNotExist`.
    DoesNotExist(String),
}

impl Requirement {
    /// The label key this requirement is about.
    pub fn key(&self) -> &str {
        match self {
            Requirement::In(k, _)
            | Requirement::NotIn(k, _)
            | Requirement::Exists(k)
            | Requirement::DoesNotExist(k) => k,
        }
    }

    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A label selector; the empty selector matches everything.
///
/// Requirements are kept sorted and deduplicated, so two selectors that mean the same written the same
/// way compare equal (and name the same nftables set).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Builds a selector from requirements (order does not matter).
    pub fn new(mut requirements: Vec<Requirement>) -> Self {
        for r in &mut requirements {
            if let Requirement::In(_, vs) | Requirement::NotIn(_, vs) = r {
                vs.sort();
                vs.dedup();
            }
        }
        requirements.sort();
        requirements.dedup();
        Self { requirements }
    }

    /// A selector of `matchLabels` only.
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self::new(
            labels
                .into_iter()
                .map(|(k, v)| Requirement::In(k.to_string(), vec![v.to_string()]))
                .collect(),
        )
    }

    /// The requirements, sorted.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether this selector matches every object.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The `key=value` pairs when the selector is made of single-value `In` requirements only
    /// (the `matchLabels` form), `None` otherwise.
    pub fn as_match_labels(&self) -> Option<Vec<(&str, &str)>> {
        self.requirements
            .iter()
            .map(|r| match r {
                Requirement::In(k, vs) if vs.len() == 1 => Some((k.as_str(), vs[0].as_str())),
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for LabelSelector {
    /// The selector in `kubectl` syntax: `app=web,tier in (a,b),!legacy`; `{}` selects everything.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.requirements.is_empty() {
            return f.write_str("{}");
        }
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::In(k, vs) if vs.len() == 1 => write!(f, "{k}={}", vs[0])?,
                Requirement::In(k, vs) => write!(f, "{k} in ({})", vs.join(","))?,
                Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(","))?,
                Requirement::Exists(k) => write!(f, "{k}")?,
                Requirement::DoesNotExist(k) => write!(f, "!{k}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn operators_follow_kubernetes_semantics() {
        let web = labels(&[("app", "web")]);
        let none = labels(&[]);
        let vals = || vec!["web".to_string(), "api".to_string()];
        assert!(Requirement::In("app".into(), vals()).matches(&web));
        assert!(!Requirement::In("app".into(), vals()).matches(&none));
        assert!(!Requirement::NotIn("app".into(), vals()).matches(&web));
        assert!(
            Requirement::NotIn("app".into(), vals()).matches(&none),
            "NotIn matches objects without the key"
        );
        assert!(Requirement::Exists("app".into()).matches(&web));
        assert!(!Requirement::Exists("app".into()).matches(&none));
        assert!(Requirement::DoesNotExist("app".into()).matches(&none));
        assert!(!Requirement::DoesNotExist("app".into()).matches(&web));
    }

    #[test]
    fn empty_selector_matches_everything_and_requirements_are_anded() {
        assert!(LabelSelector::everything().matches(&labels(&[])));
        let s = LabelSelector::from_labels([("app", "web"), ("tier", "fe")]);
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn equal_meaning_gives_equal_selectors_and_display() {
        let a = LabelSelector::from_labels([("b", "2"), ("a", "1")]);
        let b = LabelSelector::from_labels([("a", "1"), ("b", "2"), ("a", "1")]);
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "a=1,b=2");
        let e = LabelSelector::new(vec![
            Requirement::NotIn("env".into(), vec!["prod".into(), "dev".into()]),
            Requirement::DoesNotExist("legacy".into()),
        ]);
        assert_eq!(e.to_string(), "env notin (dev,prod),!legacy");
        assert_eq!(e.as_match_labels(), None);
    }
}
