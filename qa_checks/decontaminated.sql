-- severity: blocking
-- No clip comes from a video on the recipe's decontamination list (by video_id,
-- URL or YouTube id).
SELECT DISTINCT c.video_id, c.split, c.source_url, k.key AS listed_as
FROM clips c
JOIN decontam_keys k
  ON k.key IN (c.video_id, c.source_url,
               regexp_extract(coalesce(c.source_url, ''), '(?:[?&]v=|youtu\.be/|/shorts/|/embed/|/live/)([A-Za-z0-9_-]{11})', 1))
