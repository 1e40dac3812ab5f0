//! Where in a label file an entry is, for the formats parsed whole
//! (TagPack YAML, pools.json), whose parsers keep no positions: the line
//! of a byte offset, by binary search over where the lines start, so that
//! finding the lines of every entry is one pass over the text, not one per
//! entry.

/// The offsets at which the lines of a text start.
pub(super) struct LineStarts(Vec<usize>);

impl LineStarts {
    pub fn new(text: &str) -> LineStarts {
        let after_newlines = text.match_indices('\n').map(|(at, _)| at + 1);
        LineStarts(std::iter::once(0).chain(after_newlines).collect())
    }

    /// The line (from 1) holding byte `offset`.
    pub fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|&start| start <= offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_offsets() {
        let text = "a\nbc\n\nd";
        let lines = LineStarts::new(text);
        let of = |c: char| lines.line(text.find(c).unwrap());
        assert_eq!([of('a'), of('b'), of('c'), of('d')], [1, 2, 2, 4]);
        // A newline belongs to the line it ends.
        assert_eq!(lines.line(1), 1);
        assert_eq!(lines.line(5), 3);
    }
}
