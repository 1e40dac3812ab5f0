//! `Format::Csv`: `address,label,category,source`, through a real CSV
//! parser: quoted fields may hold commas, quotes (doubled) and line breaks;
//! lines may end in CRLF; an optional header row (its first field
//! `address`) is skipped, as are `#` comment lines. Every record has as
//! many fields as the first (a quote left open runs into the following
//! lines: this is how it shows); fields past the fourth are ignored, empty
//! ones are missing. Read record by record: a file of millions of labels
//! is never held whole.

use std::collections::VecDeque;
use std::io::Read;

use anyhow::{anyhow, Context, Result};
use csv::{ByteRecord, ErrorKind, ReaderBuilder};

use super::entry::{Accept, Entry};

/// The longest record read: no label comes near, and a quote left open
/// early in a large file would otherwise read the rest of it as one field.
const MAX_RECORD: u64 = 1 << 20;

/// Reads the labels from `input` into `to`; a record that breaks the CSV
/// rules is an error naming its line.
pub(super) fn read(input: impl Read, to: &mut Accept<'_>) -> Result<()> {
    let mut reader = ReaderBuilder::new()
        .has_headers(false)
        .comment(Some(b'#'))
        .from_reader(Lines::new(input));
    let mut record = ByteRecord::new();
    let mut first = true;
    loop {
        let from = reader.position().byte();
        reader.get_mut().record_from = from;
        let more = reader.read_byte_record(&mut record);
        let line = reader.get_mut().record_line(from);
        if !more.map_err(|e| error(e, line))? {
            return Ok(());
        }
        let mut fields = record.iter().take(4).map(|f| {
            std::str::from_utf8(f)
                .map(str::trim)
                .with_context(|| format!("line {line}: not UTF-8"))
        });
        let Some(address) = fields.next().transpose()? else {
            continue;
        };
        // A spreadsheet's byte order mark sticks to the first field.
        let address = match first {
            true => address.trim_start_matches('\u{feff}'),
            false => address,
        };
        if std::mem::take(&mut first) && address.eq_ignore_ascii_case("address") {
            continue;
        }
        let mut field =
            || -> Result<Option<&str>> { Ok(fields.next().transpose()?.filter(|f| !f.is_empty())) };
        let (label, category, source) = (field()?, field()?, field()?);
        to.entry(Entry {
            line,
            address,
            label,
            category,
            source,
        })?;
    }
}

/// The CSV reader's error at `line`.
fn error(e: csv::Error, line: usize) -> anyhow::Error {
    match e.kind() {
        ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => anyhow!("line {line}: {len} fields, where the first record has {expected_len}"),
        ErrorKind::Io(e) => anyhow!("line {line}: {e}"),
        _ => anyhow!("line {line}: {e}"),
    }
}

/// The input as the CSV reader reads it, with where its lines start and
/// which are blank or comments: csv's own record positions are where the
/// previous record ended, before the blank and comment lines that it
/// skips, and inside a CRLF. Keeps the lines the reader has read ahead
/// of, a buffer's worth.
struct Lines<R> {
    input: R,
    /// Bytes read so far.
    read: u64,
    /// Where the record being read starts (see `MAX_RECORD`).
    record_from: u64,
    /// The lines not yet passed: where each starts, and whether the
    /// reader skips it (blank or a comment), known from its first byte.
    ahead: VecDeque<(u64, Option<bool>)>,
    /// The number of the first line in `ahead`.
    first: usize,
}

impl<R: Read> Lines<R> {
    fn new(input: R) -> Lines<R> {
        Lines {
            input,
            read: 0,
            record_from: 0,
            ahead: VecDeque::from([(0, None)]),
            first: 1,
        }
    }

    fn pop(&mut self) {
        self.ahead.pop_front();
        self.first += 1;
    }

    /// The line (from 1) on which the record read from byte `from` on
    /// starts; asked in ascending order.
    fn record_line(&mut self, from: u64) -> usize {
        // To the line holding `from`: the start of a line, or (after a
        // CR) the LF ending the line before.
        while self.ahead.get(1).is_some_and(|&(start, _)| start <= from) {
            self.pop();
        }
        if self
            .ahead
            .get(1)
            .is_some_and(|&(start, _)| start == from + 1)
        {
            self.pop();
        }
        while self.ahead.len() > 1 && self.ahead[0].1 == Some(true) {
            self.pop();
        }
        self.first
    }
}

impl<R: Read> Read for Lines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read - self.record_from > MAX_RECORD {
            return Err(std::io::Error::other(format!(
                "a record of over {} MiB: a quote left open?",
                MAX_RECORD >> 20
            )));
        }
        let n = self.input.read(buf)?;
        for (i, &b) in buf[..n].iter().enumerate() {
            if let Some((_, kind @ None)) = self.ahead.back_mut() {
                *kind = Some(matches!(b, b'\n' | b'\r' | b'#'));
            }
            if b == b'\n' {
                self.ahead.push_back((self.read + i as u64 + 1, None));
            }
        }
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::entry::tests::accepted;
    use super::super::entry::Defaults;
    use super::super::{Label, Parsed};
    use super::*;

    const PAYEE: &str = "1NpHuti9NSM9fVTXLkvSDU4AnhqGQ5N53d";

    fn read_text(text: &[u8]) -> Result<(Vec<Label>, Parsed)> {
        accepted(&Defaults::default(), |a| read(text, a))
    }

    #[test]
    fn quoted_fields_crlf_header_and_comments() {
        let text = format!(
            "\u{feff}Address,Label,Category,Source\r\n# a comment\r\n\
             {PAYEE},\"Desk, \"\"the\"\" big one\",exchange,\"https://x/?a=1,2\"\r\n\
             \r\n  {PAYEE} , Plain ,  mixer , \r\n"
        );
        let (labels, parsed) = read_text(text.as_bytes()).unwrap();
        assert_eq!(parsed.skipped, []);
        assert_eq!(labels.len(), 2);
        assert_eq!(labels[0].label, "Desk, \"the\" big one");
        assert_eq!(labels[0].source, "https://x/?a=1,2");
        let plain = &labels[1];
        assert_eq!((plain.label.as_str(), plain.source.as_str()), ("Plain", ""));
    }

    /// Lines as an editor numbers them, whatever the line ends, with blank
    /// and comment lines between records and line breaks inside quotes.
    #[test]
    fn entries_are_named_by_the_line_they_start_on() {
        for end in ["\n", "\r\n"] {
            let text = [
                "address,label,category,source",
                "",
                "# note",
                "no1,a,exchange,s",
                "no2,\"two",
                "lines\",exchange,s",
                "",
                "",
                "no3,\"\"\"quoted\"\"\",exchange,s",
                "no4,last,exchange,s",
            ]
            .join(end);
            let (_, parsed) = read_text(text.as_bytes()).unwrap();
            let lines: Vec<_> = parsed
                .skipped
                .iter()
                .map(|s| (s.line, s.entry.as_str()))
                .collect();
            assert_eq!(
                lines,
                [(4, "no1"), (5, "no2"), (9, "no3"), (10, "no4")],
                "{end:?}"
            );
        }
    }

    #[test]
    fn an_unclosed_quote_is_an_error_at_its_line() {
        let text = format!(
            "address,label,category,source\n{PAYEE},ok,exchange,s\n\n\
             {PAYEE},\"open,exchange,s\n{PAYEE},after,exchange,s\n"
        );
        let err = read_text(text.as_bytes()).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "line 4: 2 fields, where the first record has 4"
        );
    }

    #[test]
    fn a_quote_left_open_in_a_large_file_stops_at_a_bound() {
        let mut text = format!("{PAYEE},ok,exchange,s\n{PAYEE},\"open,exchange,s\n");
        text += &format!("{PAYEE},more,exchange,s\n").repeat(30_000);
        let err = read_text(text.as_bytes()).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "line 2: a record of over 1 MiB: a quote left open?"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_an_error_at_their_line() {
        let mut text = format!("{PAYEE},ok,exchange,s\r\n").into_bytes();
        text.extend_from_slice(b"x,\xff,exchange,s\r\n");
        let err = read_text(&text).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("line 2: not UTF-8"),
            "{err:#}"
        );
    }
}
