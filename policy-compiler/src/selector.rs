//! Label selectors (`matchLabels` and `matchExpressions`) in a compact, validated form.

use std::fmt;
use std::sync::Arc;

use crate::intern::Interner;

/// Labels of a pod or namespace: keys and their values, sorted by key, each key once.
///
/// Kept compact, as one boxed slice: a cluster has a label set per pod, and its keys and values
/// repeat from pod to pod, so the strings are reference counted and [`Labels::share`] makes equal
/// ones one allocation (the [`crate::ClusterState`] does so for what it holds).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels {
    entries: Box<[(Arc<str>, Arc<str>)]>,
}

impl Labels {
    /// No labels.
    pub fn new() -> Self {
        Self::default()
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.position(key).ok().map(|i| &*self.entries[i].1)
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_ok()
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(
        &mut self,
        key: impl Into<Arc<str>>,
        value: impl Into<Arc<str>>,
    ) -> Option<Arc<str>> {
        let key = key.into();
        let value = value.into();
        match self.position(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                let mut entries = std::mem::take(&mut self.entries).into_vec();
                entries.insert(i, (key, value));
                self.entries = entries.into_boxed_slice();
                None
            }
        }
    }

    /// Unsets `key`; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<Arc<str>> {
        let i = self.position(key).ok()?;
        let mut entries = std::mem::take(&mut self.entries).into_vec();
        let (_, value) = entries.remove(i);
        self.entries = entries.into_boxed_slice();
        Some(value)
    }

    /// The labels, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.entries.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().map(|(k, _)| &**k)
    }

    /// The values, in the order of their keys.
    pub fn values(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().map(|(_, v)| &**v)
    }

    /// How many labels there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Makes every key and value the interner's copy of that string, so that equal strings across
    /// the objects that share `interner` are one allocation.
    pub fn share(&mut self, interner: &mut Interner) {
        for (k, v) in self.entries.iter_mut() {
            interner.share(k);
            interner.share(v);
        }
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Into<Arc<str>>, V: Into<Arc<str>>> FromIterator<(K, V)> for Labels {
    /// Labels from pairs; of a key given twice, the last value holds (as in a map).
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut entries: Vec<(Arc<str>, Arc<str>)> = iter
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        // Stable: of equal keys, the last given is the last here, and the one dedup keeps.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.reverse();
        entries.dedup_by(|later, earlier| later.0 == earlier.0);
        entries.reverse();
        Self {
            entries: entries.into_boxed_slice(),
        }
    }
}

impl<K: Into<Arc<str>>, V: Into<Arc<str>>> Extend<(K, V)> for Labels {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K: Into<Arc<str>>, V: Into<Arc<str>>, const N: usize> From<[(K, V); N]> for Labels {
    fn from(pairs: [(K, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl serde::Serialize for Labels {
    /// As a map of key to value, as in `metadata.labels`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Labels {
    /// From a map of key to value, as in `metadata.labels`.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map: std::collections::BTreeMap<String, String> =
            serde::Deserialize::deserialize(deserializer)?;
        Ok(map.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a str, &'a str);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Arc<str>, Arc<str>)>,
        fn(&'a (Arc<str>, Arc<str>)) -> (&'a str, &'a str),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (&**k, &**v))
    }
}

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
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| vs.iter().all(|x| x != v)),
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
    fn labels_behave_as_a_sorted_map() {
        let mut l: Labels = [("tier", "fe"), ("app", "web"), ("tier", "be")]
            .into_iter()
            .collect();
        assert_eq!(l.len(), 2, "a key given twice is one label");
        assert_eq!(l.get("tier"), Some("be"), "the last value given holds");
        assert_eq!(l.keys().collect::<Vec<_>>(), ["app", "tier"]);
        assert_eq!(l.insert("env", "prod"), None);
        assert_eq!(l.insert("app", "api").as_deref(), Some("web"));
        assert_eq!(
            l.iter().collect::<Vec<_>>(),
            [("app", "api"), ("env", "prod"), ("tier", "be")]
        );
        assert_eq!(l.remove("env").as_deref(), Some("prod"));
        assert_eq!(l.remove("env"), None);
        assert!(!l.contains_key("env") && l.contains_key("app"));
        assert_eq!(l, Labels::from([("app", "api"), ("tier", "be")]));
    }

    #[test]
    fn shared_labels_use_one_copy_of_each_string() {
        let mut interner = Interner::new();
        let mut a = Labels::from([("app", "web")]);
        let mut b = Labels::from([("app".to_string(), "web".to_string())]);
        a.share(&mut interner);
        b.share(&mut interner);
        assert_eq!(a, b);
        assert_eq!(interner.len(), 2, "one key and one value");
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
