//! Paging: page sizes and the opaque tokens that resume a listing.
//!
//! A token names the next key to read, so page 1,000 costs one seek, as
//! page 1 does. It also names the listing it belongs to, so a token from
//! another address or order is refused rather than silently misread.

use crate::error::{QueryError, Result};

/// Entries per page when the request leaves the size at 0.
pub const DEFAULT_PAGE: usize = 100;
/// Larger requested pages are clamped to this (as AIP-158 recommends), not refused.
pub const MAX_PAGE: usize = 10_000;

pub fn page_size(requested: u32) -> usize {
    page_size_or(requested, DEFAULT_PAGE)
}

/// `page_size` with another default, for listings whose entries are small
/// and usually few (a transaction's inputs and outputs).
pub fn page_size_or(requested: u32, default: usize) -> usize {
    match requested as usize {
        0 => default,
        n => n.min(MAX_PAGE),
    }
}

/// What a token resumes; part of the token so tokens cannot be swapped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Listing {
    HistoryOldestFirst = 1,
    HistoryNewestFirst = 2,
    Utxos = 3,
    BlockTxids = 4,
    ClusterMembers = 5,
    ClusterHistoryOldestFirst = 6,
    ClusterHistoryNewestFirst = 7,
    LargestBySize = 8,
    LargestByBalance = 9,
    TxInputsOutputs = 10,
    Patterns = 11,
}

/// Where a listing resumes: `next` is the first key (tx number, output
/// number or position) of the next page, within `scope` (an address id or
/// a block height).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Token {
    pub listing: Listing,
    pub scope: u64,
    pub next: u64,
}

impl Token {
    pub fn encode(&self) -> String {
        format!(
            "{:02x}{:016x}{:016x}",
            self.listing as u8, self.scope, self.next
        )
    }

    /// The resume key of `token` (from the `field` of a request), or None
    /// for the first page.
    pub fn resume(field: &str, token: &str, listing: Listing, scope: u64) -> Result<Option<u64>> {
        if token.is_empty() {
            return Ok(None);
        }
        let bad = |why: &str| QueryError::InvalidArgument(format!("{field}: {why}"));
        if token.len() != 34 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("not a page token of this server"));
        }
        let num = |range: std::ops::Range<usize>| u64::from_str_radix(&token[range], 16);
        let (Ok(kind), Ok(token_scope), Ok(next)) = (num(0..2), num(2..18), num(18..34)) else {
            return Err(bad("not a page token of this server"));
        };
        if kind != listing as u64 || token_scope != scope {
            return Err(bad(
                "the token belongs to another listing (other address, block or order)",
            ));
        }
        Ok(Some(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_other_listings() {
        let t = Token {
            listing: Listing::HistoryNewestFirst,
            scope: 42,
            next: u64::MAX - 3,
        };
        let s = t.encode();
        assert_eq!(
            Token::resume("page_token", &s, Listing::HistoryNewestFirst, 42).unwrap(),
            Some(u64::MAX - 3)
        );
        for (listing, scope) in [
            (Listing::HistoryOldestFirst, 42),
            (Listing::HistoryNewestFirst, 43),
        ] {
            let e = Token::resume("page_token", &s, listing, scope).unwrap_err();
            assert!(matches!(e, QueryError::InvalidArgument(m) if m.starts_with("page_token: ")));
        }
        for garbage in ["zz", &s[1..], "g".repeat(34).as_str()] {
            assert!(Token::resume("page_token", garbage, Listing::HistoryNewestFirst, 42).is_err());
        }
        assert_eq!(
            Token::resume("page_token", "", Listing::Utxos, 1).unwrap(),
            None
        );
    }

    #[test]
    fn page_sizes_default_and_clamp() {
        assert_eq!(page_size(0), DEFAULT_PAGE);
        assert_eq!(page_size(7), 7);
        assert_eq!(page_size(u32::MAX), MAX_PAGE);
    }
}
