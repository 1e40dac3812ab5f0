//! The Parquet files of one table in one directory: zstd pages, row groups
//! bounded in bytes (what bounds an export's memory), a new file once one
//! reaches `MAX_FILE_BYTES`.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::tables::Table;

/// Engines split work by file and by row group: files of a few hundred MB
/// keep both their task count and their per-task memory sensible.
const MAX_FILE_BYTES: usize = 256 << 20;
/// A row group is built in memory before it is written: this bounds it.
const MAX_ROW_GROUP_BYTES: usize = 64 << 20;
const MAX_ROW_GROUP_ROWS: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub rows: u64,
    pub bytes: u64,
}

pub struct FileSet {
    dir: PathBuf,
    table: Table,
    props: WriterProperties,
    current: Option<OpenFile>,
    done: Vec<FileEntry>,
}

/// The file being written.
struct OpenFile {
    name: String,
    writer: ArrowWriter<BufWriter<File>>,
    rows: u64,
}

impl FileSet {
    /// Files of `table` in `dir` (created), each carrying `metadata`.
    pub fn create(dir: &Path, table: Table, metadata: Vec<KeyValue>) -> Result<FileSet> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(FileSet {
            dir: dir.to_owned(),
            table,
            props: properties(table, metadata),
            current: None,
            done: Vec::new(),
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut file = match self.current.take() {
            Some(f) => f,
            None => self.open_file()?,
        };
        file.writer
            .write(batch)
            .with_context(|| format!("writing {}", self.dir.join(&file.name).display()))?;
        file.rows += batch.num_rows() as u64;
        if file.writer.bytes_written() + file.writer.in_progress_size() >= MAX_FILE_BYTES {
            self.close_file(file)
        } else {
            self.current = Some(file);
            Ok(())
        }
    }

    /// Closes the last file and makes every file durable. A table without
    /// rows still gets one (empty) file: engines take the schema from it
    /// instead of failing on an empty directory.
    pub fn finish(mut self) -> Result<Vec<FileEntry>> {
        let last = match self.current.take() {
            Some(f) => Some(f),
            None if self.done.is_empty() => Some(self.open_file()?),
            None => None,
        };
        if let Some(f) = last {
            self.close_file(f)?;
        }
        Ok(self.done)
    }

    fn open_file(&self) -> Result<OpenFile> {
        let name = format!("part-{:05}.parquet", self.done.len());
        let path = self.dir.join(&name);
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let writer = ArrowWriter::try_new(
            BufWriter::new(file),
            self.table.schema(),
            Some(self.props.clone()),
        )?;
        Ok(OpenFile {
            name,
            writer,
            rows: 0,
        })
    }

    fn close_file(&mut self, f: OpenFile) -> Result<()> {
        let path = self.dir.join(&f.name);
        f.writer
            .close()
            .with_context(|| format!("finishing {}", path.display()))?;
        let file = File::open(&path).with_context(|| format!("reopening {}", path.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", path.display()))?;
        let bytes = file.metadata()?.len();
        self.done.push(FileEntry {
            name: f.name,
            rows: f.rows,
            bytes,
        });
        Ok(())
    }
}

fn properties(table: Table, metadata: Vec<KeyValue>) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_bytes(Some(MAX_ROW_GROUP_BYTES))
        .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS))
        .set_created_by(format!("satflow {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(metadata));
    if let Some(column) = sorted_by(table) {
        b = b.set_sorting_columns(Some(vec![SortingColumn {
            column_idx: column,
            descending: false,
            nulls_first: false,
        }]));
    }
    for c in table.hash_columns() {
        b = b.set_column_dictionary_enabled(ColumnPath::from(*c), false);
    }
    for c in table.bloom_columns() {
        b = b
            .set_column_bloom_filter_enabled(ColumnPath::from(*c), true)
            .set_column_bloom_filter_fpp(ColumnPath::from(*c), 0.01);
    }
    b.build()
}

/// Chain tables are written in chain order, so sorted by height (column 0).
/// Clusters come in the order of the keys their rows are stored under,
/// which is id order only where no merge into a larger cluster renamed one;
/// labels in address-key order, which is not the order of their strings.
fn sorted_by(table: Table) -> Option<i32> {
    match table {
        Table::Labels | Table::AddressClusters => None,
        _ => Some(0),
    }
}
