-- severity: blocking
-- A clip's speech rate (words / clip seconds) lies in the recipe's
-- release.gate.words_per_second range.
SELECT clip_id, split, len(words) AS n_words, end_s - start_s AS seconds,
       CASE WHEN end_s > start_s THEN round(len(words) / (end_s - start_s), 3) END AS words_per_second,
       gate.min_wps, gate.max_wps
FROM clips, gate
WHERE end_s <= start_s
   OR len(words) / (end_s - start_s) < gate.min_wps
   OR len(words) / (end_s - start_s) > gate.max_wps
