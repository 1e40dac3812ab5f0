//! Request fields parsed into typed keys. Every error names the field at
//! fault, so a caller knows what to fix.

use bitcoin::{BlockHash, Txid};
use satflow_indexer::labels::Category;
use satflow_indexer::{address, Network};
use satflow_proto::v1 as pb;
use satflow_schema::cluster::Rank;
use satflow_schema::script::AddrKey;

use crate::chain::BlockId;
use crate::error::{QueryError, Result};
use crate::history::Order;
use crate::taint::PolicyName;

pub fn txid(field: &str, s: &str) -> Result<Txid> {
    if s.len() != 64 {
        return Err(invalid(
            field,
            format!("{s:?} is not a txid (64 hex digits, got {})", s.len()),
        ));
    }
    s.parse()
        .map_err(|e| invalid(field, format!("{s:?} is not a txid: {e}")))
}

/// An address of `network`, a hex scriptPubKey or `script-sha256:<hex>`.
pub fn address(field: &str, s: &str, network: Network) -> Result<AddrKey> {
    if s.is_empty() {
        return Err(invalid(field, "is empty"));
    }
    address::parse(s, network).map_err(|e| invalid(field, format!("{e:#}")))
}

pub fn block_id(id: Option<&pb::get_block_request::Id>) -> Result<BlockId> {
    match id {
        Some(pb::get_block_request::Id::Height(h)) => Ok(BlockId::Height(*h)),
        Some(pb::get_block_request::Id::Hash(s)) => s
            .parse::<BlockHash>()
            .ok()
            .filter(|_| s.len() == 64)
            .map(BlockId::Hash)
            .ok_or_else(|| invalid("hash", format!("{s:?} is not a block hash (64 hex digits)"))),
        None => Err(invalid("id", "set either height or hash")),
    }
}

pub fn order(raw: i32) -> Result<Order> {
    match pb::Order::try_from(raw) {
        Ok(pb::Order::Unspecified | pb::Order::OldestFirst) => Ok(Order::OldestFirst),
        Ok(pb::Order::NewestFirst) => Ok(Order::NewestFirst),
        Err(_) => Err(invalid("order", format!("{raw} is not an Order"))),
    }
}

pub fn ranking(raw: i32) -> Result<Rank> {
    match pb::ClusterRanking::try_from(raw) {
        Ok(pb::ClusterRanking::Unspecified | pb::ClusterRanking::Size) => Ok(Rank::Size),
        Ok(pb::ClusterRanking::Balance) => Ok(Rank::Balance),
        Err(_) => Err(invalid("by", format!("{raw} is not a ClusterRanking"))),
    }
}

pub fn height_range(min: Option<u32>, max: Option<u32>) -> Result<()> {
    match (min, max) {
        (Some(lo), Some(hi)) if lo > hi => Err(invalid(
            "min_height",
            format!("{lo} is above max_height {hi}"),
        )),
        _ => Ok(()),
    }
}

/// `policy`, as a taint policy.
pub fn policy(v: i32) -> Result<PolicyName> {
    Ok(match pb::TaintPolicy::try_from(v) {
        Ok(pb::TaintPolicy::Haircut) => PolicyName::Haircut,
        Ok(pb::TaintPolicy::Poison) => PolicyName::Poison,
        Ok(pb::TaintPolicy::Fifo) => PolicyName::Fifo,
        Ok(pb::TaintPolicy::Lifo) => PolicyName::Lifo,
        Ok(pb::TaintPolicy::Tiho) => PolicyName::Tiho,
        Err(_) => return Err(invalid("policy", format!("{v} is no policy"))),
    })
}

/// A category of the label vocabulary.
pub fn category(field: &str, s: &str) -> Result<Category> {
    s.parse().map_err(|e: String| invalid(field, e))
}

pub fn invalid(field: &str, why: impl std::fmt::Display) -> QueryError {
    QueryError::InvalidArgument(format!("{field}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field() {
        let e = txid("txid", "xyz").unwrap_err().to_string();
        assert!(e.starts_with("txid: "), "{e}");
        let e = address("addresses[3]", "bc1qnotanaddress", Network::Main)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("addresses[3]: "), "{e}");
        let e = address(
            "address",
            "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn",
            Network::Main,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not an address of the main network"), "{e}");
        assert!(block_id(None).is_err());
        assert!(order(7).is_err());
        assert!(height_range(Some(5), Some(4)).is_err());
        assert!(height_range(Some(4), Some(4)).is_ok());
    }
}
