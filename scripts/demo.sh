#!/usr/bin/env bash
# Indexes the real mainnet blocks that ship in tests/data (heights 0–4521
# plus a stale fork) and shows what was indexed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --bin satflow
DB="${SATFLOW_DEMO_DB:-target/demo-db}"
BLOCKS=target/demo-blocks
rm -rf "$DB" "$BLOCKS" && mkdir -p "$BLOCKS"
cp tests/data/mainnet/stale_fork/btcd_reorgtest_blk_0_to_4.dat "$BLOCKS/blk00000.dat"
cp tests/data/mainnet/blk00000_first1MiB.dat "$BLOCKS/blk00001.dat"
SATFLOW=target/release/satflow
$SATFLOW index --blocks-dir "$BLOCKS" --db "$DB"
echo; $SATFLOW query --db "$DB" status
echo; $SATFLOW query --db "$DB" tx f4184fc596403b9d638783cf57adfe4c75c605f6356fbc91338530e9831e9e16
$SATFLOW query --db "$DB" address 12cbQLTFMXRnSzktFkuoG3eHoMeFtpTu3S --limit 5
