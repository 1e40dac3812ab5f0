//! `Format::List`: one address per line (e.g. the OFAC list), label and
//! category given. Read line by line: a file of millions of addresses is
//! never held whole. Blank lines and `#` comments are left out.

use std::io::BufRead;

use anyhow::{Context, Result};

use super::entry::{Accept, Entry};

/// Reads the list from `input` into `to`; an error (a read failure, a line
/// that is not UTF-8) names the line.
pub(super) fn read(mut input: impl BufRead, to: &mut Accept<'_>) -> Result<()> {
    let mut raw = String::new();
    for line in 1.. {
        raw.clear();
        if input
            .read_line(&mut raw)
            .with_context(|| format!("line {line}"))?
            == 0
        {
            return Ok(());
        }
        let address = raw.trim();
        if address.is_empty() || address.starts_with('#') {
            continue;
        }
        to.entry(Entry {
            line,
            address,
            label: None,
            category: None,
            source: None,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::entry::tests::accepted;
    use super::super::entry::Defaults;
    use super::super::Category;
    use super::*;

    #[test]
    fn one_address_a_line_with_crlf_comments_and_blanks() {
        let d = Defaults {
            label: Some("OFAC SDN".into()),
            category: Some(Category::Sanctioned),
            ..Defaults::default()
        };
        let text = "# OFAC\r\n1NpHuti9NSM9fVTXLkvSDU4AnhqGQ5N53d\r\n\r\n  TUCsTq7TofTCJRRoHk6RvhMoS2mJLm5Yzq \r\nbc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";
        let (labels, parsed) = accepted(&d, |a| read(text.as_bytes(), a)).unwrap();
        assert_eq!(labels.len(), 2);
        assert!(labels.iter().all(|l| l.label == "OFAC SDN"));
        assert_eq!(parsed.skipped.len(), 1);
        assert_eq!(parsed.skipped[0].line, 4);
        assert_eq!(
            parsed.skipped[0].entry,
            "TUCsTq7TofTCJRRoHk6RvhMoS2mJLm5Yzq"
        );
    }

    #[test]
    fn a_line_that_is_not_utf8_is_named() {
        let text = b"1NpHuti9NSM9fVTXLkvSDU4AnhqGQ5N53d\n\xff\xfe\n";
        let d = Defaults::default();
        let err = accepted(&d, |a| read(&text[..], a)).unwrap_err();
        assert!(format!("{err:#}").starts_with("line 2: "), "{err:#}");
    }
}
