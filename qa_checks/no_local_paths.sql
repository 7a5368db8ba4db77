-- severity: blocking
-- No absolute local path (/home/..., /tmp/..., ~/..., C:\..., file://) in a path or
-- text column: media paths are relative to the release.
WITH texts AS (
    SELECT 'clips' AS table_name, clip_id AS id, split,
           unnest(['video_path', 'title', 'text', 'previous']) AS column_name,
           unnest([video_path, title, text, previous]) AS value
    FROM clips
    UNION ALL
    SELECT 'annotations', annotation_id, split, 'output', output FROM annotations
)
SELECT table_name, id, split, column_name, left(value, 120) AS value
FROM texts
WHERE (column_name = 'video_path' AND regexp_matches(value, '^(/|~|[A-Za-z]:[\\/]|file:)'))
   OR regexp_matches(value, '(^|[\s"''(=])(/(home|Users|root|tmp|var|mnt|srv|opt|work|private)/|~/|[A-Za-z]:\\|file://)')
