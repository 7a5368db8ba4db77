-- severity: blocking
-- Word times have a start and an end, end after start, start no earlier than the
-- word before, and lie inside their clip (0.05 s slack).
WITH w AS (
    SELECT clip_id, split, start_s AS clip_start_s, end_s AS clip_end_s,
           unnest(range(len(words))) AS word, unnest(words) AS w
    FROM clips
), t AS (
    SELECT *, lag(w.start_s) OVER (PARTITION BY split, clip_id ORDER BY word) AS prev_start_s FROM w
), checked AS (
    SELECT clip_id, split, word, w.text AS text, w.start_s AS start_s, w.end_s AS end_s, clip_start_s, clip_end_s,
           CASE WHEN w.start_s IS NULL OR w.end_s IS NULL THEN 'no time'
                WHEN w.end_s < w.start_s THEN 'ends before it starts'
                WHEN w.start_s < prev_start_s THEN 'starts before the word before it'
                WHEN w.start_s < clip_start_s - 0.05 OR w.end_s > clip_end_s + 0.05 THEN 'outside its clip'
           END AS problem
    FROM t
)
SELECT * FROM checked WHERE problem IS NOT NULL
