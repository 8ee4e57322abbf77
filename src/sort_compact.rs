//! Sorting that costs one copy of the sort code for the whole binary.
//!
//! std's slice sorts are instantiated per element type and comparator, ~3.5 KB of code each;
//! the server sorts small lists (config entries, ids, ranges) in a dozen places, none of them
//! hot. These sort a list of indices through one non-generic function and then move the
//! elements into place, so each call site adds only the permutation (README, "A smaller
//! binary").

use std::cmp::Ordering;

/// Sorts `items` stably by `cmp`, like `slice::sort_by`.
pub fn sort_by<T>(items: &mut Vec<T>, mut cmp: impl FnMut(&T, &T) -> Ordering) {
    if items.len() < 2 {
        return;
    }
    let mut order: Vec<usize> = (0..items.len()).collect();
    sort_indices(&mut order, &mut |a, b| cmp(&items[a], &items[b]));
    let mut slots: Vec<Option<T>> = items.drain(..).map(Some).collect();
    items.extend(order.into_iter().filter_map(|i| slots[i].take()));
}

/// Sorts `items` stably by the key `key` gives, like `slice::sort_by_key`.
pub fn sort_by_key<T, K: Ord>(items: &mut Vec<T>, mut key: impl FnMut(&T) -> K) {
    sort_by(items, |a, b| key(a).cmp(&key(b)));
}

/// Sorts `items` in ascending order, like `slice::sort` (stable, so also `sort_unstable`).
pub fn sort<T: Ord>(items: &mut Vec<T>) {
    sort_by(items, T::cmp);
}

/// The one instance of std's stable sort: indices, compared through `cmp`.
fn sort_indices(order: &mut [usize], cmp: &mut dyn FnMut(usize, usize) -> Ordering) {
    order.sort_by(|&a, &b| cmp(a, b));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_like_std_and_keeps_equal_elements_in_order() {
        let mut v = vec![(3, 'a'), (1, 'b'), (3, 'c'), (2, 'd'), (1, 'e')];
        let mut expect = v.clone();
        expect.sort_by_key(|p| p.0);
        sort_by_key(&mut v, |p| p.0);
        assert_eq!(v, expect);
        assert_eq!(v, vec![(1, 'b'), (1, 'e'), (2, 'd'), (3, 'a'), (3, 'c')]);
    }

    #[test]
    fn sorts_strings_empty_and_single_lists() {
        let mut v: Vec<String> = ["b", "a", "c", "a"].map(String::from).to_vec();
        sort(&mut v);
        assert_eq!(v, ["a", "a", "b", "c"]);
        let mut e: Vec<u32> = Vec::new();
        sort(&mut e);
        assert!(e.is_empty());
        let mut one = vec![7];
        sort_by(&mut one, |a, b| b.cmp(a));
        assert_eq!(one, [7]);
    }

    #[test]
    fn a_descending_comparator_reverses() {
        let mut v = vec![1, 5, 2, 4, 3];
        sort_by(&mut v, |a, b| b.cmp(a));
        assert_eq!(v, [5, 4, 3, 2, 1]);
    }
}
