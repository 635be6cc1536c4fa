//! What the CLI prints: plain text and JSON on stdout, tables that fit the terminal (80 columns
//! when stdout is not one), and errors on stderr as text or as `{"error": {...}}`.

use std::io::{IsTerminal, Write};

use chrono::{DateTime, Local, Utc};
use serde::Serialize;
use serde_json::json;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::Failure;

/// Width tables are fitted to when stdout is not a terminal.
pub const DEFAULT_WIDTH: usize = 80;
const GAP: &str = "  ";

/// Writes `text` to stdout. A closed pipe (`kiln template list | head -1`) is not an error.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Writes one line to stdout.
pub fn println(line: &str) {
    print(&format!("{line}\n"));
}

/// Writes one pretty JSON document to stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println(&text),
        Err(e) => eprintln!("kiln: error: cannot render JSON: {e}"),
    }
}

/// A time in the local zone to the minute, as tables show it: `2026-11-26 10:02`.
pub fn local_time(t: &DateTime<Utc>) -> String {
    t.with_timezone(&Local).format("%Y-%m-%d %H:%M").to_string()
}

/// A time in the local zone to the second, with the zone's offset, as details show it.
pub fn local_time_long(t: &DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// Whether `stream` should get ANSI styles: a terminal, `NO_COLOR` unset and `TERM` not `dumb`.
pub fn use_color(is_terminal: bool) -> bool {
    is_terminal
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

fn stdout_color() -> bool {
    use_color(std::io::stdout().is_terminal())
}

/// The width to fit tables to: the terminal's when stdout is one, else 80.
pub fn table_width() -> usize {
    if std::io::stdout().is_terminal() {
        if let Ok((cols, _)) = crossterm::terminal::size() {
            if cols >= 20 {
                return usize::from(cols);
            }
        }
    }
    DEFAULT_WIDTH
}

/// Prints a table fitted to [`table_width`], with a bold header on a color terminal.
pub fn print_table(table: &Table) {
    print(&table.render(table_width(), stdout_color()));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// One column: its header, alignment and the narrowest it may be squeezed to.
#[derive(Debug, Clone)]
pub struct Column {
    pub header: &'static str,
    pub align: Align,
    /// Columns are never narrowed below this (nor below their header); 0 keeps them whole.
    pub min_width: usize,
}

impl Column {
    /// A column that may be truncated down to `min_width` columns.
    pub fn flexible(header: &'static str, min_width: usize) -> Column {
        Column {
            header,
            align: Align::Left,
            min_width: min_width.max(header.width()),
        }
    }

    /// A column that is never truncated (numbers, dates).
    pub fn fixed(header: &'static str, align: Align) -> Column {
        Column {
            header,
            align,
            min_width: 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Table {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: Vec<Column>) -> Table {
        Table {
            columns,
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The width of each column: what its cells need, with the widest truncatable columns
    /// narrowed one step at a time until the row fits `width` (or nothing can shrink further).
    pub fn column_widths(&self, width: usize) -> Vec<usize> {
        let mut widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|cell| cell.width())
                    .chain(std::iter::once(c.header.width()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let gaps = GAP.len() * self.columns.len().saturating_sub(1);
        while widths.iter().sum::<usize>() + gaps > width {
            let widest = widths
                .iter()
                .enumerate()
                .filter(|&(i, &w)| self.columns[i].min_width > 0 && w > self.columns[i].min_width)
                .max_by_key(|&(i, &w)| (w, std::cmp::Reverse(i)))
                .map(|(i, _)| i);
            match widest {
                Some(i) => widths[i] -= 1,
                None => break,
            }
        }
        widths
    }

    /// The table as text, one line per row after the header, no trailing spaces.
    pub fn render(&self, width: usize, bold_header: bool) -> String {
        let widths = self.column_widths(width);
        let header: Vec<String> = self.columns.iter().map(|c| c.header.to_string()).collect();
        let mut out = String::new();
        let line = self.render_row(&header, &widths);
        if bold_header {
            out.push_str(&format!("\x1b[1m{line}\x1b[0m\n"));
        } else {
            out.push_str(&line);
            out.push('\n');
        }
        for row in &self.rows {
            out.push_str(&self.render_row(row, &widths));
            out.push('\n');
        }
        out
    }

    fn render_row(&self, cells: &[String], widths: &[usize]) -> String {
        let mut line = String::new();
        for (i, (column, &w)) in self.columns.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str(GAP);
            }
            let cell = truncate(cells.get(i).map(String::as_str).unwrap_or(""), w);
            let pad = " ".repeat(w.saturating_sub(cell.width()));
            match column.align {
                Align::Left => {
                    line.push_str(&cell);
                    line.push_str(&pad);
                }
                Align::Right => {
                    line.push_str(&pad);
                    line.push_str(&cell);
                }
            }
        }
        line.trim_end().to_string()
    }
}

/// `text` cut to at most `width` terminal columns, ending in `…` when something was cut. Control
/// characters are shown as `?` so a cell can never move the cursor.
pub fn truncate(text: &str, width: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if clean.width() <= width {
        return clean;
    }
    if width == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in clean.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > width - 1 {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

/// The error as people read it: `kiln: error: MESSAGE`, then one violation per line, prefixed by
/// the file they are about (`web.toml: customize[2].destination: must be under /tmp`).
pub fn render_failure_text(failure: &Failure, color: bool) -> String {
    let prefix = if color {
        "\x1b[1;31mkiln: error:\x1b[0m"
    } else {
        "kiln: error:"
    };
    let mut out = format!("{prefix} {}\n", failure.message);
    for v in &failure.violations {
        out.push_str(&violation_line(failure.file.as_deref(), v));
        out.push('\n');
    }
    out
}

/// One violation as a line: `FILE: path: message`, leaving out what is empty.
pub fn violation_line(file: Option<&str>, v: &kiln_shared::Violation) -> String {
    let mut parts: Vec<&str> = Vec::with_capacity(3);
    if let Some(f) = file {
        parts.push(f);
    }
    if !v.path.is_empty() {
        parts.push(&v.path);
    }
    parts.push(&v.message);
    parts.join(": ")
}

/// The error as scripts read it: `{"error": {"kind", "message", "violations"}}`.
pub fn render_failure_json(failure: &Failure) -> String {
    let doc = json!({
        "error": {
            "kind": failure.kind,
            "message": failure.message,
            "violations": failure.violations,
        }
    });
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string()) + "\n"
}

/// Writes the failure to stderr in the form `--json` asks for.
pub fn report_failure(failure: &Failure, json: bool) {
    let text = if json {
        render_failure_json(failure)
    } else {
        render_failure_text(failure, use_color(std::io::stderr().is_terminal()))
    };
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Asks `question` on stderr and reads the answer from stdin; true only for yes.
pub fn confirm(question: &str) -> Result<bool, Failure> {
    use std::io::{BufRead, Write};
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::io(format!("cannot read the answer: {e}")))?;
    Ok(super::template::is_yes(&answer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_shared::Violation;

    fn template_table(rows: &[[&str; 5]]) -> Table {
        let mut t = Table::new(vec![
            Column::flexible("NAME", 12),
            Column::flexible("OS", 9),
            Column::fixed("REVISION", Align::Right),
            Column::flexible("APPLICATIONS", 12),
            Column::fixed("UPDATED", Align::Left),
        ]);
        for r in rows {
            t.push(r.iter().map(|s| s.to_string()).collect());
        }
        t
    }

    fn check_table(rows: &[[&str; 5]], width: usize, expected: &str) {
        let out = template_table(rows).render(width, false);
        assert_eq!(out, expected, "\n{out}");
        for line in out.lines() {
            assert!(line.width() <= width, "too wide ({}): {line}", line.width());
        }
    }

    #[test]
    fn short_rows_keep_natural_widths() {
        check_table(
            &[["web", "debian-12", "3", "nginx", "2024-05-01 12:00"]],
            80,
            "NAME  OS         REVISION  APPLICATIONS  UPDATED\n\
             web   debian-12         3  nginx         2024-05-01 12:00\n",
        );
    }

    #[test]
    fn long_cells_are_truncated_to_80_columns() {
        let long_name = "a-very-long-template-name-that-goes-on-and-on-and-on-forever";
        let apps = "nginx, postgresql-15, redis, docker, prometheus-node-exporter";
        check_table(
            &[
                [long_name, "debian-12", "12", apps, "2024-05-01 12:00"],
                ["short", "ubuntu-24.04", "1", "", "2024-05-02 08:30"],
            ],
            80,
            "NAME                OS            REVISION  APPLICATIONS        UPDATED\n\
             a-very-long-templ…  debian-12           12  nginx, postgresql…  2024-05-01 12:00\n\
             short               ubuntu-24.04         1                      2024-05-02 08:30\n",
        );
    }

    #[test]
    fn wide_characters_count_two_columns() {
        let hangul = "가".repeat(85);
        let out = template_table(&[[&hangul, "debian-12", "1", "nginx", "2024-05-01 12:00"]])
            .render(80, false);
        let row = out.lines().nth(1).expect("a row");
        assert!(row.width() <= 80, "{row}");
        assert!(row.starts_with("가가"));
        assert!(row.contains('…'));
    }

    #[test]
    fn nothing_shrinks_below_minimum() {
        let long = "x".repeat(100);
        let t = template_table(&[[&long, &long, "1", &long, "2024-05-01 12:00"]]);
        let widths = t.column_widths(20);
        assert_eq!(widths, vec![12, 9, 8, 12, 16]);
    }

    #[test]
    fn truncate_cases() {
        let check = |text: &str, width: usize, expected: &str| {
            assert_eq!(truncate(text, width), expected, "{text:?} to {width}");
        };
        check("web", 5, "web");
        check("web-base", 8, "web-base");
        check("web-base", 7, "web-ba…");
        check("web-base", 1, "…");
        check("web-base", 0, "");
        check("가나다", 5, "가나…");
        check("가나다", 4, "가…");
        check("a\tb\x1b[31m", 20, "a?b?[31m");
    }

    fn failure(file: Option<&str>) -> Failure {
        Failure {
            violations: vec![
                Violation {
                    path: "customize[2].destination".into(),
                    message: "must be under /tmp".into(),
                },
                Violation {
                    path: String::new(),
                    message: "invalid TOML: expected `=` (line 3)".into(),
                },
            ],
            file: file.map(str::to_string),
            ..Failure::new("invalid_template", "template web is invalid")
        }
    }

    #[test]
    fn failure_as_text() {
        assert_eq!(
            render_failure_text(&failure(Some("web.toml")), false),
            "kiln: error: template web is invalid\n\
             web.toml: customize[2].destination: must be under /tmp\n\
             web.toml: invalid TOML: expected `=` (line 3)\n"
        );
        assert_eq!(
            render_failure_text(&failure(None), false),
            "kiln: error: template web is invalid\n\
             customize[2].destination: must be under /tmp\n\
             invalid TOML: expected `=` (line 3)\n"
        );
        assert!(render_failure_text(&Failure::new("not_found", "x"), true).contains("\x1b[1;31m"));
    }

    #[test]
    fn failure_as_json() {
        let doc: serde_json::Value =
            serde_json::from_str(&render_failure_json(&failure(Some("web.toml"))))
                .expect("valid JSON");
        assert_eq!(
            doc,
            json!({"error": {
                "kind": "invalid_template",
                "message": "template web is invalid",
                "violations": [
                    {"path": "customize[2].destination", "message": "must be under /tmp"},
                    {"path": "", "message": "invalid TOML: expected `=` (line 3)"},
                ],
            }})
        );
        let doc: serde_json::Value =
            serde_json::from_str(&render_failure_json(&Failure::usage("pass --yes")))
                .expect("valid JSON");
        assert_eq!(doc["error"]["violations"], json!([]));
        assert_eq!(doc["error"]["kind"], "usage");
    }
}
