-- severity: blocking
-- The release tables have exactly the columns and types of schemas/release/<table>.json
-- (the split column aside, which comes from the file name).
WITH found AS (
    SELECT table_name, column_name, data_type
    FROM information_schema.columns
    WHERE table_name IN ('clips', 'annotations') AND column_name <> 'split'
)
SELECT coalesce(e.table_name, f.table_name) AS table_name,
       coalesce(e.column_name, f.column_name) AS column_name,
       e.data_type AS expected, f.data_type AS found
FROM expected_columns e
FULL OUTER JOIN found f ON f.table_name = e.table_name AND f.column_name = e.column_name
WHERE e.data_type IS DISTINCT FROM f.data_type
