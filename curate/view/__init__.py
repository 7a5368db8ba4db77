"""`curate view`: a local web app over a catalog's DuckDB views (the same as `curate sql`),
with the pages a curator looks at (overview, clips, one clip, failures) and the review
loop that writes the catalog's ``reviews`` table (docs/view.md)."""
