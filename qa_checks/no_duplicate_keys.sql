-- severity: blocking
-- Every video appears once in the crawl table (a resumed run must not duplicate rows).
SELECT video_id, count(*) AS copies
FROM crawl
GROUP BY video_id
HAVING count(*) > 1
