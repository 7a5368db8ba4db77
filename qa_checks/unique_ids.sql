-- severity: blocking
-- Each clip_id and annotation_id appears once in its split (a video in two splits
-- is the split check's to report).
SELECT 'clips' AS table_name, clip_id AS id, split, count(*) AS copies
FROM clips GROUP BY clip_id, split HAVING count(*) > 1 OR clip_id IS NULL
UNION ALL
SELECT 'annotations', annotation_id, split, count(*)
FROM annotations GROUP BY annotation_id, split HAVING count(*) > 1 OR annotation_id IS NULL
