//! "did you mean 'workers'?" for misspelt keys.

/// The known key closest to `word`, if it is within two edits (a swap of two neighbouring
/// letters counts as one edit, as it is the commonest typo). Ties go to the earlier known key.
pub(super) fn did_you_mean<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let mut best: Option<(usize, &'a str)> = None;
    for &k in known {
        let d = distance(word, k);
        if d <= 2 && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, k));
        }
    }
    best.map(|(_, k)| k)
}

/// What follows "unknown <kind> 'name'" in an error: the closest defined name, else every
/// defined one, else that none of `kind` is defined (`kind` as in "no upstream is defined").
pub(super) fn unknown_name_hint(word: &str, defined: &[&str], kind: &str) -> String {
    match did_you_mean(word, defined) {
        Some(s) => format!("; did you mean '{s}'?"),
        None if defined.is_empty() => format!(" (no {kind} is defined)"),
        None => format!(" (defined: {})", defined.join(", ")),
    }
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions), on chars.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_name_gets_the_closest_else_the_list_else_none_defined() {
        assert_eq!(
            unknown_name_hint("ap", &["app", "db"], "upstream"),
            "; did you mean 'app'?"
        );
        assert_eq!(
            unknown_name_hint("zzzz", &["app", "db"], "upstream"),
            " (defined: app, db)"
        );
        assert_eq!(
            unknown_name_hint("app", &[], "upstream"),
            " (no upstream is defined)"
        );
    }

    #[test]
    fn distances() {
        assert_eq!(distance("workers", "workers"), 0);
        assert_eq!(distance("wokers", "workers"), 1);
        assert_eq!(distance("wrokers", "workers"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggestions() {
        let known = ["listen", "workers", "root", "index"];
        assert_eq!(did_you_mean("wokers", &known), Some("workers"));
        assert_eq!(did_you_mean("Workers", &known), Some("workers"));
        assert_eq!(did_you_mean("rot", &known), Some("root"));
        assert_eq!(did_you_mean("documentroot", &known), None);
    }
}
