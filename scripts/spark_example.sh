#!/usr/bin/env bash
# The README's Spark SQL example, answered by Spark in local mode over an
# export of the bundled real blocks (heights 0–4521), two early addresses
# labelled as exchanges. Installs pyspark; Spark needs Java 17 or later.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# pyspark, and the spark-sql it brings, go into the virtual environment.
export PATH="$PWD/.venv/bin:$PATH"
python3 -c 'import pyspark' 2>/dev/null ||
    python3 -m pip install --quiet --root-user-action=ignore 'pyspark==4.3.0'
cargo build --release --bin satflow
satflow=$PWD/target/release/satflow
work=target/spark-example
rm -rf "$work"
mkdir -p "$work/blocks"
cp tests/data/mainnet/blk00000_first1MiB.dat "$work/blocks/blk00000.dat"
"$satflow" index --quiet --blocks-dir "$work/blocks" --db "$work/db" >/dev/null
cat >"$work/labels.csv" <<'CSV'
address,label,category,source
12cbQLTFMXRnSzktFkuoG3eHoMeFtpTu3S,Demo exchange A,exchange,example
1Q2TWHE3GMdB6BZKafqwxXtWAWgFt5Jvm3,Demo exchange B,exchange,example
CSV
"$satflow" labels import --db "$work/db" --format csv "$work/labels.csv"
"$satflow" export --quiet --db "$work/db" --out "$work/satflow-parquet"
# The query exactly as the README shows it.
sed -n '/^```sql$/,/^```$/p' README.md | sed '1d;$d' >"$work/example.sql"
cd "$work" && spark-sql --master 'local[2]' -f example.sql 2>/dev/null
