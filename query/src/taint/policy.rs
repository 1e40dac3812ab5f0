//! How taint moves through one transaction under each policy: marks on
//! some coins of one side (inputs going forward, outputs going backward)
//! become marks on the coins of the other side. All arithmetic is in whole
//! satoshis; where a share is not whole it is rounded down, and what the
//! rounding leaves is reported as `rounding`, never dropped silently.

use std::fmt;
use std::str::FromStr;

/// The policies by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyName {
    Poison,
    Haircut,
    Fifo,
    Lifo,
    Tiho,
}

impl PolicyName {
    pub const ALL: [PolicyName; 5] = [
        PolicyName::Poison,
        PolicyName::Haircut,
        PolicyName::Fifo,
        PolicyName::Lifo,
        PolicyName::Tiho,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PolicyName::Poison => "poison",
            PolicyName::Haircut => "haircut",
            PolicyName::Fifo => "fifo",
            PolicyName::Lifo => "lifo",
            PolicyName::Tiho => "tiho",
        }
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PolicyName {
    type Err = String;

    fn from_str(s: &str) -> Result<PolicyName, String> {
        PolicyName::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!("unknown policy {s:?}: one of poison, haircut, fifo, lifo, tiho")
            })
    }
}

/// Marks carried over one transaction.
#[derive(Debug, PartialEq, Eq)]
pub struct Split<M> {
    /// (index on the far side, mark); only coins that got taint.
    pub marks: Vec<(u32, M)>,
    /// Forward: taint paid to the miner as fee.
    pub fee: u64,
    /// Taint left over by rounding shares down.
    pub rounding: u64,
}

pub trait Policy {
    /// What a tainted coin carries.
    type Mark: Clone + fmt::Debug;
    /// The whole of a coin worth `value`.
    fn full(value: u64) -> Self::Mark;
    fn amount(mark: &Self::Mark) -> u64;
    /// Input marks (by input index) to output marks. `ins` and `outs` are
    /// the coins' values; the inputs are worth at least the outputs.
    fn forward(&self, ins: &[u64], outs: &[u64], marks: &[(u32, Self::Mark)]) -> Split<Self::Mark>;
    /// Output marks (by output index) to input marks: where the marked
    /// value came from. None when the policy has no backward reading.
    fn backward(
        &self,
        ins: &[u64],
        outs: &[u64],
        marks: &[(u32, Self::Mark)],
    ) -> Option<Split<Self::Mark>>;
}

fn total<M>(marks: &[(u32, M)], amount: impl Fn(&M) -> u64) -> u64 {
    marks.iter().map(|(_, m)| amount(m)).sum()
}

/// `amount · part / whole`, rounded down, without overflow.
fn share(amount: u64, part: u64, whole: u64) -> u64 {
    (u128::from(amount) * u128::from(part) / u128::from(whole)) as u64
}

/// Every output of a tainted transaction is wholly tainted; going back,
/// every input of it is. Taint is not conserved: it spreads.
pub struct Poison;

impl Policy for Poison {
    type Mark = u64;

    fn full(value: u64) -> u64 {
        value
    }

    fn amount(mark: &u64) -> u64 {
        *mark
    }

    fn forward(&self, ins: &[u64], outs: &[u64], _: &[(u32, u64)]) -> Split<u64> {
        Split {
            marks: all(outs),
            fee: ins.iter().sum::<u64>() - outs.iter().sum::<u64>(),
            rounding: 0,
        }
    }

    fn backward(&self, ins: &[u64], _: &[u64], _: &[(u32, u64)]) -> Option<Split<u64>> {
        Some(Split {
            marks: all(ins),
            fee: 0,
            rounding: 0,
        })
    }
}

fn all(values: &[u64]) -> Vec<(u32, u64)> {
    values
        .iter()
        .enumerate()
        .filter(|(_, &v)| v > 0)
        .map(|(i, &v)| (i as u32, v))
        .collect()
}

/// Every output (and the fee) carries taint in proportion to the tainted
/// share of the inputs' value: output j gets ⌊T·v_j / V_in⌋, the fee
/// ⌊T·fee / V_in⌋. Going back, input i explains ⌊A·v_i / V_in⌋ of a marked
/// amount A, as each output is the same mix of all inputs.
pub struct Haircut;

impl Policy for Haircut {
    type Mark = u64;

    fn full(value: u64) -> u64 {
        value
    }

    fn amount(mark: &u64) -> u64 {
        *mark
    }

    fn forward(&self, ins: &[u64], outs: &[u64], marks: &[(u32, u64)]) -> Split<u64> {
        proportional(total(marks, |m| *m), ins.iter().sum(), outs, true)
    }

    fn backward(&self, ins: &[u64], _: &[u64], marks: &[(u32, u64)]) -> Option<Split<u64>> {
        let whole = ins.iter().sum();
        Some(proportional(total(marks, |m| *m), whole, ins, false))
    }
}

/// Shares of `amount` over `parts` in proportion to their values out of
/// `whole`; with `fee`, the part of `whole` not in `parts` takes its share.
fn proportional(amount: u64, whole: u64, parts: &[u64], fee: bool) -> Split<u64> {
    if amount == 0 || whole == 0 {
        return Split {
            marks: Vec::new(),
            fee: 0,
            rounding: amount,
        };
    }
    let marks: Vec<(u32, u64)> = parts
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, share(amount, v, whole)))
        .filter(|&(_, s)| s > 0)
        .collect();
    let fee = match fee {
        true => share(amount, whole - parts.iter().sum::<u64>(), whole),
        false => 0,
    };
    let rounding = amount - total(&marks, |m| *m) - fee;
    Split {
        marks,
        fee,
        rounding,
    }
}

/// Taint in, highest out: the tainted amount fills the largest outputs
/// first (ties: lower index first), then the fee. Forward only.
pub struct Tiho;

impl Policy for Tiho {
    type Mark = u64;

    fn full(value: u64) -> u64 {
        value
    }

    fn amount(mark: &u64) -> u64 {
        *mark
    }

    fn forward(&self, _: &[u64], outs: &[u64], marks: &[(u32, u64)]) -> Split<u64> {
        let mut left = total(marks, |m| *m);
        let mut order: Vec<usize> = (0..outs.len()).collect();
        order.sort_by_key(|&j| (std::cmp::Reverse(outs[j]), j));
        let mut out = Vec::new();
        for j in order {
            let take = left.min(outs[j]);
            if take > 0 {
                out.push((j as u32, take));
                left -= take;
            }
        }
        out.sort_unstable();
        Split {
            marks: out,
            fee: left,
            rounding: 0,
        }
    }

    fn backward(&self, _: &[u64], _: &[u64], _: &[(u32, u64)]) -> Option<Split<u64>> {
        None
    }
}

/// Ranges of satoshis inside one coin, `[start, end)`, sorted and disjoint.
pub type Spans = Vec<(u64, u64)>;

/// FIFO and LIFO: the inputs' satoshis are laid end to end (FIFO in input
/// order, LIFO in reverse input order) and flow into the outputs in output
/// order; the fee takes the tail. Taint is tracked as ranges of satoshis,
/// so both directions are exact, with no rounding.
pub struct Ordered {
    pub last_in_first_out: bool,
}

impl Ordered {
    /// Where each input starts in the stream of satoshis.
    fn input_starts(&self, ins: &[u64]) -> Vec<u64> {
        let mut starts = vec![0; ins.len()];
        let mut at = 0;
        let order: Box<dyn Iterator<Item = usize>> = match self.last_in_first_out {
            false => Box::new(0..ins.len()),
            true => Box::new((0..ins.len()).rev()),
        };
        for i in order {
            starts[i] = at;
            at += ins[i];
        }
        starts
    }
}

fn output_starts(outs: &[u64]) -> Vec<u64> {
    outs.iter()
        .scan(0, |at, &v| {
            let s = *at;
            *at += v;
            Some(s)
        })
        .collect()
}

/// Moves marked spans from `from` coins (starting at `from_starts` in the
/// stream) onto the `to` coins that overlap them; returns the marks and the
/// marked satoshis that fell outside every `to` coin.
fn carry(
    from_starts: &[u64],
    to_starts: &[u64],
    to_values: &[u64],
    marks: &[(u32, Spans)],
) -> (Vec<(u32, Spans)>, u64) {
    // `to` coins by stream position, so overlaps are a binary search away.
    let mut by_start: Vec<usize> = (0..to_starts.len()).filter(|&j| to_values[j] > 0).collect();
    by_start.sort_by_key(|&j| to_starts[j]);
    let mut got: Vec<Spans> = vec![Vec::new(); to_starts.len()];
    let mut outside = 0;
    for (i, spans) in marks {
        let base = from_starts[*i as usize];
        for &(a, b) in spans {
            let (mut x, y) = (base + a, base + b);
            let mut k = by_start.partition_point(|&j| to_starts[j] + to_values[j] <= x);
            while x < y {
                match by_start.get(k) {
                    Some(&j) if to_starts[j] <= x => {
                        let end = y.min(to_starts[j] + to_values[j]);
                        got[j].push((x - to_starts[j], end - to_starts[j]));
                        x = end;
                        k += 1;
                    }
                    Some(&j) => {
                        let gap_end = y.min(to_starts[j]);
                        outside += gap_end - x;
                        x = gap_end;
                    }
                    None => {
                        outside += y - x;
                        x = y;
                    }
                }
            }
        }
    }
    let marks = got
        .into_iter()
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .map(|(j, s)| (j as u32, merged(s)))
        .collect();
    (marks, outside)
}

/// Sorts spans and joins the ones that touch.
fn merged(mut spans: Spans) -> Spans {
    spans.sort_unstable();
    let mut out: Spans = Vec::with_capacity(spans.len());
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if last.1 >= a => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

impl Policy for Ordered {
    type Mark = Spans;

    fn full(value: u64) -> Spans {
        match value {
            0 => Vec::new(),
            v => vec![(0, v)],
        }
    }

    fn amount(mark: &Spans) -> u64 {
        mark.iter().map(|(a, b)| b - a).sum()
    }

    fn forward(&self, ins: &[u64], outs: &[u64], marks: &[(u32, Spans)]) -> Split<Spans> {
        let (marks, fee) = carry(&self.input_starts(ins), &output_starts(outs), outs, marks);
        Split {
            marks,
            fee,
            rounding: 0,
        }
    }

    fn backward(&self, ins: &[u64], outs: &[u64], marks: &[(u32, Spans)]) -> Option<Split<Spans>> {
        let (marks, outside) = carry(&output_starts(outs), &self.input_starts(ins), ins, marks);
        // Outputs lie within the inputs' value: nothing can fall outside.
        debug_assert_eq!(outside, 0);
        Some(Split {
            marks,
            fee: 0,
            rounding: outside,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Worked examples (the README's): inputs 6 (tainted) and 4 (clean),
    // outputs 5, 3 and a fee of 2.
    const INS: [u64; 2] = [6, 4];
    const OUTS: [u64; 2] = [5, 3];

    #[test]
    fn poison_taints_every_output_wholly() {
        let s = Poison.forward(&INS, &OUTS, &[(0, 6)]);
        assert_eq!((s.marks, s.fee), (vec![(0, 5), (1, 3)], 2));
        let back = Poison.backward(&INS, &OUTS, &[(1, 3)]).unwrap();
        assert_eq!(back.marks, vec![(0, 6), (1, 4)]);
    }

    #[test]
    fn haircut_shares_in_proportion_and_rounds_down() {
        // 6/10 of each: output 5 → 3, output 3 → 1.8 → 1, fee 2 → 1.2 → 1;
        // 0.8 + 0.2 = 1 satoshi of rounding.
        let s = Haircut.forward(&INS, &OUTS, &[(0, 6)]);
        assert_eq!(
            s,
            Split {
                marks: vec![(0, 3), (1, 1)],
                fee: 1,
                rounding: 1
            }
        );
        // Where did output 0's 5 come from: 6/10 → 3 from input 0, 4/10 → 2
        // from input 1.
        let back = Haircut.backward(&INS, &OUTS, &[(0, 5)]).unwrap();
        assert_eq!(
            back,
            Split {
                marks: vec![(0, 3), (1, 2)],
                fee: 0,
                rounding: 0
            }
        );
        // Output 1's 3: 1.8 → 1 from input 0, 1.2 → 1 from input 1, 1 left.
        let back = Haircut.backward(&INS, &OUTS, &[(1, 3)]).unwrap();
        assert_eq!((back.marks, back.rounding), (vec![(0, 1), (1, 1)], 1));
    }

    #[test]
    fn fifo_and_lifo_lay_inputs_end_to_end() {
        let fifo = Ordered {
            last_in_first_out: false,
        };
        // FIFO: input 0's satoshis 0..6 fill output 0 (0..5) and 1 of output 1.
        let s = fifo.forward(&INS, &OUTS, &[(0, vec![(0, 6)])]);
        assert_eq!(s.marks, vec![(0, vec![(0, 5)]), (1, vec![(0, 1)])]);
        assert_eq!(s.fee, 0);
        // Input 1 (the clean one) tainted instead: 2 to output 1, 2 to the fee.
        let s = fifo.forward(&INS, &OUTS, &[(1, vec![(0, 4)])]);
        assert_eq!((s.marks, s.fee), (vec![(1, vec![(1, 3)])], 2));
        // LIFO: input 1 comes first: 4 to output 0, then input 0's 6: 1 to
        // output 0, 3 to output 1, 2 to the fee.
        let lifo = Ordered {
            last_in_first_out: true,
        };
        let s = lifo.forward(&INS, &OUTS, &[(0, vec![(0, 6)])]);
        assert_eq!(
            (s.marks, s.fee),
            (vec![(0, vec![(4, 5)]), (1, vec![(0, 3)])], 2)
        );
        // Backward FIFO: output 1 (stream 5..8) came from input 0's 5..6
        // and input 1's 0..2.
        let back = fifo.backward(&INS, &OUTS, &[(1, vec![(0, 3)])]).unwrap();
        assert_eq!(back.marks, vec![(0, vec![(5, 6)]), (1, vec![(0, 2)])]);
    }

    #[test]
    fn tiho_fills_the_largest_outputs_first() {
        // 4 tainted: output 0 (5) takes all of it.
        let s = Tiho.forward(&INS, &OUTS, &[(1, 4)]);
        assert_eq!((s.marks, s.fee), (vec![(0, 4)], 0));
        // 10 tainted: 5, then 3, then 2 to the fee.
        let s = Tiho.forward(&INS, &OUTS, &[(0, 6), (1, 4)]);
        assert_eq!((s.marks, s.fee), (vec![(0, 5), (1, 3)], 2));
        assert!(Tiho.backward(&INS, &OUTS, &[]).is_none());
    }
}
