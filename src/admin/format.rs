//! How the REPL shows a value for a person.
//!
//! - an array whose elements are all objects → aligned columns: a header row of the keys in the
//!   order they first appear (the server's order), then one row per element; numbers are
//!   right-aligned, missing keys are blank, nested values are compact JSON;
//! - an object → `key  value` lines, keys padded to the same width;
//! - a string → the string itself; other scalars as JSON; `null` → `nil`;
//! - any other array (scalars, mixed, empty) → compact JSON.
//!
//! Control characters inside cells and object values are escaped (`\n`, `\t`, `\u{1b}`) so that
//! one value stays on one line and cannot steer the terminal.

use serde_json::Value;

/// Spaces between columns, and between an object's keys and values.
const GAP: &str = "  ";

/// The text shown for `value`, ending with a newline.
pub fn format_value(value: &Value) -> String {
    let mut out = match value {
        Value::Array(rows) if !rows.is_empty() && rows.iter().all(Value::is_object) => table(rows),
        Value::Object(map) if !map.is_empty() => {
            let width = map
                .keys()
                .map(|k| text_width(&escape(k)))
                .max()
                .unwrap_or(0);
            let mut s = String::new();
            for (k, v) in map {
                let k = escape(k);
                let pad = width - text_width(&k);
                let line = format!("{k}{}{GAP}{}", " ".repeat(pad), cell(v));
                s.push_str(line.trim_end());
                s.push('\n');
            }
            s
        }
        Value::String(s) => s.clone(),
        Value::Null => "nil".to_string(),
        other => other.to_string(),
    };
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// One value as a single line: strings bare (escaped), `nil` for null, others compact JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => escape(s),
        Value::Null => "nil".to_string(),
        other => escape(&other.to_string()),
    }
}

fn table(rows: &[Value]) -> String {
    let mut columns: Vec<&str> = Vec::new();
    for row in rows {
        if let Value::Object(map) = row {
            for k in map.keys() {
                if !columns.contains(&k.as_str()) {
                    columns.push(k);
                }
            }
        }
    }
    // cells[r][c]: (text, right-aligned)
    let cells: Vec<Vec<(String, bool)>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| match row.get(*c) {
                    None => (String::new(), false),
                    Some(v) => (cell(v), v.is_number()),
                })
                .collect()
        })
        .collect();
    let header: Vec<String> = columns.iter().map(|c| escape(c)).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|c| {
            cells
                .iter()
                .map(|r| text_width(&r[c].0))
                .chain(std::iter::once(text_width(&header[c])))
                .max()
                .unwrap_or(0)
        })
        .collect();
    // A column whose values are all numbers has its header right-aligned too.
    let numeric: Vec<bool> = (0..columns.len())
        .map(|c| cells.iter().all(|r| r[c].1 || r[c].0.is_empty()) && cells.iter().any(|r| r[c].1))
        .collect();
    let mut out = String::new();
    let header_row: Vec<(String, bool)> = header.into_iter().zip(numeric).collect();
    for row in std::iter::once(&header_row).chain(cells.iter()) {
        let mut line = String::new();
        for (c, (text, right)) in row.iter().enumerate() {
            if c > 0 {
                line.push_str(GAP);
            }
            let pad = " ".repeat(widths[c] - text_width(text));
            if *right {
                line.push_str(&pad);
                line.push_str(text);
            } else {
                line.push_str(text);
                line.push_str(&pad);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Width in terminal columns, counted as characters (good enough for the names and numbers
/// an admin table holds).
fn text_width(s: &str) -> usize {
    s.chars().count()
}

/// Escapes control characters so a value stays on one line.
fn escape(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for ch in s.chars() {
        match ch {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars() {
        assert_eq!(format_value(&json!(null)), "nil\n");
        assert_eq!(format_value(&json!(true)), "true\n");
        assert_eq!(format_value(&json!(12)), "12\n");
        assert_eq!(format_value(&json!(1.5)), "1.5\n");
        assert_eq!(format_value(&json!("a b")), "a b\n");
        assert_eq!(format_value(&json!("line\n")), "line\n");
        assert_eq!(format_value(&json!([])), "[]\n");
        assert_eq!(format_value(&json!([1, "a", null])), "[1,\"a\",null]\n");
    }

    #[test]
    fn object_lines_are_aligned() {
        let v = json!({"pid": 4242, "generation": 1, "listen": ["a", "b"], "x": null});
        assert_eq!(
            format_value(&v),
            "pid         4242\n\
             generation  1\n\
             listen      [\"a\",\"b\"]\n\
             x           nil\n"
        );
    }

    #[test]
    fn array_of_objects_is_a_table() {
        let v = json!([
            {"slot": 0, "name": "worker", "pid": 101, "state": "idle", "requests": 5},
            {"slot": 1, "name": "worker", "pid": 20202, "state": "busy", "requests": 12345,
             "extra": {"a": 1}},
        ]);
        let want = "\
slot  name      pid  state  requests  extra
   0  worker    101  idle          5
   1  worker  20202  busy      12345  {\"a\":1}
";
        assert_eq!(format_value(&v), want);
    }

    #[test]
    fn mixed_columns_keep_left_alignment_and_escape_controls() {
        let v = json!([{"v": 1, "s": "a\tb"}, {"v": "x", "s": "\u{1b}[2J"}]);
        let want = "\
v  s
1  a\\tb
x  \\u{1b}[2J
";
        assert_eq!(format_value(&v), want);
    }
}
