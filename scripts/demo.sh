#!/usr/bin/env bash
# Indexes the real mainnet blocks that ship in tests/data (heights 0–4521
# plus a stale fork), serves them over gRPC, queries the server, and keeps
# serving until Ctrl-C. `satflow trace` runs on the same server.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --bin satflow
DB="${SATFLOW_DEMO_DB:-target/demo-db}"
LISTEN="${SATFLOW_DEMO_LISTEN:-127.0.0.1:50051}"
BLOCKS=target/demo-blocks
rm -rf "$DB" "$BLOCKS" && mkdir -p "$BLOCKS"
cp tests/data/mainnet/stale_fork/btcd_reorgtest_blk_0_to_4.dat "$BLOCKS/blk00000.dat"
cp tests/data/mainnet/blk00000_first1MiB.dat "$BLOCKS/blk00001.dat"
SATFLOW=target/release/satflow
$SATFLOW index --blocks-dir "$BLOCKS" --db "$DB"

LOG=target/demo-serve.log
$SATFLOW serve --db "$DB" --listen "$LISTEN" >"$LOG" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null' EXIT
until grep -q "^listening on" "$LOG"; do
    kill -0 $SERVER 2>/dev/null || { echo "satflow serve failed to start; see $LOG" >&2; exit 1; }
    sleep 0.1
done
URL="http://$LISTEN"
echo; $SATFLOW query --server "$URL" status
echo; $SATFLOW query --server "$URL" tx f4184fc596403b9d638783cf57adfe4c75c605f6356fbc91338530e9831e9e16
$SATFLOW query --server "$URL" address 12cbQLTFMXRnSzktFkuoG3eHoMeFtpTu3S --limit 5
# Where Satoshi's first payment to Hal Finney came from, satoshi by satoshi.
echo; $SATFLOW trace --server "$URL" --from f4184fc596403b9d638783cf57adfe4c75c605f6356fbc91338530e9831e9e16:0 --backward --policy fifo
# A watch on Hal Finney's address: alerts stream as new blocks touch it.
echo; $SATFLOW watch --server "$URL" add hal --address 1Q2TWHE3GMdB6BZKafqwxXtWAWgFt5Jvm3 --any
$SATFLOW watch --server "$URL" list
echo "satflow.v1 is served on $LISTEN (health and reflection included; try"
echo "  grpcurl -plaintext $LISTEN list"
echo "  $SATFLOW query --server $URL block 170"
echo "  $SATFLOW watch --server $URL tail"
echo "). Ctrl-C stops it."
wait $SERVER
