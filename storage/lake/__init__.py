"""The Parquet lake: dataset files and manifests, the bounded-memory writer, the ADBC export reader, the DuckDB
journal."""
