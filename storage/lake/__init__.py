"""The Parquet lake: the dataset files and manifests, the bounded-memory writer, the ADBC export reader and the DuckDB journal."""

