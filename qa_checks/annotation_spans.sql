-- severity: blocking
-- Every time span in an annotation (qa evidence, grounding events, commentary lines)
-- has start <= end and lies inside its clip (0.5 s slack, as annotate validates).
WITH spans AS (
    SELECT annotation_id, clip_id, split, task, clip_start_s, clip_end_s,
           unnest(coalesce(from_json(json_extract(output, CASE task WHEN 'qa' THEN '$.open_ended'
                                                                    WHEN 'grounding' THEN '$.events'
                                                                    WHEN 'commentary' THEN '$.lines' END),
                                     '[{"start": "DOUBLE", "end": "DOUBLE"}]'), [])
                  || coalesce(from_json(json_extract(output, CASE task WHEN 'qa' THEN '$.multiple_choice' END),
                                        '[{"start": "DOUBLE", "end": "DOUBLE"}]'), [])) AS span
    FROM annotations
    WHERE task IN ('qa', 'grounding', 'commentary')
)
SELECT annotation_id, clip_id, split, task, span."start" AS start_s, span."end" AS end_s, clip_start_s, clip_end_s
FROM spans
WHERE span."start" IS NULL OR span."end" IS NULL OR span."start" > span."end"
   OR span."start" < clip_start_s - 0.501 OR span."end" > clip_end_s + 0.501
