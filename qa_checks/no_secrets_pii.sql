-- severity: blocking
-- No API-key shapes (sk-..., AKIA..., ghp_..., hf_..., xox.-..., AIza...), e-mail
-- addresses or phone numbers in any text column of the release.
WITH texts AS (
    SELECT 'clips' AS table_name, clip_id AS id, split,
           unnest(['title', 'channel', 'text', 'previous', 'words', 'tags']) AS column_name,
           unnest([title, channel, text, previous,
                   array_to_string([w.text FOR w IN words], ' '), array_to_string(tags, ' ')]) AS value
    FROM clips
    UNION ALL
    SELECT 'annotations', annotation_id, split, 'output', output FROM annotations
), hits AS (
    SELECT table_name, id, split, column_name,
           unnest([k FOR k IN [
               CASE WHEN regexp_matches(value, '(sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|hf_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35})') THEN 'api_key' END,
               CASE WHEN regexp_matches(value, '[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}') THEN 'email' END,
               CASE WHEN regexp_matches(value, '(\+\d{1,3}[ .-]?)?\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b|\+\d{1,3}([ .-]?\d){8,12}\b') THEN 'phone' END
           ] IF k IS NOT NULL]) AS kind
    FROM texts
    WHERE value IS NOT NULL
)
SELECT table_name, id, split, list(DISTINCT kind ORDER BY kind) AS kinds,
       list(DISTINCT column_name ORDER BY column_name) AS columns
FROM hits
GROUP BY table_name, id, split
