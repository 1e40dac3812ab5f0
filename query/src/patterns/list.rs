//! `Patterns/ListPatterns`: a range of blocks scanned a page at a time,
//! each page bounded by the transactions it may scan, its patterns
//! filtered by kind and by the address or cluster they involve.

use satflow_proto::v1 as pb;
use satflow_schema::{AddrId, ClusterId, ClusterKey, Height, TxNum};

use super::{Found, Kind, Params, Scanner};
use crate::args::{self, invalid};
use crate::built;
use crate::error::{QueryError, Result};
use crate::index::Index;
use crate::page::{self, Listing, Token};

/// Transactions one page scans at most when the server sets no limit.
pub const DEFAULT_MAX_SCAN: u64 = 2_000_000;

/// Bits of a page token that place it among a block's patterns (a block
/// completes far fewer than 2^24).
const PER_BLOCK_BITS: u32 = 24;

/// Whom the listed patterns must involve.
enum Subject {
    Anyone,
    Address(AddrId),
    Cluster(ClusterKey),
}

/// One page of the patterns `r` asks for, scanning at most `max_scan`
/// transactions (whole blocks: at least one).
pub fn list(
    index: &Index,
    r: &pb::ListPatternsRequest,
    max_scan: u64,
    alive: &mut dyn FnMut() -> bool,
) -> Result<pb::ListPatternsResponse> {
    let kinds = r
        .kinds
        .iter()
        .enumerate()
        .map(|(i, k)| {
            k.parse::<Kind>()
                .map_err(|e| invalid(&format!("kinds[{i}]"), e))
        })
        .collect::<Result<Vec<Kind>>>()?;
    let flow = index.flow()?;
    let g = flow.view();
    let (base, tip) = (g.base_height(), g.tip_height());
    let last = r.to_height.unwrap_or(tip);
    if last > tip {
        return Err(QueryError::NotFound(format!(
            "to_height: {last} is past the tip the patterns can be read to ({tip})"
        )));
    }
    let first = r.from_height.max(base);
    if first > last {
        return Err(invalid(
            "from_height",
            format!("{first} is past to_height ({last})"),
        ));
    }
    let store = index.store();
    let subject = match &r.subject {
        None => Subject::Anyone,
        Some(pb::list_patterns_request::Subject::Address(a)) => {
            let key = args::address("address", a, index.network())?;
            Subject::Address(index.known_address_id(&key)?)
        }
        Some(pb::list_patterns_request::Subject::ClusterId(c)) => {
            Subject::Cluster(built::key_of(store, ClusterId(*c))?)
        }
    };
    let scope = scope_of(r, last);
    let resume = Token::resume("page_token", &r.page_token, Listing::Patterns, scope)?;
    let (mut height, mut skip) = match resume {
        Some(next) => (
            (next >> PER_BLOCK_BITS) as u32,
            next & ((1 << PER_BLOCK_BITS) - 1),
        ),
        None => (first, 0),
    };
    if !(first..=last + 1).contains(&height) {
        return Err(invalid("page_token", "points outside the requested blocks"));
    }
    let want = page::page_size(r.page_size);
    let cover = built::cover_or_none(store)?;
    let mut scanner = Scanner::new(index, g, params(r.params.as_ref())?, &kinds)?;
    let (mut patterns, mut scanned, mut scanned_to) = (Vec::new(), 0u64, None);
    let mut next = None;
    while height <= last {
        if !alive() {
            return Err(QueryError::DeadlineExceeded);
        }
        if scanned >= max_scan.max(1) {
            next = Some(u64::from(height) << PER_BLOCK_BITS);
            break;
        }
        let found = scanner.block(height)?;
        scanned += g.block_txs(height).map_or(0, |t| t.end - t.start);
        for (i, mut f) in found.into_iter().enumerate().skip(skip as usize) {
            if !involves(index, &scanner, &f, &subject, cover)? {
                continue;
            }
            if patterns.len() == want {
                next = Some(u64::from(height) << PER_BLOCK_BITS | i as u64);
                break;
            }
            if f.kind == Kind::PeelChain {
                scanner.follow(&mut f)?;
            }
            patterns.push(message(index, &f)?);
        }
        if next.is_some() {
            break;
        }
        (scanned_to, skip) = (Some(height), 0);
        height += 1;
    }
    Ok(pb::ListPatternsResponse {
        patterns,
        next_page_token: next.map_or_else(String::new, |next| {
            Token {
                listing: Listing::Patterns,
                scope,
                next,
            }
            .encode()
        }),
        scanned_to: scanned_to.unwrap_or(first.saturating_sub(1)),
    })
}

/// Whether one of `f`'s transactions spends from or pays `subject`.
fn involves(
    index: &Index,
    scanner: &Scanner,
    f: &Found,
    subject: &Subject,
    cover: AddrId,
) -> Result<bool> {
    let g = scanner.view();
    let matches = |a: u64| -> Result<bool> {
        Ok(match subject {
            Subject::Anyone => true,
            Subject::Address(id) => id.0 == a,
            Subject::Cluster(key) => {
                built::cluster_or_self(index.store(), AddrId(a), cover)? == *key
            }
        })
    };
    if let Subject::Anyone = subject {
        return Ok(true);
    }
    for &tx in &f.txs {
        let spent = g
            .inputs(tx)
            .filter(|i| g.has_output(i.output))
            .map(|i| i.output);
        for n in spent.chain(g.outputs(tx)) {
            if let Some(a) = g.output(n).addr {
                if matches(a)? {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// The thresholds `asked` sets, the defaults for the rest; a value out of
/// its range (which also bounds the work a detector does per transaction)
/// is INVALID_ARGUMENT naming the field.
fn params(asked: Option<&pb::PatternParams>) -> Result<Params> {
    fn set<T: Copy + PartialOrd + std::fmt::Display>(
        field: &str,
        asked: Option<T>,
        range: std::ops::RangeInclusive<T>,
        into: &mut T,
    ) -> Result<()> {
        match asked {
            Some(v) if !range.contains(&v) => Err(invalid(
                &format!("params.{field}"),
                format!("{v} is not between {} and {}", range.start(), range.end()),
            )),
            Some(v) => {
                *into = v;
                Ok(())
            }
            None => Ok(()),
        }
    }
    let mut p = Params::default();
    let Some(a) = asked else {
        return Ok(p);
    };
    let (steps, blocks, shares) = (2..=100, 1..=1_008, 0.0..=1.0);
    set(
        "peel_min_steps",
        a.peel_min_steps,
        steps.clone(),
        &mut p.peel.min_steps,
    )?;
    set(
        "peel_max_share",
        a.peel_max_share,
        shares.clone(),
        &mut p.peel.max_share,
    )?;
    set(
        "peel_max_gap",
        a.peel_max_gap,
        blocks.clone(),
        &mut p.peel.max_gap,
    )?;
    let l = &mut p.layering;
    set(
        "layering_min_hops",
        a.layering_min_hops,
        steps,
        &mut l.min_hops,
    )?;
    set(
        "layering_max_blocks",
        a.layering_max_blocks,
        blocks.clone(),
        &mut l.max_blocks,
    )?;
    set(
        "layering_min_forward",
        a.layering_min_forward,
        0.5..=1.0,
        &mut l.min_forward,
    )?;
    let f = &mut p.fan_out_in;
    set(
        "fan_out_in_min_coins",
        a.fan_out_in_min_coins,
        2..=1_000,
        &mut f.min_coins,
    )?;
    set(
        "fan_out_in_max_blocks",
        a.fan_out_in_max_blocks,
        1..=4_032,
        &mut f.max_blocks,
    )?;
    let split = a.fan_out_in_max_split_inputs;
    set(
        "fan_out_in_max_split_inputs",
        split,
        1..=100,
        &mut f.max_split_inputs,
    )?;
    let f = &mut p.fan_in;
    set(
        "fan_in_min_inputs",
        a.fan_in_min_inputs,
        2..=10_000,
        &mut f.min_inputs,
    )?;
    set(
        "fan_in_max_value",
        a.fan_in_max_value,
        0..=u64::MAX,
        &mut f.max_value,
    )?;
    set(
        "fan_in_max_outputs",
        a.fan_in_max_outputs,
        1..=100,
        &mut f.max_outputs,
    )?;
    set(
        "fan_in_min_payers",
        a.fan_in_min_payers,
        shares.clone(),
        &mut f.min_payers,
    )?;
    let x = &mut p.to_exchange;
    let hops = a.coinjoin_to_exchange_max_hops;
    set(
        "coinjoin_to_exchange_max_hops",
        hops,
        1..=10,
        &mut x.max_hops,
    )?;
    let window = a.coinjoin_to_exchange_max_blocks;
    set(
        "coinjoin_to_exchange_max_blocks",
        window,
        blocks,
        &mut x.max_blocks,
    )?;
    let d = &mut p.dusting;
    set(
        "dusting_min_outputs",
        a.dusting_min_outputs,
        2..=10_000,
        &mut d.min_outputs,
    )?;
    set(
        "dusting_max_value",
        a.dusting_max_value,
        0..=u64::MAX,
        &mut d.max_value,
    )?;
    set(
        "dusting_min_used",
        a.dusting_min_used,
        shares,
        &mut d.min_used,
    )?;
    Ok(p)
}

/// `f` as callers see it.
pub(crate) fn message(index: &Index, f: &Found) -> Result<pb::Pattern> {
    Ok(pb::Pattern {
        kind: f.kind.name().to_string(),
        height: f.height,
        block_hash: index.block_row(Height(f.height))?.hash.to_string(),
        txids: f
            .txs
            .iter()
            .map(|&t| Ok(index.tx_row(TxNum(t))?.txid.to_string()))
            .collect::<Result<_>>()?,
        value: f.value,
        size: f.size,
    })
}

/// What a page token is tied to: the filters, the thresholds and the
/// range's end (FNV-1a over them), so a token is refused by any other
/// listing.
fn scope_of(r: &pb::ListPatternsRequest, last: u32) -> u64 {
    let mut kinds: Vec<&str> = r.kinds.iter().map(|k| k.trim()).collect();
    kinds.sort_unstable();
    let subject = match &r.subject {
        None => String::new(),
        Some(pb::list_patterns_request::Subject::Address(a)) => format!("a:{a}"),
        Some(pb::list_patterns_request::Subject::ClusterId(c)) => format!("c:{c}"),
    };
    let text = format!("{}|{subject}|{last}|{:?}", kinds.join(","), r.params);
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
