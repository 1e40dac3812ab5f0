"""Answers SQL over a satflow export with DuckDB, for tests/export.rs.

Usage: duckdb_query.py EXPORT_DIR < queries.json
queries.json is a JSON list of SQL strings; the answer, on stdout, is a JSON
list holding each query's rows (lists of values). Every table directory of
the export that holds files is a view of the same name: the chain tables read with Hive
partitioning (so `height_from` is a column), as Spark and Trino read them.
"""

import glob
import json
import os
import sys

import duckdb

CHAIN = ["blocks", "transactions", "inputs", "outputs"]
SNAPSHOT = ["address_clusters", "labels"]


def main():
    out = sys.argv[1]
    con = duckdb.connect()
    for table in CHAIN + SNAPSHOT:
        pattern = os.path.join(out, table, "*", "*.parquet") if table in CHAIN else os.path.join(out, table, "*.parquet")
        if not glob.glob(pattern):
            continue
        hive = "true" if table in CHAIN else "false"
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{pattern}', hive_partitioning = {hive})")
    answers = [con.execute(q).fetchall() for q in json.load(sys.stdin)]
    json.dump(answers, sys.stdout, default=str)


if __name__ == "__main__":
    main()
