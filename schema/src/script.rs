//! Output scripts: their standard type, and the key under which satflow
//! files their address history.

use bitcoin::hashes::{hash160, sha256, Hash};

/// The standard script templates, as Bitcoin Core's `Solver` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ScriptType {
    NonStandard = 0,
    P2pk = 1,
    P2pkh = 2,
    P2sh = 3,
    P2wpkh = 4,
    P2wsh = 5,
    P2tr = 6,
    Multisig = 7,
    OpReturn = 8,
    WitnessUnknown = 9,
    /// The script of a coin spent from before the index's first block when
    /// no prevouts were given for it.
    Unknown = 10,
    /// A script only of pushes that leaves a true value (or the empty
    /// script): whoever spends it signs nothing (`OP_TRUE`, `OP_2`, …).
    AnyoneCanSpend = 11,
}

impl ScriptType {
    pub fn from_u8(b: u8) -> Option<ScriptType> {
        use ScriptType::*;
        [
            NonStandard,
            P2pk,
            P2pkh,
            P2sh,
            P2wpkh,
            P2wsh,
            P2tr,
            Multisig,
            OpReturn,
            WitnessUnknown,
            Unknown,
            AnyoneCanSpend,
        ]
        .into_iter()
        .find(|t| *t as u8 == b)
    }

    pub fn name(self) -> &'static str {
        match self {
            ScriptType::NonStandard => "nonstandard",
            ScriptType::P2pk => "p2pk",
            ScriptType::P2pkh => "p2pkh",
            ScriptType::P2sh => "p2sh",
            ScriptType::P2wpkh => "p2wpkh",
            ScriptType::P2wsh => "p2wsh",
            ScriptType::P2tr => "p2tr",
            ScriptType::Multisig => "multisig",
            ScriptType::OpReturn => "op_return",
            ScriptType::WitnessUnknown => "witness_unknown",
            ScriptType::Unknown => "unknown",
            ScriptType::AnyoneCanSpend => "anyone_can_spend",
        }
    }

    /// Whether spending a coin of this type proves nothing about who spent
    /// it: no key signs. Witness programs of an unknown version (pay-to-anchor
    /// `OP_1 <4e73>` among them) carry no spending condition until a soft fork
    /// gives their version meaning (BIP141, BIP341), and `AnyoneCanSpend`
    /// scripts need only a push. The clustering heuristics leave such inputs
    /// out: a fee-bumping child spends a shared anchor beside its own coins.
    pub fn is_keyless(self) -> bool {
        matches!(
            self,
            ScriptType::WitnessUnknown | ScriptType::AnyoneCanSpend
        )
    }
}

/// How an address key's bytes are to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum AddrKind {
    P2pkh = 1,
    P2sh = 2,
    P2wpkh = 3,
    P2wsh = 4,
    P2tr = 5,
    /// SHA-256 of a script that has no address form (bare multisig,
    /// non-standard, unknown witness versions).
    ScriptHash = 6,
}

impl AddrKind {
    pub fn from_u8(b: u8) -> Option<AddrKind> {
        use AddrKind::*;
        [P2pkh, P2sh, P2wpkh, P2wsh, P2tr, ScriptHash]
            .into_iter()
            .find(|k| *k as u8 == b)
    }

    pub fn name(self) -> &'static str {
        match self {
            AddrKind::P2pkh => "p2pkh",
            AddrKind::P2sh => "p2sh",
            AddrKind::P2wpkh => "p2wpkh",
            AddrKind::P2wsh => "p2wsh",
            AddrKind::P2tr => "p2tr",
            AddrKind::ScriptHash => "script",
        }
    }

    pub fn hash_len(self) -> usize {
        match self {
            AddrKind::P2pkh | AddrKind::P2sh | AddrKind::P2wpkh => 20,
            AddrKind::P2wsh | AddrKind::P2tr | AddrKind::ScriptHash => 32,
        }
    }
}

/// Identity of an address: its kind and hash. P2PK outputs are filed under
/// the P2PKH key of their public key, as block explorers show them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrKey {
    kind: AddrKind,
    hash: [u8; 32], // 20-byte hashes are zero-padded
}

impl AddrKey {
    pub fn new(kind: AddrKind, hash: &[u8]) -> Option<AddrKey> {
        if hash.len() != kind.hash_len() {
            return None;
        }
        let mut h = [0u8; 32];
        h[..hash.len()].copy_from_slice(hash);
        Some(AddrKey { kind, hash: h })
    }

    pub fn kind(&self) -> AddrKind {
        self.kind
    }

    pub fn hash(&self) -> &[u8] {
        &self.hash[..self.kind.hash_len()]
    }

    /// Key bytes as stored: kind byte then the hash.
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::codec::Codec::encode(self).to_vec()
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<AddrKey> {
        let (&kind, hash) = bytes.split_first()?;
        AddrKey::new(AddrKind::from_u8(kind)?, hash)
    }

    /// The key for a script without an address form.
    pub fn for_script(script: &[u8]) -> AddrKey {
        AddrKey {
            kind: AddrKind::ScriptHash,
            hash: sha256::Hash::hash(script).to_byte_array(),
        }
    }
}

/// Address keys are a kind byte then the hash; the kind fixes the length,
/// so one address's rows in a family keyed by it are one key prefix.
impl crate::codec::Codec for AddrKey {
    type Bytes = crate::codec::Inline<33>;
    fn encode(&self) -> crate::codec::Inline<33> {
        let mut v = crate::codec::Inline::new();
        v.extend(&[self.kind as u8]);
        v.extend(self.hash());
        v
    }
    fn decode(bytes: &[u8]) -> Result<AddrKey, crate::codec::RowError> {
        AddrKey::from_bytes(bytes).ok_or(crate::codec::RowError {
            row: "address key",
            len: bytes.len(),
        })
    }
}

impl std::fmt::Debug for AddrKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}:{}", self.kind, hex::encode(self.hash()))
    }
}

/// Classifies an output script and derives its address key (none for
/// OP_RETURN, which can never be spent).
pub fn classify(script: &[u8]) -> (ScriptType, Option<AddrKey>) {
    let key = |kind, hash: &[u8]| AddrKey::new(kind, hash);
    match script {
        [0x76, 0xa9, 0x14, h @ .., 0x88, 0xac] if h.len() == 20 => {
            (ScriptType::P2pkh, key(AddrKind::P2pkh, h))
        }
        [0xa9, 0x14, h @ .., 0x87] if h.len() == 20 => (ScriptType::P2sh, key(AddrKind::P2sh, h)),
        [0x00, 0x14, h @ ..] if h.len() == 20 => (ScriptType::P2wpkh, key(AddrKind::P2wpkh, h)),
        [0x00, 0x20, h @ ..] if h.len() == 32 => (ScriptType::P2wsh, key(AddrKind::P2wsh, h)),
        [0x51, 0x20, h @ ..] if h.len() == 32 => (ScriptType::P2tr, key(AddrKind::P2tr, h)),
        [0x6a, ..] => (ScriptType::OpReturn, None),
        [len, pk @ .., 0xac] if usize::from(*len) == pk.len() && is_pubkey(pk) => {
            let h = hash160::Hash::hash(pk);
            (ScriptType::P2pk, key(AddrKind::P2pkh, h.as_byte_array()))
        }
        _ if is_witness_program(script) => (
            ScriptType::WitnessUnknown,
            Some(AddrKey::for_script(script)),
        ),
        _ if is_bare_multisig(script) => (ScriptType::Multisig, Some(AddrKey::for_script(script))),
        _ if is_anyone_can_spend(script) => (
            ScriptType::AnyoneCanSpend,
            Some(AddrKey::for_script(script)),
        ),
        _ => (ScriptType::NonStandard, Some(AddrKey::for_script(script))),
    }
}

/// A script of pushes alone whose last push is true, or the empty script
/// (then the spender's own push decides): it holds no signature check, so
/// an input spending it can come from anyone. A push-only script ending in
/// false can never be spent and stays `NonStandard`.
fn is_anyone_can_spend(script: &[u8]) -> bool {
    use bitcoin::script::Instruction;
    let mut last_true = true;
    for ins in bitcoin::Script::from_bytes(script).instructions() {
        last_true = match ins {
            Ok(Instruction::PushBytes(b)) => cast_to_bool(b.as_bytes()),
            // OP_1NEGATE and OP_1..OP_16 push a non-zero number.
            Ok(Instruction::Op(op)) if matches!(op.to_u8(), 0x4f | 0x51..=0x60) => true,
            _ => return false,
        };
    }
    last_true
}

/// The script interpreter's truth: any non-zero byte, but negative zero
/// (a last byte of 0x80 after zeros) is false.
fn cast_to_bool(bytes: &[u8]) -> bool {
    match bytes.split_last() {
        None => false,
        Some((&last, rest)) => rest.iter().any(|&b| b != 0) || (last != 0 && last != 0x80),
    }
}

/// Core's `CPubKey::ValidSize`: the size the first byte announces.
fn is_pubkey(pk: &[u8]) -> bool {
    match pk.first() {
        Some(2 | 3) => pk.len() == 33,
        Some(4 | 6 | 7) => pk.len() == 65,
        _ => false,
    }
}

/// BIP141: a version opcode then one push of 2–40 bytes.
fn is_witness_program(s: &[u8]) -> bool {
    let version_op = matches!(s.first(), Some(0x00 | 0x51..=0x60));
    version_op
        && (4..=42).contains(&s.len())
        && usize::from(s[1]) + 2 == s.len()
        && (2..=40).contains(&s[1])
}

/// `OP_m <pubkey>… OP_n OP_CHECKMULTISIG` with 1 ≤ m ≤ n ≤ 16 keys.
fn is_bare_multisig(s: &[u8]) -> bool {
    let small_int = |op: u8| (0x51..=0x60).contains(&op).then(|| op - 0x50);
    let (Some(&first), Some(&[n_op, 0xae])) = (
        s.first(),
        s.get(s.len().saturating_sub(2)..).map(|t| t as &[u8]),
    ) else {
        return false;
    };
    let (Some(m), Some(n)) = (small_int(first), small_int(n_op)) else {
        return false;
    };
    // `OP_1 OP_CHECKMULTISIG` alone (2 bytes) has no room for keys.
    let Some(mut rest) = s.get(1..s.len() - 2) else {
        return false;
    };
    let mut keys = 0u8;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        if tail.len() < len || !is_pubkey(&tail[..len]) {
            return false;
        }
        keys += 1;
        rest = &tail[len..];
    }
    m <= n && keys == n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn standard_templates() {
        let cases = [
            ("76a91462e907b15cbf27d5425399ebf6f0fb50ebb88f1888ac", ScriptType::P2pkh, Some(AddrKind::P2pkh)),
            ("a914b472a266d0bd89c13706a4132ccfb16f7c3b9fcb87", ScriptType::P2sh, Some(AddrKind::P2sh)),
            ("0014751e76e8199196d454941c45d1b3a323f1433bd6", ScriptType::P2wpkh, Some(AddrKind::P2wpkh)),
            (
                "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262",
                ScriptType::P2wsh,
                Some(AddrKind::P2wsh),
            ),
            (
                "5120a60869f0dbcf1dc659c9cecbaf8050135ea9e8cdc487053f1dc6880949dc684c",
                ScriptType::P2tr,
                Some(AddrKind::P2tr),
            ),
            ("6a0b68656c6c6f20776f726c64", ScriptType::OpReturn, None),
            ("6a", ScriptType::OpReturn, None),
            ("", ScriptType::AnyoneCanSpend, Some(AddrKind::ScriptHash)),
            ("51", ScriptType::AnyoneCanSpend, Some(AddrKind::ScriptHash)),
            ("0101", ScriptType::AnyoneCanSpend, Some(AddrKind::ScriptHash)),
            ("00", ScriptType::NonStandard, Some(AddrKind::ScriptHash)),
            ("0180", ScriptType::NonStandard, Some(AddrKind::ScriptHash)),
            ("51024e73", ScriptType::WitnessUnknown, Some(AddrKind::ScriptHash)),
            ("ac", ScriptType::NonStandard, Some(AddrKind::ScriptHash)),
            ("5228751e76e8199196d454941c45d1b3a323f1433bd6751e76e8199196d454941c45d1b3a323f1433bd6", ScriptType::WitnessUnknown, Some(AddrKind::ScriptHash)),
        ];
        for (script, ty, kind) in cases {
            let (t, k) = classify(&h(script));
            assert_eq!((t, k.map(|k| k.kind())), (ty, kind), "{script}");
        }
    }

    #[test]
    fn keyless_scripts_are_those_no_key_signs() {
        // Pay-to-anchor, OP_TRUE, the empty script, a true push, OP_1NEGATE.
        for script in ["51024e73", "51", "", "0101", "4f", "5302abcd"] {
            assert!(classify(&h(script)).0.is_keyless(), "{script}");
        }
        // Every standard template needs a key, and so does a bare CHECKSIG or
        // a push-only script that ends false (which nobody can spend).
        for script in [
            "76a91462e907b15cbf27d5425399ebf6f0fb50ebb88f1888ac",
            "0014751e76e8199196d454941c45d1b3a323f1433bd6",
            "5120a60869f0dbcf1dc659c9cecbaf8050135ea9e8cdc487053f1dc6880949dc684c",
            "ac",
            "00",
            "510100",
            "4c",
        ] {
            assert!(!classify(&h(script)).0.is_keyless(), "{script}");
        }
    }

    #[test]
    fn p2pk_is_filed_under_its_p2pkh_key() {
        // The genesis output: 65-byte uncompressed key + OP_CHECKSIG.
        let script = h("4104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac");
        let (t, k) = classify(&script);
        assert_eq!(t, ScriptType::P2pk);
        let k = k.unwrap();
        assert_eq!(k.kind(), AddrKind::P2pkh);
        assert_eq!(
            hex::encode(k.hash()),
            "62e907b15cbf27d5425399ebf6f0fb50ebb88f18"
        );
        // A 33-byte push announcing an uncompressed key is not P2PK.
        let mut bad = vec![0x21, 0x04];
        bad.extend([1u8; 32]);
        bad.push(0xac);
        assert_eq!(classify(&bad).0, ScriptType::NonStandard);
    }

    #[test]
    fn bare_multisig() {
        let k = |b: u8| {
            let mut v = vec![0x21, 0x02];
            v.extend([b; 32]);
            v
        };
        let mut s = vec![0x51];
        s.extend(k(1));
        s.extend(k(2));
        s.extend([0x52, 0xae]);
        assert_eq!(classify(&s).0, ScriptType::Multisig);
        s[0] = 0x53; // 3-of-2 is not a multisig template
        assert_eq!(classify(&s).0, ScriptType::NonStandard);
    }

    /// Output scripts are whatever a transaction says: every script of up
    /// to 2 bytes, and every 3-byte one ending in a checking opcode, is
    /// classified without a panic (`OP_1 OP_CHECKMULTISIG` once sliced
    /// out of bounds).
    #[test]
    fn every_short_script_is_classified() {
        let mut scripts = vec![vec![]];
        scripts.extend((0..=255u8).map(|a| vec![a]));
        scripts.extend((0..=255u8).flat_map(|a| (0..=255u8).map(move |b| vec![a, b])));
        for end in [0xac, 0xad, 0xae, 0xaf, 0x87] {
            let three = (0..=255u8).flat_map(|a| (0..=255u8).map(move |b| vec![a, b, end]));
            scripts.extend(three);
        }
        for s in &scripts {
            let (kind, _) = classify(s);
            assert_ne!(kind, ScriptType::Multisig, "{}", hex::encode(s));
        }
        assert_eq!(classify(&[0x51, 0xae]).0, ScriptType::NonStandard);
    }

    #[test]
    fn key_bytes_round_trip() {
        let (_, k) = classify(&h("0014751e76e8199196d454941c45d1b3a323f1433bd6"));
        let k = k.unwrap();
        assert_eq!(k.to_bytes().len(), 21);
        assert_eq!(AddrKey::from_bytes(&k.to_bytes()), Some(k));
        assert_eq!(AddrKey::from_bytes(&[9, 1, 2]), None);
    }
}
