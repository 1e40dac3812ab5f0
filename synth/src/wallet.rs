//! Unspent outputs an actor controls, kept in a plain vector so picking one at random is O(1).

use bitcoin::OutPoint;
use rand::Rng;

use crate::keys::{KeyId, ScriptKind};

/// Coinbase outputs may be spent only this many blocks after their own.
pub const COINBASE_MATURITY: u32 = 100;

#[derive(Clone, Copy, Debug)]
pub struct Utxo {
    pub outpoint: OutPoint,
    pub value: u64,
    pub key: KeyId,
    pub kind: ScriptKind,
    pub height: u32,
    pub coinbase: bool,
}

impl Utxo {
    pub fn spendable_at(&self, height: u32) -> bool {
        !self.coinbase || height >= self.height + COINBASE_MATURITY
    }
}

#[derive(Default)]
pub struct Wallet {
    utxos: Vec<Utxo>,
    balance: u64,
}

impl Wallet {
    pub fn len(&self) -> usize {
        self.utxos.len()
    }

    /// Includes immature coinbase outputs.
    pub fn balance(&self) -> u64 {
        self.balance
    }

    pub fn push(&mut self, utxo: Utxo) {
        self.balance += utxo.value;
        self.utxos.push(utxo);
    }

    /// The coins, in no particular order.
    pub fn coins(&self) -> &[Utxo] {
        &self.utxos
    }

    /// A random coin, left in the wallet (its address is on chain: dusting targets).
    pub fn peek(&self, rng: &mut impl Rng) -> Option<Utxo> {
        (!self.utxos.is_empty()).then(|| self.utxos[rng.gen_range(0..self.utxos.len())])
    }

    /// Takes every coin `pred` accepts, at most `max`, in the wallet's order.
    pub fn take_matching(&mut self, max: usize, mut pred: impl FnMut(&Utxo) -> bool) -> Vec<Utxo> {
        let mut taken = Vec::new();
        let mut i = 0;
        while i < self.utxos.len() && taken.len() < max {
            if pred(&self.utxos[i]) {
                let utxo = self.utxos.remove(i);
                self.balance -= utxo.value;
                taken.push(utxo);
            } else {
                i += 1;
            }
        }
        taken
    }

    pub fn give_back(&mut self, utxos: Vec<Utxo>) {
        for utxo in utxos {
            self.push(utxo);
        }
    }

    /// A random coin spendable at `height`; the scan after a miss keeps immature coinbase
    /// outputs (only pools and a few miners hold them) from blocking the wallet.
    pub fn take(&mut self, rng: &mut impl Rng, height: u32) -> Option<Utxo> {
        if self.utxos.is_empty() {
            return None;
        }
        let start = rng.gen_range(0..self.utxos.len());
        let n = self.utxos.len();
        let found = (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| self.utxos[i].spendable_at(height))?;
        let utxo = self.utxos.swap_remove(found);
        self.balance -= utxo.value;
        // Coins wander between 30k wallets; without giving capacity back, every wallet would
        // keep its high-water mark and memory would creep up with the chain length.
        if self.utxos.capacity() > 4 * self.utxos.len() + 8 {
            self.utxos.shrink_to(2 * self.utxos.len());
        }
        Some(utxo)
    }

    /// Up to `n` random spendable coins.
    pub fn take_n(&mut self, rng: &mut impl Rng, n: usize, height: u32) -> Vec<Utxo> {
        (0..n).map_while(|_| self.take(rng, height)).collect()
    }

    /// Random coins until their sum reaches `target` (at most `max` coins); if that fails the
    /// coins stay in the wallet and None is returned.
    pub fn take_value(
        &mut self,
        rng: &mut impl Rng,
        target: u64,
        max: usize,
        height: u32,
    ) -> Option<Vec<Utxo>> {
        let mut taken = Vec::new();
        let mut sum = 0;
        while sum < target && taken.len() < max {
            let Some(utxo) = self.take(rng, height) else {
                break;
            };
            sum += utxo.value;
            taken.push(utxo);
        }
        if sum >= target {
            Some(taken)
        } else {
            self.give_back(taken);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn coin(value: u64, height: u32, coinbase: bool) -> Utxo {
        Utxo {
            outpoint: OutPoint::null(),
            value,
            key: 0,
            kind: ScriptKind::P2wpkh,
            height,
            coinbase,
        }
    }

    #[test]
    fn immature_coinbase_is_never_taken() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut wallet = Wallet::default();
        wallet.push(coin(5, 50, true));
        assert!(wallet.take(&mut rng, 149).is_none());
        assert_eq!(wallet.take(&mut rng, 150).map(|u| u.value), Some(5));
    }

    #[test]
    fn take_value_is_all_or_nothing() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut wallet = Wallet::default();
        for v in [10, 20, 30] {
            wallet.push(coin(v, 1, false));
        }
        assert!(wallet.take_value(&mut rng, 61, 5, 10).is_none());
        assert_eq!((wallet.len(), wallet.balance()), (3, 60));
        let taken = wallet.take_value(&mut rng, 45, 5, 10).unwrap();
        assert!(taken.iter().map(|u| u.value).sum::<u64>() >= 45);
        assert_eq!(
            wallet.balance() + taken.iter().map(|u| u.value).sum::<u64>(),
            60
        );
    }
}
