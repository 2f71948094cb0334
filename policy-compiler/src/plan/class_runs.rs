//! The elements of a peer class chain's two decision maps as runs that one address's change
//! patches in place.
//!
//! An element of a class's ports map is a maximal run of adjacent local addresses that hold the
//! same piece (protocol, port range and deciding rule); an element of its map for every other
//! protocol, a maximal run of adjacent addresses decided by the same rule (see
//! [`super::tiers`]). When a local address changes what the class decides for it, only the runs
//! through it and beside it change: the one it leaves splits, the ones beside it that it joins
//! merge. [`ClassRuns`] keeps the runs by piece so that such a change costs a few ordered-map
//! lookups, not a walk of every local address.

use std::collections::{BTreeMap, HashMap};

use super::tiers::{Cell, ClassElements, PortsElement};
use super::universe::Shift;
use crate::model::Protocol;

/// A piece of a ports map element: protocol, first and last port, deciding rule.
type Piece = (Protocol, u16, u16, usize);

/// Disjoint runs of adjacent addresses, each with a tag: first address → (last address, tag).
type Runs<T> = BTreeMap<u128, (u128, T)>;

/// What one address leaving or joining did to some [`Runs`]: the runs that went, and those that
/// came (two at most of each).
type Splice = ([Option<(u128, u128)>; 2], [Option<(u128, u128)>; 2]);

/// The elements of one class chain's two maps, as runs of addresses.
#[derive(Debug, Clone, Default)]
pub(super) struct ClassRuns {
    /// The map for every other protocol, tagged by rule; disjoint, as an address has one rule
    /// deciding it there.
    any: Runs<usize>,
    /// The ports map: the runs of each piece (disjoint per piece).
    ports: HashMap<Piece, Runs<()>>,
}

/// What a change did to a class's elements: those that went, those that came. An element may be
/// in both (it went and came back); [`RunChanges::settle`] cancels such pairs.
#[derive(Debug, Default)]
pub(super) struct RunChanges {
    pub(super) ports_gone: Vec<PortsElement>,
    pub(super) ports_came: Vec<PortsElement>,
    pub(super) any_gone: Vec<(u128, u128, usize)>,
    pub(super) any_came: Vec<(u128, u128, usize)>,
}

/// The runs do not hold what the change says an address held: they are not those of the cells
/// the caller describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Inconsistent;

impl RunChanges {
    /// Records what a splice of the other map's runs of `rule` did.
    fn any(&mut self, rule: usize, (gone, came): Splice) {
        let element = |(first, last): (u128, u128)| (first, last, rule);
        self.any_gone
            .extend(gone.into_iter().flatten().map(element));
        self.any_came
            .extend(came.into_iter().flatten().map(element));
    }

    /// Records what a splice of the ports map's runs of `piece` did.
    fn ports(&mut self, (protocol, a, b, rule): Piece, (gone, came): Splice) {
        let element = |(first, last): (u128, u128)| (first, last, (protocol, a, b), rule);
        self.ports_gone
            .extend(gone.into_iter().flatten().map(element));
        self.ports_came
            .extend(came.into_iter().flatten().map(element));
    }

    /// Cancels each element that both went and came, so that what is left is the net change.
    pub(super) fn settle(&mut self) {
        cancel(&mut self.ports_gone, &mut self.ports_came);
        cancel(&mut self.any_gone, &mut self.any_came);
    }

    /// Whether nothing changed.
    pub(super) fn is_empty(&self) -> bool {
        self.ports_gone.is_empty()
            && self.ports_came.is_empty()
            && self.any_gone.is_empty()
            && self.any_came.is_empty()
    }
}

/// Removes from `gone` and `came` (as multisets) what they share.
fn cancel<T: Ord>(gone: &mut Vec<T>, came: &mut Vec<T>) {
    if gone.is_empty() || came.is_empty() {
        return;
    }
    gone.sort_unstable();
    came.sort_unstable();
    let (mut old, mut new) = (
        std::mem::take(gone).into_iter().peekable(),
        std::mem::take(came).into_iter().peekable(),
    );
    loop {
        match (old.peek(), new.peek()) {
            (Some(a), Some(b)) => match a.cmp(b) {
                std::cmp::Ordering::Less => gone.extend(old.next()),
                std::cmp::Ordering::Greater => came.extend(new.next()),
                std::cmp::Ordering::Equal => {
                    old.next();
                    new.next();
                }
            },
            (Some(_), None) => gone.extend(old.next()),
            (None, Some(_)) => came.extend(new.next()),
            (None, None) => return,
        }
    }
}

impl ClassRuns {
    /// The runs of elements as [`super::tiers`] renders them (maximal runs).
    pub(super) fn of((ports, any): &ClassElements) -> Self {
        let mut runs = Self::default();
        for &(first, last, rule) in any {
            runs.any.insert(first, (last, rule));
        }
        for &(first, last, (protocol, a, b), rule) in ports {
            runs.ports
                .entry((protocol, a, b, rule))
                .or_default()
                .insert(first, (last, ()));
        }
        runs
    }

    /// Renumbers the deciding rules by `shift` (rules entering or leaving the universe);
    /// [`Inconsistent`] when a run's rule leaves.
    pub(super) fn shift(&mut self, shift: Shift) -> Result<(), Inconsistent> {
        for (_, rule) in self.any.values_mut() {
            *rule = shift.apply(*rule).ok_or(Inconsistent)?;
        }
        let mut ports = HashMap::with_capacity(self.ports.len());
        for ((protocol, a, b, rule), runs) in std::mem::take(&mut self.ports) {
            let rule = shift.apply(rule).ok_or(Inconsistent)?;
            ports.insert((protocol, a, b, rule), runs);
        }
        self.ports = ports;
        Ok(())
    }

    /// Whether the class decides nothing for any local address (then it has no chain).
    pub(super) fn is_empty(&self) -> bool {
        self.any.is_empty() && self.ports.is_empty()
    }

    /// Every element, the ports map's and the other map's, each sorted.
    pub(super) fn elements(&self) -> ClassElements {
        let mut ports: Vec<PortsElement> = self
            .ports
            .iter()
            .flat_map(|(&(protocol, a, b, rule), runs)| {
                runs.iter()
                    .map(move |(&first, &(last, ()))| (first, last, (protocol, a, b), rule))
            })
            .collect();
        ports.sort_unstable();
        let any = self
            .any
            .iter()
            .map(|(&first, &(last, rule))| (first, last, rule))
            .collect();
        (ports, any)
    }

    /// Address `address` was decided as `old` says and is now decided as `new` says (`None`:
    /// the class decides nothing for it); records in `changes` the elements that went and came.
    pub(super) fn reassign(
        &mut self,
        address: u128,
        old: Option<&Cell>,
        new: Option<&Cell>,
        changes: &mut RunChanges,
    ) -> Result<(), Inconsistent> {
        if old == new {
            return Ok(());
        }
        if let Some(old) = old {
            if let Some(rule) = old.other {
                changes.any(rule, leave(&mut self.any, address, rule)?);
            }
            for &piece in &old.ports {
                let runs = self.ports.get_mut(&piece).ok_or(Inconsistent)?;
                changes.ports(piece, leave(runs, address, ())?);
                if runs.is_empty() {
                    self.ports.remove(&piece);
                }
            }
        }
        if let Some(new) = new {
            if let Some(rule) = new.other {
                changes.any(rule, join(&mut self.any, address, rule)?);
            }
            for &piece in &new.ports {
                changes.ports(
                    piece,
                    join(self.ports.entry(piece).or_default(), address, ())?,
                );
            }
        }
        Ok(())
    }
}

/// Takes `address` out of its run in `runs`, which must be tagged `tag`: the run goes, and what is
/// left of it on either side comes.
fn leave<T: Copy + Eq>(runs: &mut Runs<T>, address: u128, tag: T) -> Result<Splice, Inconsistent> {
    let (first, last) = match runs.range(..=address).next_back() {
        Some((&first, &(last, t))) if last >= address && t == tag => (first, last),
        _ => return Err(Inconsistent),
    };
    runs.remove(&first);
    let before = (first < address).then(|| (first, address - 1));
    let after = (address < last).then(|| (address + 1, last));
    for (f, l) in before.into_iter().chain(after) {
        runs.insert(f, (l, tag));
    }
    Ok(([Some((first, last)), None], [before, after]))
}

/// Puts `address` (in no run yet) in `runs` with `tag`, merging it with the runs of that tag
/// beside it: those go, and the merged run comes.
fn join<T: Copy + Eq>(runs: &mut Runs<T>, address: u128, tag: T) -> Result<Splice, Inconsistent> {
    let (mut first, mut last) = (address, address);
    let mut gone = [None, None];
    if let Some((&f, &(l, t))) = runs.range(..=address).next_back() {
        if l >= address {
            return Err(Inconsistent);
        }
        if t == tag && address.checked_sub(1) == Some(l) {
            runs.remove(&f);
            gone[0] = Some((f, l));
            first = f;
        }
    }
    if let Some(next) = address.checked_add(1) {
        if let Some(&(l, t)) = runs.get(&next) {
            if t == tag {
                runs.remove(&next);
                gone[1] = Some((next, l));
                last = l;
            }
        }
    }
    runs.insert(first, (last, tag));
    Ok((gone, [Some((first, last)), None]))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::*;
    use crate::plan::tiers::{elements, ClassCell};

    /// A pseudo-random generator, the same sequence every run.
    struct Draw(u64);

    impl Draw {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// A cell as the tiers make one: pieces by protocol and first port, distinct first ports.
    fn random_cell(draw: &mut Draw) -> Cell {
        let mut ports = Vec::new();
        for protocol in Protocol::ALL {
            let mut first = 0u16;
            for _ in 0..draw.below(3) {
                first += 1 + draw.below(20) as u16;
                let last = first + draw.below(5) as u16;
                ports.push((protocol, first, last, draw.below(3) as usize));
                first = last;
            }
        }
        Cell {
            other: (draw.below(3) != 0).then(|| draw.below(3) as usize),
            ports,
        }
    }

    /// The cells of `assigned` (address → position in `palette`), sorted by address.
    fn cells(assigned: &BTreeMap<u128, usize>, palette: &[Arc<Cell>]) -> Vec<ClassCell> {
        assigned
            .iter()
            .map(|(&a, &p)| (a, a, Arc::clone(&palette[p])))
            .collect()
    }

    fn sorted((mut ports, mut any): ClassElements) -> ClassElements {
        ports.sort_unstable();
        any.sort_unstable();
        (ports, any)
    }

    #[test]
    fn reassigning_addresses_one_by_one_keeps_the_elements_a_full_render_makes() {
        let mut draw = Draw(0x7e11);
        for _ in 0..300 {
            let palette: Vec<Arc<Cell>> = (0..1 + draw.below(4))
                .map(|_| Arc::new(random_cell(&mut draw)))
                .collect();
            let mut assigned: BTreeMap<u128, usize> = BTreeMap::new();
            for address in 100..100 + draw.below(24) as u128 {
                if draw.below(5) != 0 {
                    assigned.insert(address, draw.below(palette.len() as u64) as usize);
                }
            }
            let rendered = elements(&cells(&assigned, &palette));
            let mut runs = ClassRuns::of(&rendered);
            let (ports, any) = sorted(rendered);
            let mut held: (BTreeSet<PortsElement>, BTreeSet<(u128, u128, usize)>) =
                (ports.into_iter().collect(), any.into_iter().collect());
            for _ in 0..1 + draw.below(12) {
                let address = 98 + u128::from(draw.below(28));
                let old = assigned.get(&address).map(|p| &*palette[*p]);
                let new = (draw.below(4) != 0).then(|| draw.below(palette.len() as u64) as usize);
                let mut changes = RunChanges::default();
                runs.reassign(address, old, new.map(|p| &*palette[p]), &mut changes)
                    .expect("the runs are the rendered elements");
                match new {
                    Some(p) => assigned.insert(address, p),
                    None => assigned.remove(&address),
                };
                changes.settle();
                for e in &changes.ports_gone {
                    assert!(held.0.remove(e), "{e:?} went but was not there");
                }
                for e in &changes.any_gone {
                    assert!(held.1.remove(e), "{e:?} went but was not there");
                }
                for e in changes.ports_came {
                    assert!(held.0.insert(e), "{e:?} came but was there");
                }
                for e in changes.any_came {
                    assert!(held.1.insert(e), "{e:?} came but was there");
                }
                let expected = sorted(elements(&cells(&assigned, &palette)));
                assert_eq!(runs.elements(), expected);
                let patched: ClassElements = (
                    held.0.iter().copied().collect(),
                    held.1.iter().copied().collect(),
                );
                assert_eq!(patched, expected);
                assert_eq!(runs.is_empty(), expected == (vec![], vec![]));
            }
        }
    }

    #[test]
    fn an_address_the_runs_do_not_hold_is_inconsistent() {
        let cell = Cell {
            other: Some(0),
            ports: vec![(Protocol::Tcp, 80, 80, 1)],
        };
        let mut runs = ClassRuns::default();
        let mut changes = RunChanges::default();
        assert_eq!(
            runs.reassign(7, Some(&cell), None, &mut changes),
            Err(Inconsistent)
        );
        runs.reassign(7, None, Some(&cell), &mut changes)
            .expect("an address joins");
        assert_eq!(
            runs.reassign(7, None, Some(&cell), &mut changes),
            Err(Inconsistent),
            "an address held already cannot join again"
        );
    }
}
