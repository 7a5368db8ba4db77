-- severity: blocking
-- No video has clips in two splits (a model must never be tested on a video it trained on).
SELECT video_id, list(DISTINCT split ORDER BY split) AS splits, count(*) AS clips
FROM clips
GROUP BY video_id
HAVING count(DISTINCT split) > 1
