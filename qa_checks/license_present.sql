-- severity: blocking
-- Every clip names the licence of its video (from the page, or the recipe's
-- release.source_license).
SELECT clip_id, video_id, split, source_url
FROM clips
WHERE license IS NULL OR trim(license) = ''
