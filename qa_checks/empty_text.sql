-- severity: blocking
-- No clip without words or text, no annotation without output.
SELECT 'clips' AS table_name, clip_id AS id, split,
       CASE WHEN words IS NULL OR len(words) = 0 THEN 'no words' ELSE 'blank text' END AS problem
FROM clips
WHERE words IS NULL OR len(words) = 0 OR text IS NULL OR trim(text) = ''
UNION ALL
SELECT 'annotations', annotation_id, split, 'blank output'
FROM annotations
WHERE output IS NULL OR trim(output) IN ('', '{}', 'null')
