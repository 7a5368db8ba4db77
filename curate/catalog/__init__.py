"""The catalog wing: a catalog on disk or in a bucket, and the DuckDB views over it
(docs/architecture.md, "Catalog on disk"). It imports no other wing."""
