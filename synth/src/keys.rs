//! Stand-ins for keys, scripts and signatures.
//!
//! Nothing here is a real curve point or a valid signature: a key is a number (`KeyId`) that a
//! cheap mixing function expands into pubkey-shaped bytes. What IS real is every hash that links
//! an output to its spend (hash160 of the pubkey, sha256 of the witness script, hash160 of the
//! redeem script), so an indexer that checks "revealed key hashes to the address" is satisfied.

use std::fmt::Write;

use bitcoin::hashes::{ripemd160, Hash};
use bitcoin::{Address, Network, PubkeyHash, ScriptBuf, Witness};
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};

/// Identity of one key (or key set, for multisig) of some actor.
pub type KeyId = u64;

/// The kinds of scriptPubKey the generator writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScriptKind {
    P2wpkh,
    P2tr,
    P2pkh,
    /// P2SH wrapping P2WPKH ("nested segwit"), by far the commonest P2SH spend of recent years.
    P2sh,
    /// 2-of-3 multisig witness script.
    P2wsh,
    OpReturn,
    P2pk,
    /// 1-of-2 bare multisig.
    BareMultisig,
    /// A P2PKH template followed by OP_NOP: spendable, but matches no standard template.
    NonStandard,
}

impl ScriptKind {
    pub const ALL: [ScriptKind; 9] = [
        ScriptKind::P2wpkh,
        ScriptKind::P2tr,
        ScriptKind::P2pkh,
        ScriptKind::P2sh,
        ScriptKind::P2wsh,
        ScriptKind::OpReturn,
        ScriptKind::P2pk,
        ScriptKind::BareMultisig,
        ScriptKind::NonStandard,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ScriptKind::P2wpkh => "p2wpkh",
            ScriptKind::P2tr => "p2tr",
            ScriptKind::P2pkh => "p2pkh",
            ScriptKind::P2sh => "p2sh",
            ScriptKind::P2wsh => "p2wsh",
            ScriptKind::OpReturn => "op_return",
            ScriptKind::P2pk => "p2pk",
            ScriptKind::BareMultisig => "bare_multisig",
            ScriptKind::NonStandard => "nonstandard",
        }
    }

    /// Upper bound of the weight an input spending this kind adds (longest signature shapes,
    /// plus the empty witness a legacy input gets inside a segwit transaction), as a wallet
    /// estimates before signing.
    pub fn input_weight(self) -> u64 {
        const OUTPOINT_SEQ: u64 = 36 + 4;
        let legacy = |script_sig: u64| 4 * (OUTPOINT_SEQ + 1 + script_sig) + 1;
        match self {
            ScriptKind::P2wpkh => 4 * (OUTPOINT_SEQ + 1) + 1 + (1 + ECDSA_MAX) + (1 + 33),
            ScriptKind::P2tr => 4 * (OUTPOINT_SEQ + 1) + 1 + (1 + SCHNORR_MAX),
            ScriptKind::P2sh => 4 * (OUTPOINT_SEQ + 1 + 23) + 1 + (1 + ECDSA_MAX) + (1 + 33),
            ScriptKind::P2wsh => 4 * (OUTPOINT_SEQ + 1) + 1 + 1 + 2 * (1 + ECDSA_MAX) + 1 + 105,
            ScriptKind::P2pkh | ScriptKind::NonStandard => legacy(1 + ECDSA_MAX + 1 + 33),
            ScriptKind::P2pk => legacy(1 + ECDSA_MAX),
            ScriptKind::BareMultisig => legacy(1 + 1 + ECDSA_MAX),
            ScriptKind::OpReturn => unreachable!("OP_RETURN outputs are never spent"),
        }
    }
}

/// Longest DER signature we produce (33-byte r, 32-byte low s, sighash byte).
const ECDSA_MAX: u64 = 72;
/// Schnorr signature with an explicit sighash byte.
const SCHNORR_MAX: u64 = 65;

/// Weight of an output paying `kind` (for OP_RETURN the key decides the payload length).
pub fn output_weight(kind: ScriptKind, key: KeyId) -> u64 {
    let script_len = match kind {
        ScriptKind::P2wpkh => 22,
        ScriptKind::P2tr | ScriptKind::P2wsh => 34,
        ScriptKind::P2pkh => 25,
        ScriptKind::P2sh => 23,
        ScriptKind::P2pk => 35,
        ScriptKind::BareMultisig => 71,
        ScriptKind::NonStandard => 26,
        ScriptKind::OpReturn => {
            let len = op_return_len(key);
            1 + len + if len > 75 { 2 } else { 1 }
        }
    };
    4 * (8 + 1 + script_len)
}

/// OP_RETURN payloads range over 20..=80 bytes (timestamps, protocol markers, commitments).
fn op_return_len(key: KeyId) -> u64 {
    20 + key % 61
}

/// SplitMix64: a cheap, well-mixed expansion of a key id into pseudo-random words.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// RIPEMD160(SHA256(data)); sha2 uses SHA-NI where the CPU has it.
pub fn hash160(data: &[u8]) -> [u8; 20] {
    ripemd160::Hash::hash(&Sha256::digest(data)).to_byte_array()
}

/// Turns key ids into scripts, spends and address strings; `salt` makes keys differ per seed.
#[derive(Clone, Copy)]
pub struct Keyring {
    pub salt: u64,
    pub network: Network,
}

impl Keyring {
    fn words(&self, key: KeyId, sub: u64) -> [u8; 32] {
        let mut out = [0u8; 32];
        let base = mix64(self.salt ^ key.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (sub << 60));
        for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&mix64(base.wrapping_add(i as u64)).to_le_bytes());
        }
        out
    }

    /// A compressed-pubkey-shaped 33-byte string (02/03 prefix).
    pub fn pubkey(&self, key: KeyId, sub: u64) -> [u8; 33] {
        let body = self.words(key, sub);
        let mut pk = [0u8; 33];
        pk[0] = 2 + (body[31] & 1);
        pk[1..].copy_from_slice(&body);
        pk
    }

    fn multisig_2of3(&self, key: KeyId) -> [u8; 105] {
        let mut script = [0u8; 105];
        script[0] = 0x52;
        for sub in 0..3 {
            script[1 + 34 * sub] = 33;
            script[2 + 34 * sub..35 + 34 * sub].copy_from_slice(&self.pubkey(key, sub as u64));
        }
        script[103..].copy_from_slice(&[0x53, 0xae]);
        script
    }

    pub fn script_pubkey(&self, kind: ScriptKind, key: KeyId) -> ScriptBuf {
        let mut s = Vec::with_capacity(40);
        match kind {
            ScriptKind::P2wpkh => {
                s.extend_from_slice(&[0x00, 20]);
                s.extend_from_slice(&hash160(&self.pubkey(key, 0)));
            }
            ScriptKind::P2tr => {
                s.extend_from_slice(&[0x51, 32]);
                s.extend_from_slice(&self.words(key, 7));
            }
            ScriptKind::P2pkh | ScriptKind::NonStandard => {
                s.extend_from_slice(&[0x76, 0xa9, 20]);
                s.extend_from_slice(&hash160(&self.pubkey(key, 0)));
                s.extend_from_slice(&[0x88, 0xac]);
                if kind == ScriptKind::NonStandard {
                    s.push(0x61);
                }
            }
            ScriptKind::P2sh => {
                s.extend_from_slice(&[0xa9, 20]);
                s.extend_from_slice(&hash160(&self.nested_redeem_script(key)));
                s.push(0x87);
            }
            ScriptKind::P2wsh => {
                s.extend_from_slice(&[0x00, 32]);
                s.extend_from_slice(&Sha256::digest(self.multisig_2of3(key)));
            }
            ScriptKind::P2pk => {
                s.push(33);
                s.extend_from_slice(&self.pubkey(key, 0));
                s.push(0xac);
            }
            ScriptKind::BareMultisig => {
                s.push(0x51);
                for sub in 0..2 {
                    s.push(33);
                    s.extend_from_slice(&self.pubkey(key, sub));
                }
                s.extend_from_slice(&[0x52, 0xae]);
            }
            ScriptKind::OpReturn => {
                let len = op_return_len(key) as usize;
                s.push(0x6a);
                if len > 75 {
                    s.push(0x4c);
                }
                s.push(len as u8);
                let data = [self.words(key, 1), self.words(key, 2), self.words(key, 3)];
                s.extend(data.iter().flatten().take(len));
            }
        }
        ScriptBuf::from_bytes(s)
    }

    /// `OP_0 <hash160(pk)>`: the redeem script of P2SH-P2WPKH.
    fn nested_redeem_script(&self, key: KeyId) -> [u8; 22] {
        let mut redeem = [0u8; 22];
        redeem[1] = 20;
        redeem[2..].copy_from_slice(&hash160(&self.pubkey(key, 0)));
        redeem
    }

    /// scriptSig and witness that spend an output of `kind` locked to `key`.
    pub fn spend(
        &self,
        kind: ScriptKind,
        key: KeyId,
        rng: &mut impl RngCore,
    ) -> (ScriptBuf, Witness) {
        let pk = self.pubkey(key, 0);
        let push = |s: &mut Vec<u8>, data: &[u8]| {
            s.push(data.len() as u8);
            s.extend_from_slice(data);
        };
        let mut sig_script = Vec::new();
        let witness = match kind {
            ScriptKind::P2wpkh => {
                let (sig, len) = ecdsa_sig(rng);
                Witness::from_slice(&[&sig[..len], &pk])
            }
            ScriptKind::P2tr => {
                let (sig, len) = schnorr_sig(rng);
                Witness::from_slice(&[&sig[..len]])
            }
            ScriptKind::P2sh => {
                push(&mut sig_script, &self.nested_redeem_script(key));
                let (sig, len) = ecdsa_sig(rng);
                Witness::from_slice(&[&sig[..len], &pk])
            }
            ScriptKind::P2wsh => {
                let ((sig1, len1), (sig2, len2)) = (ecdsa_sig(rng), ecdsa_sig(rng));
                Witness::from_slice(&[
                    &[][..],
                    &sig1[..len1],
                    &sig2[..len2],
                    &self.multisig_2of3(key),
                ])
            }
            ScriptKind::P2pkh | ScriptKind::NonStandard => {
                let (sig, len) = ecdsa_sig(rng);
                push(&mut sig_script, &sig[..len]);
                push(&mut sig_script, &pk);
                Witness::new()
            }
            ScriptKind::P2pk => {
                let (sig, len) = ecdsa_sig(rng);
                push(&mut sig_script, &sig[..len]);
                Witness::new()
            }
            ScriptKind::BareMultisig => {
                let (sig, len) = ecdsa_sig(rng);
                sig_script.push(0x00);
                push(&mut sig_script, &sig[..len]);
                Witness::new()
            }
            ScriptKind::OpReturn => unreachable!("OP_RETURN outputs are never spent"),
        };
        (ScriptBuf::from_bytes(sig_script), witness)
    }

    /// Appends the address string the indexer shows for `script` (of `kind`) to `out`; false
    /// for OP_RETURN. P2PK shows as the P2PKH address of its key; scripts without an address
    /// as `script:<hex>`.
    pub fn write_label(&self, kind: ScriptKind, script: &ScriptBuf, out: &mut String) -> bool {
        const INFALLIBLE: &str = "writing to a String cannot fail";
        match kind {
            ScriptKind::OpReturn => return false,
            ScriptKind::P2pk => {
                let hash = PubkeyHash::from_byte_array(hash160(&script.as_bytes()[1..34]));
                write!(out, "{}", Address::p2pkh(hash, self.network)).expect(INFALLIBLE);
            }
            ScriptKind::BareMultisig | ScriptKind::NonStandard => {
                write!(out, "script:{script:x}").expect(INFALLIBLE)
            }
            _ => {
                let address = Address::from_script(script, self.network)
                    .expect("standard templates always have an address");
                write!(out, "{address}").expect(INFALLIBLE);
            }
        }
        true
    }
}

/// A DER-shaped ECDSA signature with SIGHASH_ALL: 71 or 72 bytes, like real low-s signatures.
/// Returned as a buffer and its length, so spends allocate nothing for it.
fn ecdsa_sig(rng: &mut impl RngCore) -> ([u8; ECDSA_MAX as usize], usize) {
    let mut sig = [0u8; ECDSA_MAX as usize];
    let high_r = rng.gen::<bool>();
    let r_len = if high_r { 33 } else { 32 };
    sig[..4].copy_from_slice(&[0x30, (4 + r_len + 32) as u8, 0x02, r_len as u8]);
    rng.fill_bytes(&mut sig[4..4 + r_len]);
    if high_r {
        sig[4] = 0;
        sig[5] |= 0x80;
    } else {
        sig[4] = (sig[4] & 0x7f) | 1;
    }
    let s = 4 + r_len;
    sig[s] = 0x02;
    sig[s + 1] = 32;
    rng.fill_bytes(&mut sig[s + 2..s + 34]);
    sig[s + 2] = (sig[s + 2] & 0x7f) | 1;
    sig[s + 34] = 0x01;
    (sig, s + 35)
}

/// 64-byte BIP340 signature; one in twenty carries an explicit sighash byte.
fn schnorr_sig(rng: &mut impl RngCore) -> ([u8; SCHNORR_MAX as usize], usize) {
    let mut sig = [0u8; SCHNORR_MAX as usize];
    rng.fill_bytes(&mut sig[..64]);
    sig[64] = 0x01;
    (sig, if rng.gen_ratio(1, 20) { 65 } else { 64 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::consensus::Encodable;
    use rand::SeedableRng;

    /// The weight bounds that fee and block-fill planning rely on must really be bounds.
    #[test]
    fn weights_bound_real_sizes() {
        let ring = Keyring {
            salt: 9,
            network: Network::Regtest,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for kind in ScriptKind::ALL {
            for key in 0..200u64 {
                let out = bitcoin::TxOut {
                    value: bitcoin::Amount::ZERO,
                    script_pubkey: ring.script_pubkey(kind, key),
                };
                let mut buf = Vec::new();
                out.consensus_encode(&mut buf).unwrap();
                assert_eq!(4 * buf.len() as u64, output_weight(kind, key), "{kind:?}");
                if kind == ScriptKind::OpReturn {
                    continue;
                }
                let (script_sig, witness) = ring.spend(kind, key, &mut rng);
                let input_len = 36 + 4 + 1 + script_sig.len() as u64;
                let mut witness_bytes = Vec::new();
                witness.consensus_encode(&mut witness_bytes).unwrap();
                let weight = 4 * input_len + witness_bytes.len() as u64;
                assert!(weight <= kind.input_weight(), "{kind:?}");
                assert!(weight + 8 > kind.input_weight(), "{kind:?} bound too loose");
            }
        }
    }
}
